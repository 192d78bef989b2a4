"""What several commands share: option choices, the migrated database, the embedded worker, local files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import click
from sqlalchemy.engine import Engine

from core.settings import get_settings
from models.db import upgrade
from tasks.runtime import get_db
from workers.backends import BACKENDS
from workers.protocols import PROTOCOLS
from workers.store import ImageStore

BACKEND_CHOICES = list(BACKENDS)
PROTOCOL_CHOICES = sorted(PROTOCOLS)


def migrated_db() -> Engine:
    """The configured database, its schema brought up to date first (commands that write use this)."""
    upgrade(get_settings().resolved_database_url)
    return get_db()


def local_file(value: str) -> Path:
    """A local path that must name a file; otherwise a usage error saying what it is instead."""
    path = Path(value)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "no such file"
        raise click.BadParameter(f"{value}: {reason}")
    return path


def as_uri(value: str, store: ImageStore) -> str:
    """URIs pass through; an existing local file outside the image root is copied in by content hash;
    a local path that is not a file is refused here, by name (not as "outside the image root")."""
    if "://" in value:
        return value
    path = local_file(value)
    try:
        store.resolve_file(str(path.resolve()))
        return f"file://{path.resolve().relative_to(store.root)}"
    except Exception:
        data = path.read_bytes()
        name = f"uploads/{hashlib.sha256(data).hexdigest()[:32]}{path.suffix.lower()}"
        return store.write_file(name, data)


def redact(url: str) -> str:
    """A database URL without its credentials, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def queue_hint(queues: Sequence[str]) -> Callable[[], str | None] | None:
    """What a long wait prints when its queue has messages but no worker (None on the embedded broker,
    where this process runs the worker itself)."""
    if get_settings().embedded_broker:
        return None
    from tasks import app
    from tasks.broker import no_consumer_hint, waiting_without_consumer

    return lambda: no_consumer_hint(waiting_without_consumer(app, queues))
