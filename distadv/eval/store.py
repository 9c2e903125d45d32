"""Result files of an evaluation: ``<run>/eval/<suite>.json`` and, while it runs,
``<suite>.partial.json`` (finished attacks, rewritten atomically after each one).

A rerun with the same fingerprint (checkpoint hash, split, suite settings, seed) skips the
attacks already done; other settings never overwrite existing results.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from ..engine.checkpoint import write_json
from ..errors import ConfigError


class EvalStore:
    """The final and partial result files of one evaluation."""

    def __init__(self, out: Path, fingerprint: Dict):
        self.out = Path(out)
        self.partial = self.out.with_suffix(".partial.json")
        self.fingerprint = json.loads(json.dumps(fingerprint))

    def finished(self) -> Optional[Dict]:
        """The final results if they exist for this fingerprint; refuses other settings."""
        if not self.out.is_file():
            return None
        old = json.loads(self.out.read_text())
        if old.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.out} holds results of another evaluation (other checkpoint, "
                              "split or suite settings); nothing was changed. Pass out=PATH to "
                              "write elsewhere, or remove it")
        return old

    def done(self) -> Dict[str, Dict]:
        """Attacks finished by an interrupted run of the same evaluation."""
        if not self.partial.is_file():
            return {}
        old = json.loads(self.partial.read_text())
        if old.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.partial} is an interrupted evaluation with other settings; "
                              "rerun it with those settings to finish it, or remove the file")
        return old["attacks"]

    def save_partial(self, attacks: Dict[str, Dict]) -> None:
        """Record the finished attacks (rank 0)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.partial, {"fingerprint": self.fingerprint, "attacks": attacks})

    def save(self, results: Dict) -> None:
        """Write the final results and drop the partial file (rank 0)."""
        write_json(self.out, {**results, "fingerprint": self.fingerprint})
        if self.partial.exists():
            self.partial.unlink()
