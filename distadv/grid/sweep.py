"""A command-line sweep (``train.py -m recipe=a,b seed=0,1 optim.lr=0.1,0.2``) as a grid.

Hydra's override parser reads the sweep syntax (``a,b``, ``range(0,3)``, ``choice(...)``,
quoting); the values become a ``GridFile`` (recipes x sweep x seeds + fixed overrides) that the
grid machinery expands, checks, runs and submits: one implementation of grids, not two.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from .spec import GridFile, check_elements, expand
from .submit import Plan

MAX_NAME = 80   # longer sweep names are cut and end with a hash of the whole command


def _parse(overrides: Sequence[str]) -> Dict[str, Tuple[List[str], str]]:
    """key -> (its values, the override as typed), in command-line order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = {}
    for text in overrides:
        try:
            ov = OverridesParser.create().parse_override(text)
        except Exception as exc:  # Hydra's parser raises its own types; one line for the user
            raise ConfigError(f"cannot parse override '{text}': "
                              f"{str(exc).splitlines()[0]}") from None
        key = ov.get_key_element()
        if key in parsed:
            raise ConfigError(f"'{key}' is given twice in the sweep; give it once with all "
                              "its values (key=a,b)")
        parsed[key] = (list(ov.sweep_string_iterator()) if ov.is_sweep_override()
                       else [ov.get_value_element_as_str()], text)
    return parsed


def sweep_name(swept: Dict[str, List[str]], fixed: Sequence[str]) -> str:
    """The sweep directory's name, from the swept values (``basic_linf.basic_l2-seed0.1``),
    plus a hash of the fixed overrides when there are any (another command, another folder);
    cut to MAX_NAME characters with a hash of the whole when longer."""
    parts = [".".join(v) if k == "recipe" else k.split(".")[-1] + ".".join(v)
             for k, v in swept.items()]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "", "-".join(parts)) or "sweep"
    if fixed:
        name += "-" + hashlib.sha1("\0".join(fixed).encode()).hexdigest()[:6]
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}-{digest}"
    return name


def plan_sweep(overrides: Sequence[str], grid_dir: Optional[str] = None) -> Plan:
    """The grid of a command-line sweep: every combination of the swept values, each element
    named from its overrides, every element's config composed and checked (nothing runs or is
    written before all of them compose)."""
    parsed = _parse(overrides)
    for own in ("run_dir", "name"):
        if own in parsed:
            raise ConfigError(f"a sweep names each run's directory from its overrides; drop "
                              f"{own}= (use runs_root=DIR or grid_dir=DIR)")
    recipes = parsed.pop("recipe", (["demo"], ""))[0]
    seeds = parsed.pop("seed", (["0"], ""))[0]
    try:
        seed_values = [int(s) for s in seeds]
    except ValueError:
        raise ConfigError(f"seed values must be integers, got {','.join(seeds)}") from None
    sweep = {k: v for k, (v, _) in parsed.items() if len(v) > 1}
    fixed = [text for k, (v, text) in parsed.items() if k not in sweep]
    if not sweep and len(recipes) == 1 and len(seeds) == 1:
        raise ConfigError("-m found nothing to sweep; give a key several values (key=a,b) or "
                          "drop -m for a single run")
    shown = {"recipe": recipes, "seed": seeds, **sweep}
    name = sweep_name({k: v for k, v in shown.items() if len(v) > 1}, fixed)
    grid = GridFile(description=f"command-line sweep: {' '.join(overrides)}", recipes=recipes,
                    sweep=sweep, seeds=seed_values, overrides=fixed)
    elements = expand(name, grid)
    check_elements(name, elements)
    runs_root = parsed.get("runs_root", (["runs"], ""))[0][0]
    path = Path(grid_dir) if grid_dir else Path(runs_root) / "sweeps" / name
    return Plan(name, elements, {"description": grid.description,
                                 "x": next(iter(sweep)) if len(sweep) == 1 else None}, path)
