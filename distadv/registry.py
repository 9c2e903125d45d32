"""One small generic registry: name -> builder, with a clear error for unknown names."""
from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of builders (models, strategies, data sets).

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(**kw): return "net"
    >>> MODELS.build("tiny")
    'net'
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._table: Dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a builder under ``name`` (duplicates are a bug)."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._table:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._table[name] = fn
            return fn

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._table)

    def get(self, name: str) -> Callable[..., T]:
        """The builder for ``name``; unknown names raise a KeyError that lists the valid ones."""
        if name not in self._table:
            raise KeyError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}")
        return self._table[name]

    def build(self, name: str, **kwargs) -> T:
        """Call the builder registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._table
