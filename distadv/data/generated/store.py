"""A generated image set on disk: a folder of ``.npy`` shards and a manifest.

    DIR/manifest.json        count, image shape (H, W, C), label histogram, the source's
                             sha256, and per shard its files, count and sha256s
    DIR/images-00000.npy     uint8 (n, H, W, C): DM-AT's layout, channels last
    DIR/labels-00000.npy     uint8 (n,) (int32 past 256 classes)

Plain numpy ``.npy`` files (``numpy.lib.format`` writes their headers), so any tool reads
them; shards keep each file at a size file systems and copies handle (``--shard-size``). The
writer fills a temporary folder and renames it into place after the manifest is written: a
killed import leaves no set that looks complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ...errors import DataError
from ...files import file_sha256
from .mapped import MappedArray

FORMAT = "distadv-generated/1"
MANIFEST = "manifest.json"
IMPORT_HINT = "`python tools/import_generated.py FILE.npz --out DIR`"


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest label type: uint8 up to 256 classes (1 byte per image), else int32."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.int32)


class _NpyWriter:
    """One ``.npy`` written front to back with plain writes (no memory map: a mapped output
    would hold every written page in this process's RSS), hashed as it goes."""

    def __init__(self, path: Path, dtype, shape):
        self.f, self.sha, self.dtype = open(path, "wb"), hashlib.sha256(), np.dtype(dtype)
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {  # magic, length, dict, padding
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": tuple(int(s) for s in shape)})
        self._put(head.getvalue())

    def _put(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` (cast to the file's dtype, C order)."""
        self._put(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def close(self) -> str:
        """Flush to disk; returns the file's sha256."""
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return self.sha.hexdigest()


class SetWriter:
    """Write ``count`` images of ``shape`` (H, W, C) in order, any chunk size at a time, into
    shards of ``shard_size``; ``close()`` writes the manifest and moves the folder into place.
    ``source`` (e.g. the imported file's path and sha256) is recorded in the manifest."""

    def __init__(self, out: Path, count: int, shape: Sequence[int], num_classes: int,
                 shard_size: int, source: Dict):
        self.out = Path(out)
        if self.out.exists():
            raise DataError(f"{self.out} exists; choose another --out (a set is never "
                            "overwritten) or delete it first")
        if count < 1 or shard_size < 1:
            raise DataError(f"nothing to write: count={count}, shard size={shard_size}")
        self.tmp = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.count, self.shape, self.num_classes = count, tuple(int(s) for s in shape), num_classes
        self.shard_size, self.source = shard_size, source
        self.hist = np.zeros(num_classes, dtype=np.int64)
        self.shards: List[Dict] = []
        self.written, self._left, self._files = 0, 0, {}

    def _open_shard(self) -> None:
        k = len(self.shards)
        n = min(self.shard_size, self.count - self.written)
        self.shards.append({"images": f"images-{k:05d}.npy", "labels": f"labels-{k:05d}.npy",
                            "count": n})
        self._files = {key: _NpyWriter(self.tmp / self.shards[-1][key], dtype, shape)
                       for key, dtype, shape in (("images", np.uint8, (n, *self.shape)),
                                                 ("labels", label_dtype(self.num_classes), (n,)))}
        self._left = n

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append ``images`` (uint8, (n, H, W, C)) and their ``labels`` (0 <= y < classes)."""
        labels = np.asarray(labels)
        if self.written + len(images) > self.count:
            raise DataError(f"more than the {self.count} images announced")
        self.hist += np.bincount(labels.astype(np.int64), minlength=self.num_classes)
        start = 0
        while start < len(images):
            if not self._left:
                self._open_shard()
            take = min(len(images) - start, self._left)
            self._files["images"].write(images[start:start + take])
            self._files["labels"].write(labels[start:start + take])
            start, self.written, self._left = start + take, self.written + take, self._left - take
            if not self._left:   # the shard is complete: close it and record its sha256s
                for key, f in self._files.items():
                    self.shards[-1][f"{key}_sha256"] = f.close()

    def close(self) -> Dict:
        """Write the manifest (last), then rename the folder to ``out``; returns the manifest."""
        if self.written != self.count:
            raise DataError(f"{self.written} images written, {self.count} announced")
        manifest = {"format": FORMAT, "count": self.count, "shape": list(self.shape),
                    "dtype": "uint8", "label_dtype": label_dtype(self.num_classes).name,
                    "num_classes": self.num_classes, "label_histogram": self.hist.tolist(),
                    "source": self.source, "shards": self.shards}
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(self.tmp, self.out)
        return manifest

    def write_all(self, chunks) -> Dict:
        """``add`` every (images, labels) of ``chunks``, then ``close``; on any failure the
        temporary folder is removed (nothing is left behind) and the error propagates."""
        try:
            for x, y in chunks:
                self.add(x, y)
            return self.close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the temporary folder (a failed import leaves nothing behind)."""
        for f in self._files.values():
            f.f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class GeneratedSet:
    """A verified generated set, memory-mapped read-only (``open_set``)."""

    def __init__(self, path: Path, manifest: Dict, images: List[MappedArray],
                 labels: List[MappedArray]):
        self.path, self.manifest, self.images, self.labels = path, manifest, images, labels
        self.count = manifest["count"]
        self.offsets = np.cumsum([0] + [len(a.array) for a in labels])
        self.identity = {"path": str(path), "count": self.count,
                         "manifest_sha256": file_sha256(path / MANIFEST)}

    def gather(self, idx: np.ndarray):
        """Images (uint8, (n, H, W, C)) and labels (int64) of the set's rows ``idx``, copied
        out of the maps in ``idx``'s order (``MappedArray.take``: nothing stays mapped)."""
        idx = np.asarray(idx, dtype=np.int64)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        x = np.empty((len(idx), *self.manifest["shape"]), dtype=np.uint8)
        y = np.empty(len(idx), dtype=np.int64)
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            rows = idx[sel] - self.offsets[s]
            xs = np.empty((len(sel), *x.shape[1:]), np.uint8)
            self.images[s].take(rows, xs)
            x[sel] = xs
            y[sel] = self.labels[s].array[rows]   # 1 byte per image: the shard's map is small
            self.labels[s].release()
        return x, y


def _fail(path: Path, what: str) -> None:
    raise DataError(f"data.extra={path}: {what}")


def open_set(path, shape: Sequence[int], num_classes: int) -> GeneratedSet:
    """Open and verify the set at ``path`` for images of ``shape`` (H, W, C) and labels below
    ``num_classes``: the manifest against every shard's header and size, and the labels against
    the manifest's histogram. Cost: the headers, and one pass over the labels (1 byte per
    image: 1 MB per million); the images are checked by size, not read (``--verify`` of the
    import tool hashes them). Any problem: DataError, one line naming the file and the fix."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        _fail(path, f"is a DM-AT .npz archive; convert it once with `python "
              f"tools/import_generated.py {path} --out DIR`, then pass data.extra=DIR")
    if not path.exists():
        _fail(path, f"not found; write a set there with {IMPORT_HINT} (or "
              "tools/generate_set.py for a stand-in)")
    if not (path / MANIFEST).is_file():
        _fail(path, f"is not a generated set (no {MANIFEST}); write it with {IMPORT_HINT}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        shards, count = manifest["shards"], int(manifest["count"])
        hist = np.asarray(manifest["label_histogram"], dtype=np.int64)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, not {FORMAT!r}")
    except (ValueError, KeyError, TypeError) as exc:
        _fail(path, f"{MANIFEST} is damaged ({str(exc)[:80]}); import the set again with "
              f"{IMPORT_HINT}")
    want = [int(s) for s in shape]
    if list(manifest["shape"]) != want:
        _fail(path, f"images are {'x'.join(map(str, manifest['shape']))} (HxWxC) but this data "
              f"set's are {'x'.join(map(str, want))}; generate a set of the data set's shape")
    if len(hist) > num_classes and hist[num_classes:].any():
        _fail(path, f"has labels up to {int(np.nonzero(hist)[0].max())} but the data set has "
              f"{num_classes} classes (0..{num_classes - 1})")
    images, labels = [], []
    for s in shards:
        img, lab = MappedArray(path / s["images"]), MappedArray(path / s["labels"])
        if img.shape != (s["count"], *want) or img.dtype != np.uint8:
            _fail(path, f"{s['images']} holds {img.dtype} {img.shape}, the manifest says uint8 "
                  f"{(s['count'], *want)}; import the set again with {IMPORT_HINT}")
        if lab.shape != (s["count"],) or lab.dtype.kind not in "iu":
            _fail(path, f"{s['labels']} holds {lab.dtype} {lab.shape}, the manifest says "
                  f"{s['count']} integer labels; import the set again with {IMPORT_HINT}")
        images.append(img)
        labels.append(lab)
    if sum(s["count"] for s in shards) != count:
        _fail(path, f"the shards hold {sum(s['count'] for s in shards)} images, the manifest "
              f"says {count}; import the set again with {IMPORT_HINT}")
    seen = np.zeros(max(num_classes, len(hist)), dtype=np.int64)
    for lab in labels:
        for start in range(0, len(lab.array), 1 << 24):   # 16 MB at a time, released
            chunk = lab.array[start:start + (1 << 24)].astype(np.int64)
            if len(chunk) and (chunk.min() < 0 or chunk.max() >= num_classes):
                _fail(path, f"{lab.path.name} has labels outside 0..{num_classes - 1} (found "
                      f"{int(chunk.min())}..{int(chunk.max())})")
            seen += np.bincount(chunk, minlength=len(seen))
        lab.release()
    if not np.array_equal(seen[:len(hist)], hist) or seen[len(hist):].any():
        _fail(path, f"the labels do not match {MANIFEST}'s histogram (files changed after the "
              f"import?); import the set again with {IMPORT_HINT}")
    return GeneratedSet(path, manifest, images, labels)


def verify_hashes(path: Path) -> Optional[str]:
    """None if every shard's sha256 matches the manifest, else the first mismatching file
    (``tools/import_generated.py --verify``; reads the whole set once)."""
    manifest = json.loads((Path(path) / MANIFEST).read_text())
    for s in manifest["shards"]:
        for key in ("images", "labels"):
            if file_sha256(Path(path) / s[key]) != s[f"{key}_sha256"]:
                return s[key]
    return None
