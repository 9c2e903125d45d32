"""Best-robust early stopping (Rice et al. 2020): track the best validation robust accuracy."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class EarlyStopper:
    """Remembers the best value of one validation metric and counts epochs without progress.

    ``patience=0`` never stops (the best checkpoint is still kept). The state is plain numbers,
    saved in the ``latest`` checkpoint so that a resumed run decides exactly as before.
    """

    patience: int = 10
    min_delta: float = 0.0
    best: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    forced: bool = False        # a method ended the run (the guard's action=stop)

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; True if it is a new best."""
        if value > self.best + self.min_delta or self.best_epoch < 0:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def stop(self) -> None:
        """End the run after this epoch, whatever the patience (the best checkpoint stays)."""
        self.forced = True

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row brought no improvement, or after ``stop``."""
        return self.forced or (self.patience > 0 and self.bad_epochs >= self.patience)

    def state_dict(self) -> dict:
        """Plain-number state for checkpoints."""
        out = asdict(self)
        if not self.forced:       # absent unless set: checkpoints of other runs stay as they were
            out.pop("forced")
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore from ``state_dict()``."""
        for k, v in state.items():
            setattr(self, k, v)
