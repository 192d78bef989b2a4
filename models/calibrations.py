"""Stored confidence calibrations, and the held-out pairs they are fitted on."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from models.tables import CalibrationRecord, UserContext


def save_calibration(
    *,
    session: Session,
    version: str,
    backend: str,
    model_id: str,
    model_revision: str,
    params: dict[str, Any],
    pairs: int,
    source: str,
    metrics: dict[str, Any],
) -> CalibrationRecord:
    """Store a fitted calibration (the same version twice is one row); it becomes its model's current one."""
    row = session.exec(select(CalibrationRecord).where(CalibrationRecord.version == version)).first()
    if row is None:
        row = CalibrationRecord(
            version=version,
            backend=backend,
            model_id=model_id,
            model_revision=model_revision,
            params=params,
            pairs=pairs,
            source=source,
            metrics=metrics,
        )
    else:  # fitted again on the same pairs: now the newest
        session.delete(row)
        session.flush()
        row = CalibrationRecord(**{**row.model_dump(exclude={"id", "created_at"})})
    session.add(row)
    session.flush()
    return row


def current_calibration(
    *, session: Session, backend: str, model_id: str, model_revision: str
) -> CalibrationRecord | None:
    """The newest calibration of exactly this backend, model and revision (never another version's)."""
    stmt = (
        select(CalibrationRecord)
        .where(
            CalibrationRecord.backend == backend,
            CalibrationRecord.model_id == model_id,
            CalibrationRecord.model_revision == model_revision,
        )
        .order_by(col(CalibrationRecord.id).desc())
    )
    return session.exec(stmt).first()


def list_calibrations(*, session: Session) -> list[CalibrationRecord]:
    return list(session.exec(select(CalibrationRecord).order_by(col(CalibrationRecord.id).desc())))


def contexts_with_quality(*, session: Session, backend: str) -> list[UserContext]:
    """The newest ready context per user of this backend whose leave-one-out check was computed: the
    held-out reference pairs a calibration can be fitted on (the caller keeps those whose check ran
    with the judge model being calibrated, `quality["judge_model"]`)."""
    stmt = select(UserContext).where(UserContext.backend == backend).order_by(col(UserContext.id).desc())
    newest: dict[int, UserContext] = {}
    for row in session.exec(stmt):
        if row.quality and row.user_id not in newest:  # JSON null and SQL NULL both read back as None
            newest[row.user_id] = row
    return list(newest.values())
