"""Where the configuration files live: recipes/ (Hydra's root) and slurm/clusters/. Imports
nothing heavy, so ``--help`` can list them without loading Hydra (~0.16 s) or torch (~1.7 s)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

from .errors import ConfigError

DEFAULT_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_CLUSTERS = Path(__file__).resolve().parents[1] / "slurm" / "clusters"


def recipes_dir() -> Path:
    """The Hydra config root: $DISTADV_RECIPES, else the repository's recipes/ folder."""
    root = Path(os.environ.get("DISTADV_RECIPES", DEFAULT_RECIPES))
    if not (root / "config.yaml").is_file():
        raise ConfigError(f"no recipes at {root} (config.yaml missing); run from a distadv "
                          "checkout or set DISTADV_RECIPES to its recipes/ folder")
    return root


def group_names(group: str) -> List[str]:
    """The options of one config group (the YAML files in recipes/<group>/), sorted."""
    return sorted(p.stem for p in (recipes_dir() / group).glob("*.yaml"))


def recipe_names() -> List[str]:
    """Names of the recipes in recipes/recipe/."""
    return group_names("recipe")


def suite_names() -> List[str]:
    """Names of the evaluation suites in recipes/suite/."""
    return group_names("suite")


def clusters_dir() -> Path:
    """$DISTADV_CLUSTERS, else the repository's slurm/clusters/."""
    return Path(os.environ.get("DISTADV_CLUSTERS", DEFAULT_CLUSTERS))


def profile_names() -> List[str]:
    """Names of the profiles in slurm/clusters/."""
    return sorted(p.stem for p in clusters_dir().glob("*.yaml"))
