"""What several commands share: option choices, the migrated database, the embedded worker, local files."""

from __future__ import annotations

import hashlib
from pathlib import Path

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


def as_uri(value: str, store: ImageStore) -> str:
    """URIs pass through; an existing local file outside the image root is copied in by content hash."""
    if "://" in value:
        return value
    path = Path(value)
    if not path.is_file():
        return value  # let the store report it (not found / outside root) as a recorded error
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
