"""Launched with 2 processes by tests/test_generated.py: each rank writes the example ids its
mixed loader yields in epoch 1 (without replacement), and those of a 1-process loader."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from distadv.data import IndexedImages, LoaderSpec  # noqa: E402
from distadv.data.generated import MixedLoader, MixSpec, open_set  # noqa: E402

set_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
acc = Accelerator()
rank, world = acc.process_index, acc.num_processes
real = IndexedImages(torch.zeros(100, 3, 32, 32, dtype=torch.uint8), torch.arange(100) % 10)
gen = [open_set(set_dir, (32, 32, 3), 10)]
mix = MixSpec(32, 0.7, [1.0], False, 320, 4)


def ids(w, k):
    loader = MixedLoader(real, gen, mix, LoaderSpec(32 // w, w, k, True, 4))
    loader.set_epoch(1)
    return [i for _, _, b in loader for i in b.tolist()]


(out / f"rank{rank}.json").write_text(json.dumps(
    {"world": world, "n_real": len(real), "ids": ids(world, rank), "one_process": ids(1, 0)}))
