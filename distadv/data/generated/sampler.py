"""Which real and generated images each training batch holds (index math only, no I/O).

DM-AT's mix (wzekai99/DM-Improves-AT, ``SemiSupervisedSampler``): a global batch of ``B``
holds ``int(B * fraction)`` generated images and ``B - int(B * fraction)`` real ones, every
batch (DM-AT pads a short last real chunk with more generated images; here the real stream
runs on into the next permutation instead, so the fraction is exact). An epoch is
``ceil(epoch_samples / B)`` batches (DM-AT: 50,000 samples, whatever the set's size).

- Real part: the epoch's permutation of the training split (seeded by (seed, epoch)); an
  epoch that needs more real images than the split holds continues with the next permutation.
- Generated part, per source (``shares`` split the generated part, largest remainder):
  ``replacement=True`` draws uniformly with replacement, seeded by (seed, epoch, source)
  (DM-AT); ``False`` walks a seeded permutation of the whole set, continued across epochs and
  passes (Bartoldson et al.): the cursor is the sampler's state, saved in every checkpoint.
- Ranks: the global batch's B positions are dealt round-robin (rank k takes k, k+W, ...), so
  ranks draw disjoint positions of one global draw and the union of the ranks' k-th batches is
  the k-th batch of a 1-process run with the same global batch.

Cost: per epoch, a few integer tensors of ``steps * B`` entries; without replacement one
permutation of each source per pass (int32: 4 bytes per generated image, 4 MB per million).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from ...errors import DataError

REAL = -1  # the source id of real images


@dataclass(frozen=True)
class MixSpec:
    """The mix: global ``batch``, generated ``fraction``, per-source ``shares`` (any positive
    weights), sampling with ``replacement``, ``epoch_samples`` per epoch, ``seed``."""

    batch: int
    fraction: float
    shares: Sequence[float]
    replacement: bool
    epoch_samples: int
    seed: int


def _gen(*parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + p + 1) % 2**63
    return torch.Generator().manual_seed(seed)


def split_counts(total: int, shares: Sequence[float]) -> List[int]:
    """``total`` split by ``shares`` with the largest-remainder method (sums to ``total``;
    ties go to the earlier source)."""
    weights = [s / sum(shares) for s in shares]
    counts = [math.floor(total * w) for w in weights]
    order = sorted(range(len(shares)), key=lambda j: (-(total * weights[j] - counts[j]), j))
    for j in order[:total - sum(counts)]:
        counts[j] += 1
    return counts


class MixSampler:
    """Global draws of one epoch: ``epoch(e)`` -> (source ids, row indices), each of shape
    (steps, B); ``REAL`` marks real rows; ``max_steps`` caps the steps of an epoch.
    ``state_dict``/``load_state_dict`` carry the cursors of the without-replacement walk (and
    check that the sources are the ones the run began with)."""

    def __init__(self, n_real: int, sources: Sequence[Dict], spec: MixSpec,
                 max_steps: Optional[int] = None):
        self.n_real, self.sources, self.spec = n_real, list(sources), spec
        self.generated = int(spec.batch * spec.fraction)       # DM-AT: int(B * fraction)
        self.real = spec.batch - self.generated
        self.per_source = split_counts(self.generated, spec.shares)
        self.steps = math.ceil(spec.epoch_samples / spec.batch)    # DM-AT's rounding
        if max_steps is not None:                                  # runtime.max_steps_per_epoch
            self.steps = min(self.steps, max_steps)
        self.start_epoch, self.start_cursor = 0, [0] * len(self.sources)
        self._perms: Dict = {}

    def cursors(self, epoch: int) -> List[int]:
        """Positions in each source's permutation stream at the start of ``epoch``."""
        used = (epoch - self.start_epoch) * self.steps
        return [c + used * g for c, g in zip(self.start_cursor, self.per_source)]

    def _perm(self, j: int, p: int) -> torch.Tensor:
        key = (j, p)
        if key not in self._perms:
            n = self.sources[j]["count"]
            dtype = torch.int32 if n < 2**31 else torch.int64
            # keep this source's later passes only: memory of one or two permutations
            self._perms = {k: v for k, v in self._perms.items() if k[0] != j or k[1] > p}
            self._perms[key] = torch.randperm(n, generator=_gen(self.spec.seed, 1, j, p), dtype=dtype)
        return self._perms[key]

    def _walk(self, j: int, start: int, n: int) -> torch.Tensor:
        size, out = self.sources[j]["count"], []
        while n > 0:
            p, off = divmod(start, size)
            take = min(n, size - off)
            out.append(self._perm(j, p)[off:off + take].long())
            start, n = start + take, n - take
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def _real(self, epoch: int) -> torch.Tensor:
        need = self.steps * self.real
        perms = [torch.randperm(self.n_real, generator=_gen(self.spec.seed, 0, epoch, k))
                 for k in range(math.ceil(need / self.n_real))]
        return torch.cat(perms)[:need] if perms else torch.zeros(0, dtype=torch.long)

    def epoch(self, epoch: int):
        """(source, index), both (steps, B) int64: each global batch is its real rows, then
        each source's rows."""
        s = self.steps
        src = [torch.full((s, self.real), REAL, dtype=torch.long)]
        idx = [self._real(epoch).view(s, self.real)]
        for j, (g, c) in enumerate(zip(self.per_source, self.cursors(epoch))):
            if self.spec.replacement:
                rows = torch.randint(self.sources[j]["count"], (s * g,),
                                     generator=_gen(self.spec.seed, 2, epoch, j))
            else:
                rows = self._walk(j, c, s * g)
            src.append(torch.full((s, g), j, dtype=torch.long))
            idx.append(rows.view(s, g))
        return torch.cat(src, dim=1), torch.cat(idx, dim=1)

    def state_dict(self, next_epoch: int) -> Dict:
        """The state at the start of ``next_epoch``: the sources' identities and cursors."""
        return {"epoch": next_epoch, "replacement": self.spec.replacement,
                "sources": [{**src, "cursor": c}
                            for src, c in zip(self.sources, self.cursors(next_epoch))]}

    def load_state_dict(self, state: Optional[Dict]) -> None:
        """Continue from a checkpoint's state; DataError if its sources are not these."""
        if not state:
            return
        # The manifests identify the sets; their paths may change (a copy on a node's disk).
        ident = lambda s: (s["count"], s["manifest_sha256"])  # noqa: E731
        saved = state["sources"]
        if [ident(s) for s in saved] != [ident(s) for s in self.sources]:
            raise DataError("data.extra changed since this run began: it started with "
                            f"{[s['path'] + ' (' + str(s['count']) + ' images)' for s in saved]}"
                            f", now {[s['path'] + ' (' + str(s['count']) + ' images)' for s in self.sources]}"
                            " (or a manifest differs); restore those sets or start a new run "
                            "with another name=")
        self.start_epoch = state["epoch"]
        self.start_cursor = [s["cursor"] for s in state["sources"]]
