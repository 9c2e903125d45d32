"""Compose a run config from recipes/ with Hydra, and turn Hydra's errors into one clear line.

We use Hydra's compose API rather than ``@hydra.main``: it creates no timestamped output
folder (those differ between ranks) and does not chdir, so every rank of one launch agrees on
one run directory.
"""
from __future__ import annotations

from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from .config import RunConfig
from .errors import ConfigError
from .paths import recipe_names, recipes_dir, suite_names  # noqa: F401  (re-exported)


def _compose(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    from .eval.config import EvalConfig  # late: eval imports the attacks

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def load_eval_config(overrides: Sequence[str]) -> DictConfig:
    """Compose ``run=DIR suite=NAME key=value ...`` (or ``model=MODULE:FACTORY checkpoint=FILE
    data=NAME ...``, a model trained elsewhere) for distadv/evaluate.py; one-line errors."""
    overrides = list(overrides)
    suite = next((o.split("=", 1)[1] for o in overrides if o.startswith("suite=")), "seed")
    if suite not in suite_names():
        raise ConfigError(f"unknown suite '{suite}'; valid suites: {', '.join(suite_names())}")
    try:
        cfg = _compose(overrides, "evaluate")
    except Exception as exc:
        base = _compose([f"suite={suite}", "run=x"], "evaluate")
        raise ConfigError(_diagnose(overrides, base) or _first_line(exc)) from None
    from .eval.external import is_external  # late, as above
    is_external(cfg)      # run= or model= (not both, not neither) and the keys that go with it
    return cfg


def load_config(overrides: Sequence[str]) -> DictConfig:
    """Compose ``recipe=NAME key=value ...`` into a typed, validated config.

    Raises ConfigError with one line naming the problem and the valid choices.
    """
    overrides = list(overrides)
    recipe = "demo"
    for o in overrides:
        if o.startswith("recipe="):
            recipe = o.split("=", 1)[1]
    valid = recipe_names()
    if recipe not in valid:
        raise ConfigError(f"unknown recipe '{recipe}'; valid recipes: {', '.join(valid)}")
    try:
        cfg = _compose(overrides)
    except Exception as exc:  # Hydra raises several types; all become one clear line
        base = _compose([f"recipe={recipe}"])
        raise ConfigError(_diagnose(overrides, base) or _first_line(exc)) from None
    OmegaConf.set_struct(cfg, False)
    cfg.recipe = recipe
    OmegaConf.set_struct(cfg, True)
    from .validate import validate  # late import: validate needs the registries
    validate(cfg)
    return cfg


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines[:3]) or type(exc).__name__


def _diagnose(overrides: Sequence[str], base: DictConfig) -> str:
    """Find the first override that is an unknown key or has a wrong type; '' if none."""
    parser = OverridesParser.create()
    for text in overrides:
        if text.startswith(("recipe=", "suite=", "+", "~")):   # group choices, not keys
            continue
        try:
            ov = parser.parse_override(text)
        except Exception as exc:
            return f"cannot parse override '{text}': {_first_line(exc)}"
        key = ov.key_or_group
        node, parts = base, key.split(".")
        for i, part in enumerate(parts):
            if isinstance(node, DictConfig) and part not in node:
                where = ".".join(parts[:i]) or "the top level"
                choices = ", ".join(str(k) for k in node.keys())
                return (f"unknown key '{key}': '{part}' is not in {where}; "
                        f"valid keys there: {choices}")
            if not isinstance(node, (DictConfig, ListConfig)):
                break
            node = node[part] if isinstance(node, DictConfig) else node[int(part)]
        probe = base.copy()
        try:
            OmegaConf.update(probe, key, ov.value(), merge=True)
        except Exception as exc:
            want = _expected_type(base, key)
            return f"wrong type for '{key}': {ov.value()!r} is not {want} ({_first_line(exc)})"
    return ""


def _expected_type(cfg: DictConfig, key: str) -> str:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    try:
        return f"a valid {parent._get_node(leaf)._metadata.ref_type.__name__}"
    except Exception:
        return "of the expected type"
