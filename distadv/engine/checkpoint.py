"""Checkpoint files: atomic writes, ``weights_only`` loads, safetensors for the best weights."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import load_file, save_file


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Write ``path`` via a temporary file in the same folder: write, fsync, rename.

    A reader (or a crash at any point) sees the old file or the new one, never half of one.
    ``write`` receives the temporary path.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def save_state(path: Path, state: Dict[str, Any]) -> None:
    """Atomically ``torch.save`` a training state (tensors, numbers, strings, lists, dicts)."""
    atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: Path) -> Dict[str, Any]:
    """Load a training state with ``weights_only=True``: no code from the file is ever run."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(path: Path, state_dict: Dict[str, torch.Tensor],
                 metadata: Optional[Dict[str, str]] = None) -> None:
    """Atomically write model weights as safetensors (plain tensors, no pickle)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata or {}))


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    """Read safetensors weights onto the CPU."""
    return load_file(str(path), device="cpu")
