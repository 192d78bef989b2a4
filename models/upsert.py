"""INSERT ... ON CONFLICT DO NOTHING for both SQLite and Postgres: the idempotent-write primitive."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel


def natural_key(*parts: Any) -> str:
    """A stable sha256 hex digest of identifying fields (JSON with sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}
"""(dialect, table, conflict columns) -> its INSERT ... ON CONFLICT DO NOTHING, built once: the
values go in as parameters, so SQLAlchemy compiles each statement once instead of per call."""


def insert_ignore(
    session: Session, model: type[SQLModel], rows: Sequence[dict[str, Any]], conflict: Sequence[str]
) -> None:
    """Insert rows (all with the same keys), silently keeping any existing row with the same `conflict` columns."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    table = model.__table__  # type: ignore[attr-defined]  # set on table=True models, not declared by SQLModel
    key = (dialect, table.name, tuple(conflict))
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        if dialect == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
        elif dialect == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
        else:  # pragma: no cover - we support the two databases above
            raise RuntimeError(f"unsupported database dialect {dialect!r}")
        _STATEMENTS[key] = stmt
    session.execute(stmt, list(rows) if len(rows) > 1 else dict(rows[0]))
