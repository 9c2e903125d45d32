#!/usr/bin/env python
"""Write a generated set from any generator: a DM-AT ``.npz`` (``image``, ``label``) or, for
sets too large for memory, the memory-mapped folder that ``data.extra`` reads.

    # a stand-in from the recipe's own training split (perturbed real images, per class)
    python tools/generate_set.py --generator jitter --count 20000 --out data/standin.npz -- recipe=dm_wrn28_10
    python tools/import_generated.py data/standin.npz --out data/standin
    # noise of CIFAR-10's shape straight into a folder (memory benchmarks)
    python tools/generate_set.py --generator noise --count 1000000 --shape 32,32,3 --out data/noise_1m
    # any generator: module:factory, factory(shape, train) -> make(labels, rng) -> uint8 NHWC
    python tools/generate_set.py --generator my_edm:sampler --count 1000000 --out data/edm_1m -- recipe=dm_wrn28_10

Labels are balanced (each class count/classes times, then shuffled), as DM-AT's sets are.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _factory(name: str):
    from distadv.data.generated.standins import STANDINS
    from distadv.errors import UserError
    if name in STANDINS:
        return STANDINS[name]
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"--generator {name}: not a stand-in ({', '.join(STANDINS)}) nor an "
                        f"importable module:factory ({exc})") from None


def main(argv=None) -> int:
    """Generate ``--count`` images into ``--out``; exit status 0, or 2 with one line."""
    from tools.cli import run_cli

    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", required=True, help="noise | jitter | module:factory")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True, help="FILE.npz or a new folder")
    ap.add_argument("--shape", help="H,W,C (default: the recipe's data set)")
    ap.add_argument("--num-classes", type=int, help="default: the recipe's data set, else 10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=10_000, help="images per generator call")
    args = ap.parse_args(argv[:cut])
    return run_cli(lambda: generate(args, argv[cut + 1:]))


def generate(args, overrides) -> None:
    """Write the set ``args`` describe; ``overrides`` compose the recipe whose training split
    and shape the generator gets (none: ``--shape``)."""
    from distadv.data.generated.store import SetWriter
    from distadv.errors import UserError

    train, shape, classes = None, None, args.num_classes
    if overrides:
        from distadv.compose import load_config
        from distadv.data import build_splits
        splits = build_splits(load_config(overrides).data)   # the training split: never val
        train, info = splits.train, splits.info
        shape, classes = (info.image_size, info.image_size, info.in_channels), classes or info.num_classes
    if args.shape:
        shape = tuple(int(s) for s in args.shape.split(","))
    if shape is None or len(shape) != 3:
        raise UserError("give --shape H,W,C or a recipe after -- (its data set's shape)")
    classes = classes or 10
    if args.count < 1:
        raise UserError(f"--count must be >= 1, got {args.count}")
    if args.out.exists():
        raise UserError(f"{args.out} exists; choose another --out (never overwritten)")
    try:
        make = _factory(args.generator)(shape, train)
    except ValueError as exc:
        raise UserError(f"--generator {args.generator}: {exc}") from None
    rng = np.random.default_rng(args.seed)
    labels = rng.permutation(np.arange(args.count) % classes)

    def chunks():
        for i in range(0, args.count, args.chunk):
            try:
                yield make(labels[i:i + args.chunk], rng), labels[i:i + args.chunk]
            except ValueError as exc:          # the stand-ins' way of saying "cannot"
                raise UserError(f"--generator {args.generator}: {exc}") from None
    if args.out.suffix == ".npz":      # DM-AT's format: in memory, for small sets
        images = np.concatenate([x for x, _ in chunks()])
        tmp = args.out.with_name(f".{args.out.name}.tmp.npz")
        np.savez(tmp, image=images, label=labels.astype(np.int64))
        tmp.replace(args.out)
    else:
        SetWriter(args.out, args.count, shape, classes, 1_000_000,
                  {"generator": args.generator, "seed": args.seed}).write_all(chunks())
    print(f"{args.out}: {args.count} images of {'x'.join(map(str, shape))} from "
          f"{args.generator}, {classes} classes")


if __name__ == "__main__":
    sys.exit(main())
