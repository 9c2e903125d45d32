"""Grid files, ``recipes/grid/NAME.yaml``: base recipes x sweeps x seeds -> elements.

A grid file is typed by ``GridFile``; unknown keys, empty sweeps and unknown recipes are
refused with one line before anything is written or submitted.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..compose import load_config, recipe_names, recipes_dir
from ..errors import ConfigError, GridError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")   # grid and element names: no paths


@dataclass
class GridFile:
    """The schema of a grid file."""

    description: str = ""
    recipes: List[str] = MISSING                           # base recipes (one axis)
    sweep: Dict[str, List[Any]] = field(default_factory=dict)  # key -> values, cartesian product
    zip: Dict[str, List[Any]] = field(default_factory=dict)    # keys swept together (one axis)
    sweep_only: List[str] = field(default_factory=list)  # recipes sweep/zip apply to (default all)
    seeds: List[int] = field(default_factory=lambda: [0])
    overrides: List[str] = field(default_factory=list)    # applied to every element
    labels: Dict[str, str] = field(default_factory=dict)  # recipe -> table column label
    x: Optional[str] = None    # swept key on the x axis of the robustness-vs-eps plot (Fig. 1)


@dataclass(frozen=True)
class Element:
    """One run of a grid: a stable name (its run directory), its configuration label (the
    table column; seeds share it), its seed, the swept values and the Hydra overrides."""

    name: str
    config: str
    seed: int
    values: Tuple[Tuple[str, Any], ...]
    overrides: Tuple[str, ...]


def grid_names() -> List[str]:
    """Names of the grid files in recipes/grid/."""
    return sorted(p.stem for p in (recipes_dir() / "grid").glob("*.yaml"))


def load_grid(name: str) -> GridFile:
    """Read and type-check ``recipes/grid/<name>.yaml``."""
    valid = grid_names()
    if not NAME.match(name or "") or name not in valid:
        raise GridError(f"unknown grid '{name}'; valid grids: {', '.join(valid)}")
    path = recipes_dir() / "grid" / f"{name}.yaml"
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GridFile),
                                                   OmegaConf.load(path)))
    except OmegaConfBaseException as exc:
        keys = ", ".join(GridFile.__dataclass_fields__)
        raise GridError(f"{path}: {str(exc).splitlines()[0]} (grid keys: {keys})") from None


def _value(v: Any) -> str:
    if not isinstance(v, (str, int, float, bool)):
        raise GridError(f"sweep values must be numbers, strings or booleans, got {v!r}")
    return str(v).lower() if isinstance(v, bool) else str(v)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "", text)


def expand(name: str, grid: GridFile, extra: Sequence[str] = ()) -> List[Element]:
    """All elements of a grid, in a fixed order (recipes, then sweeps, then seeds)."""
    if not grid.recipes:
        raise GridError(f"grid '{name}' has no recipes; list at least one under recipes:")
    unknown = [r for r in grid.recipes if r not in recipe_names()]
    if unknown:
        raise GridError(f"grid '{name}': unknown recipe(s) {', '.join(unknown)}; valid recipes: "
                        f"{', '.join(recipe_names())}")
    for key, values in list(grid.sweep.items()) + list(grid.zip.items()):
        if not values:
            raise GridError(f"grid '{name}': the sweep over '{key}' is empty; give it at least "
                            "one value or remove it")
    if len({len(v) for v in grid.zip.values()}) > 1:
        raise GridError(f"grid '{name}': the zip lists must have equal lengths, got "
                        + ", ".join(f"{k}: {len(v)}" for k, v in grid.zip.items()))
    if not grid.seeds or len(set(grid.seeds)) != len(grid.seeds):
        raise GridError(f"grid '{name}': seeds must be a non-empty list of distinct integers")
    if grid.x is not None and grid.x not in grid.sweep and grid.x not in grid.zip:
        raise GridError(f"grid '{name}': x '{grid.x}' is not a swept key")
    axes = [[((k, v),) for v in vs] for k, vs in grid.sweep.items()]
    if grid.zip:
        axes.append([tuple((k, vs[i]) for k, vs in grid.zip.items())
                     for i in range(len(next(iter(grid.zip.values()))))])
    outside = [r for r in grid.sweep_only if r not in grid.recipes]
    if outside:
        raise GridError(f"grid '{name}': sweep_only names {', '.join(outside)}, which is not "
                        f"in its recipes ({', '.join(grid.recipes)})")
    elements = []
    for recipe in grid.recipes:
        swept = not grid.sweep_only or recipe in grid.sweep_only
        for combo in itertools.product(*(axes if swept else [])):
            values = tuple(kv for group in combo for kv in group)
            shown = ", ".join(f"{k.split('.')[-1]}={_value(v)}" for k, v in values)
            config = grid.labels.get(recipe, recipe) + (f" ({shown})" if shown else "")
            for seed in grid.seeds:
                tag = "-".join([recipe] + [f"{k.split('.')[-1]}{_value(v)}" for k, v in values])
                elements.append(Element(
                    name=f"{len(elements):02d}-{_slug(tag)}-s{seed}", config=config, seed=seed,
                    values=values,
                    overrides=(f"recipe={recipe}", f"seed={seed}",
                               *[f"{k}={_value(v)}" for k, v in values],
                               *grid.overrides, *extra)))
    return elements


def check_elements(name: str, elements: Sequence[Element]) -> None:
    """Compose every element's config (unknown keys, bad types and values are refused here,
    before anything is submitted). ~0.1 s per element."""
    for e in elements:
        try:
            load_config(list(e.overrides))
        except ConfigError as exc:
            raise GridError(f"grid '{name}', element {e.name}: {exc}") from None


def grid_dir_default(name: str, root: str = "runs") -> Path:
    """Where a grid's runs and records go unless ``grid_dir=`` says otherwise."""
    return Path(root) / "grids" / name
