"""Checkpoint files: atomic writes, self-verifying states, ``weights_only`` loads, safetensors.

Every file is written the same way (``atomic_write``): bytes to a temporary file in the same
folder, fsync, rename over the target, fsync the folder. A crash at any point leaves the old
file or the new one. Training states carry a footer (magic, sha256, length): torch's own zip
reader does not check CRCs (a flipped byte in a tensor loads silently, measured), so a
truncated or corrupt state is detected here before torch sees it. ``latest`` is rotated to
``previous`` only once its successor is complete on disk, so one good state always exists.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from ..errors import CheckpointError, DiskFullError
from .faults import crash_point

_MAGIC = b"DISTADV-STATE-1\0"         # 16 bytes
_FOOTER = struct.Struct("<16s32sQ")   # magic, sha256 of the payload, payload length
_WEIGHTS_DIGEST = "distadv_sha256"    # safetensors metadata key: sha256 of the tensor bytes
TMP_MARK = ".tmp-"                    # temporary files: .<name>.tmp-<pid>


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """Where a writer of ``path`` writes first: ``.<name>.tmp-<pid>`` in the same folder (a
    rename within one file system is atomic), the pattern ``remove_stale_temporaries`` sweeps."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def commit_file(tmp: Path, path: Path) -> None:
    """Make a finished temporary file durable and put it in place: fsync it, rename it over
    ``path``, fsync the folder (without that, a power loss can undo the rename or leave the
    name pointing at blocks that were never written). For files written by another library
    (FFCV's .beton writer); ``atomic_write`` does the same for bytes in memory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def atomic_write(path: Path, data: bytes, keep_previous: Optional[Path] = None) -> None:
    """Write ``data`` to ``path`` through a temporary file: write, fsync, rename, fsync folder.

    ``keep_previous``: move the current ``path`` there first, but only after the new bytes are
    safely on disk (a crash between the two renames leaves ``keep_previous`` and no ``path``;
    readers fall back to it). A full disk raises DiskFullError with ``path`` untouched.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        crash_point("checkpoint.written")
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
            crash_point("checkpoint.rotated")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                f"no space left on the device writing {path} ({len(data)} bytes, {free} free); "
                f"{'the previous file is intact' if path.exists() else 'nothing was replaced'}. "
                "Free space (or choose another runs_root=), then rerun the same command to "
                "resume") from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: Path, name: str = "*") -> List[Path]:
    """Delete temporary files left by a killed writer (``.<name>.tmp-<pid>``); returns them.
    ``name``: only the temporaries of that file (a folder other writers share). Call only where
    no other process is writing into ``folder`` (or into ``name``)."""
    stale = [p for p in Path(folder).glob(f".{name}{TMP_MARK}*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_state(path: Path, state: Dict[str, Any], keep_previous: Optional[Path] = None) -> None:
    """Atomically ``torch.save`` a training state (tensors, numbers, strings, lists, dicts)
    with a sha256 footer. Cost: the serialised state is held in memory once (rank 0)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    footer = _FOOTER.pack(_MAGIC, hashlib.sha256(payload).digest(), len(payload))
    atomic_write(path, payload + footer, keep_previous)


def _verify_state(path: Path) -> None:
    """Check the footer and the payload's sha256; CheckpointError(corrupt=True) if not intact."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < _FOOTER.size:
            raise CheckpointError(f"{path} is truncated ({size} bytes)", corrupt=True)
        f.seek(size - _FOOTER.size)
        magic, digest, length = _FOOTER.unpack(f.read(_FOOTER.size))
        if magic != _MAGIC or length != size - _FOOTER.size:
            raise CheckpointError(f"{path} is truncated or was not written by distadv (no "
                                  "intact footer)", corrupt=True)
        f.seek(0)
        h, left = hashlib.sha256(), length
        while left:
            chunk = f.read(min(1 << 22, left))   # 4 MiB at a time: no second copy in memory
            if not chunk:                          # the file shrank while being read
                raise CheckpointError(f"{path} is truncated", corrupt=True)
            h.update(chunk)
            left -= len(chunk)
    if h.digest() != digest:
        raise CheckpointError(f"{path} is corrupt (sha256 mismatch)", corrupt=True)


def load_state(path: Path) -> Dict[str, Any]:
    """Verify, then load a training state with ``weights_only=True``: no code from the file is
    ever run. A verified file whose pickle asks for anything but tensors and plain containers
    is refused (CheckpointError, not corrupt: someone wrote it on purpose)."""
    path = Path(path)
    _verify_state(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # ignores our footer
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(f"refused to load {path}: it holds pickled objects other than "
                              f"tensors ({first}); distadv never runs code from a checkpoint")
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} passed its checksum but torch cannot read it "
                              f"({str(exc).splitlines()[0][:160]})", corrupt=True) from exc


def load_resume_state(latest: Path, previous: Path) -> Tuple[Dict[str, Any], Path, List[str]]:
    """The newest intact state of a run: ``latest``, else ``previous``.

    Returns (state, the file it came from, one line per unusable file). Raises CheckpointError
    if neither is usable, or at once if a file is refused (a hostile pickle is not skipped).
    """
    problems: List[str] = []
    for path in (latest, previous):
        if not path.is_file():
            continue
        try:
            return load_state(path), path, problems
        except CheckpointError as exc:
            if not exc.corrupt:
                raise
            problems.append(str(exc))
    raise CheckpointError(f"no intact checkpoint to resume from: {'; '.join(problems) or 'none'}"
                          f". Start over under a new name= (or move {latest.parent.parent} away)")


def _tensor_digest(tensors: Dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(path: Path, state_dict: Dict[str, torch.Tensor],
                 metadata: Optional[Dict[str, str]] = None) -> None:
    """Atomically write model weights as safetensors (plain tensors, no pickle), with the
    sha256 of the tensors in the metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {**(metadata or {}), _WEIGHTS_DIGEST: _tensor_digest(tensors)}
    atomic_write(path, st_save(tensors, metadata=meta))


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    """Read safetensors weights onto the CPU; files written by distadv are checked against
    their sha256. Anything that is not a valid safetensors file is refused."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({str(exc)[:120]}); "
                              "weights are only read from safetensors", corrupt=True) from exc
    if _WEIGHTS_DIGEST in meta and meta[_WEIGHTS_DIGEST] != _tensor_digest(tensors):
        raise CheckpointError(f"{path} is corrupt (sha256 of its tensors does not match)",
                              corrupt=True)
    return tensors


def check_keys(model: torch.nn.Module, state: Dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a state dict of another architecture with the missing and unexpected keys
    (torch's own message is many lines; shapes are checked by ``load_state_dict``)."""
    own = model.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    shapes = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        show = lambda ks: ", ".join(sorted(ks)[:5]) + (f" ... ({len(ks)})" if len(ks) > 5 else "")  # noqa: E731
        arch = type(getattr(model, "net", model)).__name__   # inside the Normalized wrapper
        raise CheckpointError(f"{path} does not fit the run's model ({arch}): "
                              f"missing keys [{show(missing)}], unexpected keys "
                              f"[{show(unexpected)}], other shapes [{show(shapes)}]")
