"""The files of a forensics study, each written atomically (temporary file, fsync, rename:
``engine/checkpoint.py``) with the fingerprint of what made it in its safetensors metadata.

    <out>/chunks/<split>-<name>.safetensors   images of one (split, attack), index order
    <out>/detector.safetensors, baseline.safetensors   the trained detectors
    <out>/report.json, confusion.png, roc.png

A rerun loads every file whose fingerprint matches and recomputes only what is missing; a
file made with other settings (another checkpoint, other attacks or budgets) is refused with
the keys that differ, never mixed in. The detectors and the adaptive attacks, cheap and
downstream of the labelled set, are made again instead when only their own settings changed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import torch
from safetensors import safe_open

from ..engine import checkpoint as ck
from ..errors import ConfigError

_KEY = "distadv_forensics"          # safetensors metadata: the fingerprint as JSON


def _differences(old: Dict, new: Dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(keys) or "(unreadable)"


class Store:
    """One study's folder. ``fingerprint``: what every file of the study shares (checkpoint
    sha256, attacks, budgets, examples, seed); each file adds its own part."""

    def __init__(self, folder: Path, fingerprint: Dict):
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint))   # plain, as it is read back

    def chunk_path(self, split: str, name: str) -> Path:
        """Where the images of ``name`` on the detector's ``split`` live."""
        return self.folder / "chunks" / f"{split}-{name}.safetensors"

    def load(self, path: Path, extra: Optional[Dict] = None,
             recompute: bool = False) -> Optional[Dict[str, torch.Tensor]]:
        """The tensors of ``path`` if it exists (sha256-checked), else None. A file of another
        study (shared fingerprint differs) is refused; one whose own part (``extra``) differs
        is refused too, or, with ``recompute`` (a detector whose settings changed), None:
        the caller makes it again and overwrites it."""
        if not path.is_file():
            return None
        want = {**self.fingerprint, **json.loads(json.dumps(extra or {}))}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            have = json.loads((f.metadata() or {}).get(_KEY, "{}"))
        shared = {k: have.get(k) for k in self.fingerprint}
        if have != want and (shared != self.fingerprint or not recompute):
            raise ConfigError(f"{path} was made with other settings (differ: "
                              f"{_differences(have, want)}); nothing was changed. Pass out=DIR "
                              f"to write elsewhere, or remove {self.folder} to start over")
        return ck.load_weights(path) if have == want else None

    def save(self, path: Path, tensors: Dict[str, torch.Tensor], extra: Optional[Dict] = None) -> None:
        """Write ``tensors`` atomically with the fingerprint (rank 0)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {_KEY: json.dumps({**self.fingerprint, **(extra or {})}, sort_keys=True)}
        ck.save_weights(path, tensors, metadata=meta)
