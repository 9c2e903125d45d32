"""Add-on training methods (EMA, AWP, ...): each registers its builder together with its own
typed config block, which becomes a top-level section of the run config (``ema.*``, ...)."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Type

from .base import Method

# key -> (config dataclass, builder(block, train state) -> Method or None when off,
#         check(block, run config) -> None or the first problem as one line)
_ADDONS: Dict[str, Tuple[Type, Callable, Callable]] = {}


def register_addon(key: str, config_cls: Type, check: Optional[Callable] = None) -> Callable:
    """Decorator: ``builder(block, state)`` makes the add-on for config section ``key``
    (whose schema is ``config_cls``), or returns None when the block turns it off. ``check``
    validates the block (``distadv.validate`` turns its message into a ConfigError)."""

    def deco(builder: Callable) -> Callable:
        if key in _ADDONS:
            raise ValueError(f"add-on '{key}' is registered twice")
        _ADDONS[key] = (config_cls, builder, check or (lambda block, cfg: None))
        return builder

    return deco


def check_addons(cfg) -> Optional[str]:
    """The first problem of any add-on's config block, as one line; None if all are valid."""
    for key, (_, _, check) in _ADDONS.items():
        problem = check(cfg[key], cfg)
        if problem:
            return problem
    return None


def addon_configs() -> Dict[str, Type]:
    """Section name -> config dataclass, in registration order (the run config's schema)."""
    return {k: c for k, (c, _, _) in _ADDONS.items()}


def build_addons(cfg, state) -> List[Method]:
    """The add-ons the run's config turns on, in registration order."""
    out = []
    for key, (_, builder, _) in _ADDONS.items():
        m = builder(cfg[key], state)
        if m is not None:
            out.append(m)
    return out
