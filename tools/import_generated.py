#!/usr/bin/env python
"""Convert a DM-AT generated set (``.npz`` with ``image``, ``label``) once into memory-mapped
``.npy`` shards with a manifest, for ``data.extra``.

    python tools/import_generated.py 1m.npz --out data/dm_1m
    accelerate launch distadv/train.py recipe=dm_wrn28_10 data.extra=data/dm_1m
    python tools/import_generated.py --verify data/dm_1m      # hash every shard again

Memory stays at one chunk of rows whatever the set's size (the archive is streamed, not
loaded); sets past ``--shard-size`` images (default 1M, 3 GB at 32x32x3) get one file pair per
shard. The folder appears only when complete; an existing one is never overwritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    """Import (or ``--verify``) a set; exit status 0, or 2 with one line for bad input."""
    from tools.cli import run_cli

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("npz", nargs="?", type=Path, help="the DM-AT .npz archive")
    ap.add_argument("--out", type=Path, help="the set's folder (must not exist)")
    ap.add_argument("--num-classes", type=int, default=10, help="labels are 0..N-1 (default 10)")
    ap.add_argument("--shard-size", type=int, default=1_000_000, help="images per shard file")
    ap.add_argument("--verify", type=Path, metavar="DIR", help="check a set's sha256s instead")
    args = ap.parse_args(argv)
    return run_cli(lambda: verify(args.verify) if args.verify else convert(args))


def convert(args) -> None:
    """Import ``args.npz`` into ``args.out``."""
    from distadv.data.generated.npz import import_npz
    from distadv.errors import UserError
    if args.npz is None or args.out is None:
        raise UserError("give the .npz and --out DIR (or --verify DIR)")
    m = import_npz(args.npz, args.out, args.num_classes, args.shard_size)
    print(f"{args.out}: {m['count']} images of {'x'.join(map(str, m['shape']))}, "
          f"{len(m['shards'])} shard(s), labels per class {m['label_histogram']}; "
          f"source sha256 {m['source']['sha256'][:16]}...")


def verify(path: Path) -> None:
    """Check a set's headers, sizes and labels (as training does), then every sha256."""
    from distadv.data.generated.store import MANIFEST, open_set, verify_hashes
    from distadv.errors import UserError
    if not (path / MANIFEST).is_file():
        raise UserError(f"{path} has no {MANIFEST}; it is not a generated set")
    m = json.loads((path / MANIFEST).read_text())
    open_set(path, m["shape"], m["num_classes"])
    bad = verify_hashes(path)
    if bad:
        raise UserError(f"{path / bad} does not match its sha256 in the manifest (damaged or "
                        "changed); import the set again")
    print(f"{path}: {m['count']} images, every shard matches its sha256")


if __name__ == "__main__":
    sys.exit(main())
