"""Judge backends behind one protocol, created by name."""

from __future__ import annotations

from collections.abc import Callable

from workers.backends.base import Backend
from workers.backends.lite import LiteBackend
from workers.errors import UnknownBackend

_FACTORIES: dict[str, Callable[[], Backend]] = {"lite": LiteBackend}


def available_backends() -> list[str]:
    return sorted(_FACTORIES)


def create_backend(name: str) -> Backend:
    """A new backend instance; one per worker process is enough (they are thread-safe)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownBackend(
            f"unknown backend {name!r}; available: {', '.join(available_backends())}"
        ) from None
    return factory()


__all__ = ["Backend", "LiteBackend", "available_backends", "create_backend"]
