#!/usr/bin/env python
"""Write the FFCV .beton files (train / val / test) of a recipe's data set.

    python tools/make_beton.py recipe=wider_wrn data.root=data
    python distadv/train.py recipe=wider_wrn data.loader=ffcv

The validation split is the one training uses (data.val_size, data.split_seed); the file names
record it. Images are stored raw (pixel-exact), with label and example-index fields.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    """Compose the recipe from ``argv``, load its splits, write the betons; exit status."""
    from distadv.compose import load_config
    from distadv.data import build_splits
    from distadv.data.ffcv import write_betons
    from tools.cli import run_cli

    def body():
        cfg = load_config(sys.argv[1:] if argv is None else argv)
        for split, path in write_betons(build_splits(cfg.data), cfg.data).items():
            print(f"{split}: {path}")
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
