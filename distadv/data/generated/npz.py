"""DM-AT's generated sets: an ``.npz`` with ``image`` (uint8, N x H x W x C) and ``label``.

``np.load`` of an ``.npz`` member reads the whole array into memory (61 GB for 20M images),
so the import streams it instead: each member is a ``.npy`` inside the zip (stored or
deflated), whose header ``numpy.lib.format`` reads; rows follow in chunks.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np

from ...errors import DataError
from ...files import file_sha256
from .store import SetWriter

KEYS = ("image", "label")  # DM-AT's member names


def _bad(path: Path, what: str) -> None:
    raise DataError(f"{path}: {what}; a DM-AT set is an .npz with 'image' (uint8, N x H x W x C)"
                    " and 'label' (N integers)")


def _member(zf: zipfile.ZipFile, key: str, path: Path):
    names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
    if key not in names:
        _bad(path, f"no '{key}' array (it has {', '.join(sorted(names)) or 'none'})")
    f = zf.open(names[key])
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(f)
    if fortran:
        _bad(path, f"'{key}' is stored in Fortran order")
    return f, shape, dtype


def _rows(f, shape, dtype, chunk: int) -> Iterator[np.ndarray]:
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    left = shape[0]
    while left:
        n = min(chunk, left)
        buf = f.read(n * row)
        if len(buf) != n * row:
            raise EOFError
        yield np.frombuffer(buf, dtype=dtype).reshape(n, *shape[1:])
        left -= n


def read_npz(path: Path, num_classes: int, chunk: int = 1 << 16) -> Tuple[Dict, Iterator]:
    """(header, chunks) of a DM-AT ``.npz``: header {'count', 'shape' (H, W, C)} after the
    checks of shape, dtype and length; chunks yields (images, labels) of ``chunk`` rows, each
    label checked against ``num_classes``. DataError (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; give the .npz of a generated set (DM-AT's format)")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        _bad(path, "not an .npz (zip) archive")
    (fi, si, di), (fl, sl, dl) = (_member(zf, k, path) for k in KEYS)
    if len(si) != 4 or si[3] not in (1, 3) or di != np.uint8:
        _bad(path, f"'image' is {di} {tuple(si)}, not uint8 N x H x W x C (C = 1 or 3)")
    if len(sl) != 1 or dl.kind not in "iu":
        _bad(path, f"'label' is {dl} {tuple(sl)}, not N integers")
    if sl[0] != si[0]:
        _bad(path, f"{si[0]} images but {sl[0]} labels")

    def chunks():
        done = 0
        try:
            for x, y in zip(_rows(fi, si, di, chunk), _rows(fl, sl, dl, chunk)):
                if y.min() < 0 or y.max() >= num_classes:
                    _bad(path, f"labels outside 0..{num_classes - 1} (found {int(y.min())}.."
                         f"{int(y.max())} near row {done}); pass --num-classes if the set has more")
                done += len(y)
                yield x, y
        except (EOFError, zipfile.BadZipFile, OSError) as exc:
            _bad(path, f"truncated or damaged after row {done} ({type(exc).__name__})")
    return {"count": int(si[0]), "shape": tuple(int(s) for s in si[1:])}, chunks()


def import_npz(path: Path, out: Path, num_classes: int = 10,
               shard_size: int = 1_000_000) -> Dict:
    """Convert a DM-AT ``.npz`` into a set folder at ``out`` (``store``'s layout); returns its
    manifest. Memory: one chunk of rows at a time, whatever the set's size. Nothing is left at
    ``out`` if anything fails."""
    path = Path(path)
    head, chunks = read_npz(path, num_classes)
    source = {"path": str(path.resolve()), "bytes": path.stat().st_size,
              "sha256": file_sha256(path), "format": "DM-AT npz (image, label)"}
    return SetWriter(out, head["count"], head["shape"], num_classes, shard_size,
                     source).write_all(chunks)
