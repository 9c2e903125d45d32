"""How the ranks of a launch form their process group, and how they agree before a run.

The group's arguments come from the recipe (``runtime.timeout_s``: a hung peer fails instead
of hanging) and the launch (gloo for DeepSpeed off-GPU). Accelerate keeps the group for the
life of the process (PartialState), so whoever creates it first decides them: the first run,
or a sweep that needs the ranks to agree on its elements before the first run starts.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, Dict

import torch

from ..errors import ConfigError
from .topology import check_rank_network


def _deepspeed_launch() -> bool:
    """True when ``accelerate launch`` selected DeepSpeed (its config sets this variable)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _cpu_flag() -> bool:
    """ACCELERATE_USE_CPU, read as Accelerate reads it (1, true, yes, on)."""
    from accelerate.utils import parse_flag_from_env
    return parse_flag_from_env("ACCELERATE_USE_CPU")


def group_kwargs(cfg) -> Dict[str, Any]:
    """The process-group arguments of a run, after the checks that must come before a group
    can hang (DeepSpeed installed; on CPU, a host name that other nodes can reach)."""
    pg: Dict[str, Any] = {"timeout": timedelta(seconds=cfg.runtime.timeout_s)}
    deepspeed = _deepspeed_launch()
    if deepspeed:
        try:
            import deepspeed as _  # noqa: F401  (Accelerate would fail later, less clearly)
        except ImportError:
            raise ConfigError("this launch uses DeepSpeed (recipes/accelerate/deepspeed_*.yaml) "
                              "but deepspeed is not installed: pip install -e '.[deepspeed]', "
                              "or launch with recipes/accelerate/ddp.yaml") from None
    if not torch.cuda.is_available() or _cpu_flag():
        check_rank_network()               # gloo between nodes: before the group can hang
    if deepspeed and not torch.cuda.is_available():
        # DeepSpeed off-GPU needs gloo named; only then, because a non-default backend makes
        # Accelerate initialise a process group even for a single process.
        pg["backend"] = "gloo"
    return pg


def lead_decides(value: Any, config: Callable[[], Any]) -> Any:
    """Rank 0's ``value`` on every rank of the launch (the other ranks pass anything, e.g.
    None). Forms the process group first, with the arguments of the run ``config()`` composes
    (only then: a single process gets its own value back at no cost), if there is none yet.
    A collective: every rank calls it. Why: what rank 0 reads while it also writes (a sweep's
    grid.json, submissions.jsonl) is a race for the others, and ranks that disagree on what to
    run pair up on different runs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return value
    import torch.distributed as dist
    from accelerate.state import PartialState

    from .topology import check_world

    # cpu= as AcceleratorState passes it, so the Accelerator of the first run reuses this group
    check_world(PartialState(_cpu_flag(), **group_kwargs(config())))
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
