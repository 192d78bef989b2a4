"""Image records: one row per distinct content (sha256)."""

from __future__ import annotations

from sqlmodel import Session, select

from models.tables import ImageRecord, id_of
from models.upsert import insert_ignore


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
    return id_of(session.exec(select(ImageRecord).where(ImageRecord.sha256 == sha256)).one())
