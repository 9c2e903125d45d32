"""Launched with 2 processes by tests/test_distributed.py: rank 1 stalls, rank 0's collective
must fail after runtime.timeout_s with distadv's one-line explanation (exit 3)."""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from distadv.compose import load_config  # noqa: E402
from distadv.engine.faults import describe_dist_failure  # noqa: E402
from distadv.engine.setup import make_accelerator  # noqa: E402

cfg = load_config(["recipe=demo", "runtime.timeout_s=3"])
accelerator = make_accelerator(cfg)
if accelerator.process_index == 1:
    time.sleep(30)
    sys.exit(0)
start = time.monotonic()
try:
    accelerator.reduce(torch.ones(1), reduction="sum")
except RuntimeError as exc:
    print(json.dumps({"elapsed": time.monotonic() - start, "world": accelerator.num_processes,
                      "message": describe_dist_failure(exc, cfg.runtime.timeout_s)}), flush=True)
    sys.exit(3)
sys.exit(0)
