"""Shared ``key=value`` command-line handling of slurm/submit.py (one-line errors, exit 2)."""
from __future__ import annotations

import sys
from typing import Callable, Dict, List, Set


def run(argv: List[str], own_keys: Set[str], action: Callable) -> int:
    """Split ``argv`` into own keys, ``cluster.*`` overrides and recipe overrides; call
    ``action(own, recipe_overrides, cluster_overrides)``; turn bad input into exit 2."""
    from distadv.errors import UserError

    own: Dict[str, str] = {}
    rest, cluster_rest = [], []
    try:
        for a in argv:
            if "=" not in a:
                raise ValueError(f"arguments are key=value, got '{a}'")
            key, value = a.split("=", 1)
            if key in own_keys:
                own[key] = value
            elif key.startswith("cluster."):
                cluster_rest.append(f"{key[len('cluster.'):]}={value}")
            else:
                rest.append(a)
        return action(own, rest, cluster_rest)
    except ModuleNotFoundError as exc:
        if exc.name != "submitit":
            raise
        print("distadv: error: submitit is not installed; grids need the slurm extra: "
              "pip install -e '.[slurm]'", file=sys.stderr)
    except (UserError, ValueError) as exc:
        print(f"distadv: error: {exc}", file=sys.stderr)
    return 2
