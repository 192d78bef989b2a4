"""Image records: one row per distinct content (sha256)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from models.tables import ImageRecord
from models.upsert import insert_ignore

_IMAGES = ImageRecord.__table__  # type: ignore[attr-defined]  # set on table=True models
_ID_OF = sa.select(_IMAGES.c.id).where(_IMAGES.c.sha256 == sa.bindparam("sha256"))


def upsert_image(
    *, session: Session, sha256: str, uri: str, width: int, height: int, format: str, size_bytes: int
) -> int:
    """The id of the row for this content, created on first sight."""
    row = {
        "sha256": sha256,
        "uri": uri,
        "width": width,
        "height": height,
        "format": format,
        "size_bytes": size_bytes,
    }
    insert_ignore(session, ImageRecord, [row], ["sha256"])
    return int(session.execute(_ID_OF, {"sha256": sha256}).scalar_one())
