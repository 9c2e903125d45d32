"""The labelled set: clean images and the adversarial images of every attack, made against the
run's own model, on two disjoint sets of source images (``source.DETECTOR_SPLITS``).

Generation is sharded like distadv/eval/runner.py: each rank attacks its shard of the split,
the results are gathered once per (split, attack) and de-duplicated by example index; rank 0
writes the chunk (atomically) before the next one starts, so an interrupted study resumes at
the first missing chunk.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set

import torch

from ..attacks import attack_mode
from ..engine.faults import crash_point, main_writes
from ..eval.runner import _first_occurrence
from ..eval.suite_run import attack_seed
from .store import Store

CLEAN = "clean"


def attack_shard(model, loader, attack: Optional[Callable], accelerator, *, num_classes: int,
                 transform: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """Attack this rank's shard (``attack`` None: the clean images), gather every rank's
    results once and keep each example once, in index order. Returns CPU tensors: images
    (fp32), labels, index, correct (the classifier's verdict on the image, 0/1).
    ``transform(x, y) -> x`` replaces ``attack`` when given (the adaptive attack)."""
    xs, metas = [], []
    device = accelerator.device
    with attack_mode(model, "eval"):
        for x, y, idx in loader:
            crash_point("forensics.batch")
            x, y, idx = x.to(device), y.to(device), idx.to(device)
            if transform is not None:
                x = transform(x, y)
            elif attack is not None:
                x = attack(model, x, attack.labels_for(y, num_classes))
            with torch.no_grad():
                correct = (model(x).argmax(1) == y).long()
            xs.append(x.detach().float())
            metas.append(torch.stack([idx.long(), y.long(), correct], dim=1))
    images = accelerator.gather(torch.cat(xs))        # one collective per tensor, per chunk
    meta = accelerator.gather(torch.cat(metas))
    keep = _first_occurrence(meta[:, 0])                # padding duplicates out, index order
    images, meta = images[keep].cpu(), meta[keep].cpu()
    return {"images": images.contiguous(), "index": meta[:, 0].contiguous(),
            "labels": meta[:, 1].contiguous(), "correct": meta[:, 2].to(torch.uint8).contiguous()}


def make_chunks(source, attacks: Dict[str, Callable], store: Store, accelerator, *, seed: int,
                log: Callable[..., None] = print) -> None:
    """Every (split, clean or attack) chunk that is not on disk yet: attacked, gathered and
    written by rank 0; finished chunks are only checked (fingerprint), not recomputed."""
    for split, loader in source.loaders.items():
        for name, attack in [(CLEAN, None), *attacks.items()]:
            path = store.chunk_path(split, name)
            if store.load(path, {"chunk": [split, name]}) is not None:
                log(f"{split}/{name}: done before, not recomputed")
                continue
            # Seeded per (split, attack, rank): a resumed study draws what an uninterrupted one
            # would, whatever chunks came before.
            torch.manual_seed(attack_seed(seed, f"{split}/{name}", 0, accelerator.process_index))
            chunk = attack_shard(source.model, loader, attack, accelerator,
                                 num_classes=source.num_classes)
            main_writes(accelerator, lambda: store.save(path, chunk, {"chunk": [split, name]}),
                        f"rank 0 could not write {path}")
            crash_point("forensics.chunk")
            log(f"{split}/{name}: {len(chunk['index'])} images, classifier accuracy "
                f"{100 * chunk['correct'].float().mean().item():.2f}%")


def image_digests(images: torch.Tensor) -> List[str]:
    """sha256 of each image's bytes: two source images are the same iff these are."""
    return [hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in images.contiguous()]


@dataclass
class LabelledSet:
    """One split of the detector's data. ``kind``: class per image (0 clean, k: the k-th
    attack of ``classes``); ``source``: the source image's index in the run's split;
    ``dropped``: per attack, images left out because the attack returned them unchanged
    (AutoAttack does not attack a misclassified image; such an image IS a clean one)."""

    images: torch.Tensor
    kind: torch.Tensor
    source: torch.Tensor
    labels: torch.Tensor
    correct: torch.Tensor
    classes: List[str]
    dropped: Dict[str, int] = field(default_factory=dict)
    digests: List[str] = field(default_factory=list)    # of the clean source images

    def of(self, name: str) -> torch.Tensor:
        """Mask of the images of class ``name``."""
        return self.kind == self.classes.index(name)


def labelled_set(store: Store, split: str, names: List[str],
                 exclude: Optional[Set[str]] = None) -> LabelledSet:
    """Read a split's chunks into one labelled set. ``exclude``: digests of source images to
    leave out (those the other split holds as well: no image is in both splits)."""
    classes = [CLEAN, *names]
    clean = store.load(store.chunk_path(split, CLEAN), {"chunk": [split, CLEAN]})
    digests = image_digests(clean["images"])
    keep_src = torch.tensor([d not in (exclude or set()) for d in digests], dtype=torch.bool)
    parts, dropped = [], {}
    for k, name in enumerate(classes):
        c = clean if k == 0 else store.load(store.chunk_path(split, name), {"chunk": [split, name]})
        assert torch.equal(c["index"], clean["index"]), f"{split}/{name}: other source images"
        keep = keep_src.clone()
        if k:
            changed = (c["images"] - clean["images"]).flatten(1).abs().amax(1) > 0
            dropped[name] = int((keep & ~changed).sum())
            keep &= changed
        parts.append({key: v[keep] for key, v in c.items()} | {"kind": torch.full((int(keep.sum()),), k)})
    cat = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return LabelledSet(cat["images"], cat["kind"], cat["index"], cat["labels"], cat["correct"],
                       classes, dropped, [d for d, k in zip(digests, keep_src) if k])
