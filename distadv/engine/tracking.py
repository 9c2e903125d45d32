"""TensorBoard logging, rank 0 only: scalars, an adversarial image grid and HParams (one of
the run's tracking backends, ``engine/trackers.py``; the default one)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch


class TensorBoard:
    """Writes ``<run>/tb`` on the main process; a no-op elsewhere.

    On resume, ``purge_step`` drops events written after the checkpoint's epoch, so the
    curves show each epoch once.
    """

    def __init__(self, tb_dir: Path, enabled: bool, purge_step: Optional[int] = None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # cost: ~1 s import, rank 0 only
            self.writer = SummaryWriter(str(tb_dir), purge_step=purge_step)

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        """Log ``{tag: value}`` at ``step`` (the epoch)."""
        if self.writer:
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, step)

    def text(self, tag: str, step: int, line: str) -> None:
        """A line of text under ``tag`` at ``step`` (TensorBoard's Text tab)."""
        if self.writer:
            self.writer.add_text(tag, line, step)

    def adversarial_grid(self, step: int, images: Optional[dict]) -> None:
        """Rows: clean images, adversarial images, perturbation (scaled to [0, 1] by eps)."""
        if not (self.writer and images):
            return
        from torchvision.utils import make_grid

        clean, adv = images["clean"], images["adv"]
        pert = ((adv - clean) / (2 * images["eps"]) + 0.5).clamp(0, 1)
        grid = make_grid(torch.cat([clean, adv, pert]), nrow=len(clean), padding=2)
        self.writer.add_image(f"val/adversarial_{images['attack']}", grid, step)

    def hparams(self, hparams: Dict[str, object], metrics: Dict[str, float]) -> None:
        """Record the run's hyperparameters and final metrics for the HParams dashboard,
        in the run's own event folder (not a timestamped sub-run)."""
        if not self.writer:
            return
        from torch.utils.tensorboard.summary import hparams as hp_summary

        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        exp, ssi, sei = hp_summary(clean, metrics)
        # SummaryWriter.add_hparams would write into a new timestamped sub-run; writing the
        # three summaries to our own file writer keeps hparams and curves in one run.
        fw = self.writer._get_file_writer()
        for s in (exp, ssi, sei):
            fw.add_summary(s)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer:
            self.writer.close()
