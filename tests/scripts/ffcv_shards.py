"""Launched with 2 processes by tests/test_loaders.py: each rank writes the example indices its
FFCV train and val loaders yield for one epoch (distributed=True)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelerate import Accelerator  # noqa: E402

from distadv.data import LoaderSpec  # noqa: E402
from distadv.data.ffcv import FFCVLoader  # noqa: E402

beton_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
acc = Accelerator()
rank, world = acc.process_index, acc.num_processes
result = {"world": world}
for split, train in (("train", True), ("val", False)):
    path = next(beton_dir.glob(f"*-{split}.beton"))
    loader = FFCVLoader(path, LoaderSpec(4, world, rank, train, num_workers=1))
    loader.set_epoch(1)
    result[split] = [int(i) for _, _, idx in loader for i in idx]
(out / f"rank{rank}.json").write_text(json.dumps(result))
