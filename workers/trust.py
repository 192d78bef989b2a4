"""Trust signals in the pipeline: a verdict's confidence as stored, and the calibrations behind it.

A worker looks the current calibration of its judge up at most every `refresh_s` seconds (a newly
fitted one is picked up without a restart) and applies it only to verdicts of exactly that backend,
model and revision. Without one, the raw confidence is stored and `calibration_version` stays None.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Engine

from models.calibrations import contexts_with_quality, current_calibration, save_calibration
from models.db import session_scope
from workers.calibration import Calibration, Sample, expected_calibration_error, fit
from workers.confidence import raw_confidence
from workers.position import PairVerdict

log = logging.getLogger(__name__)


class CalibrationBook:
    """The current calibration per (backend, model, revision), refreshed every `refresh_s`."""

    def __init__(self, refresh_s: float = 60.0) -> None:
        self.refresh_s = refresh_s
        self._known: dict[tuple[str, str, str], tuple[float, Calibration | None]] = {}
        self._lock = threading.Lock()

    def get(self, db: Engine, backend: str, model_id: str, model_revision: str) -> Calibration | None:
        """The newest calibration of this exact model version; a failed lookup never fails a verdict
        (the last one known is kept, or the verdict is stored uncalibrated, and the lookup is tried
        again after `refresh_s`)."""
        key = (backend, model_id, model_revision)
        now = time.monotonic()
        with self._lock:
            hit = self._known.get(key)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        try:
            with session_scope(db) as session:
                row = current_calibration(
                    session=session, backend=backend, model_id=model_id, model_revision=model_revision
                )
                found = Calibration.model_validate(row.params) if row is not None else None
        except Exception as exc:  # noqa: BLE001 - a database hiccup or an unreadable row: keep judging
            log.warning(
                "calibration of %s %s@%s not looked up (%s): %s",
                backend,
                model_id,
                model_revision,
                type(exc).__name__,
                exc,
            )
            found = hit[1] if hit is not None else None
        if found is not None and not found.applies_to(backend, model_id, model_revision):
            found = None  # a row whose parameters name another model: never applied here
        with self._lock:
            self._known[key] = (now, found)
        return found


def quality_score(quality: dict[str, Any] | None) -> float | None:
    """The context quality a confidence depends on: the leave-one-out accuracy shrunk toward chance
    for few references ((correct + 1) / (held out + 2)); None where it was not computed."""
    if not quality:
        return None
    try:
        return (int(quality["correct"]) + 1) / (int(quality["held_out"]) + 2)
    except (KeyError, TypeError, ValueError):
        return None


def verdict_confidence(
    verdict: PairVerdict, calibration: Calibration | None, quality: dict[str, Any] | None
) -> dict[str, Any]:
    """The judgment columns of a verdict's confidence (all None when it states no winner)."""
    signals = raw_confidence(verdict)
    if signals is None:
        return {
            "confidence": None,
            "confidence_raw": None,
            "calibration_version": None,
            "confidence_signals": None,
        }
    score = quality_score(quality)
    record = signals.model_dump(mode="json")
    record["context_quality"] = score
    if calibration is not None and not calibration.applies_to(
        calibration.backend, calibration.model_id, calibration.model_revision, signals.source, signals.orders
    ):
        calibration = None  # fitted on another kind of raw confidence: stored raw, marked uncalibrated
    if calibration is None:
        return {
            "confidence": signals.p_raw,
            "confidence_raw": signals.p_raw,
            "calibration_version": None,
            "confidence_signals": record,
        }
    return {
        "confidence": calibration.apply(signals.p_raw, score),
        "confidence_raw": signals.p_raw,
        "calibration_version": calibration.version,
        "confidence_signals": record,
    }


class Fitted(BaseModel):
    """A calibration fitted by `fit_from_contexts` and what it did to its own held-out pairs."""

    calibration: Calibration
    users: int
    ece_raw: float  # on the pairs it was fitted on: how far the raw confidence was from calibrated
    ece_calibrated: float


def _quality_without(quality: dict[str, Any], held: dict[str, Any]) -> float | None:
    """The context's quality score with this held-out pair's own outcome left out: fitted on the score
    that includes it, the calibration would learn the label from its own input."""
    try:
        correct = int(quality["correct"]) - (1 if held.get("correct") else 0)
        return (correct + 1) / (int(quality["held_out"]) - 1 + 2)
    except (KeyError, TypeError, ValueError):
        return None


def fit_from_contexts(db: Engine, backend: str) -> tuple[list[Fitted], list[str]]:
    """Fit one calibration per judge model version from the leave-one-out checks stored with users'
    contexts of `backend`, and store each; returns them, and notes on versions with too few pairs."""
    with session_scope(db) as session:
        rows = contexts_with_quality(session=session, backend=backend)
        groups: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
        for row in rows:
            q = row.quality or {}
            key = (
                str(q.get("judge_model") or row.model_id),
                str(q.get("judge_revision") or row.model_revision),
            )
            groups.setdefault(key, []).append((row.user_id, q))
    fitted, notes = [], []
    for (model_id, revision), contexts in sorted(groups.items()):
        kinds: dict[tuple[str, int], list[Sample]] = {}
        for _, q in contexts:
            for h in q.get("per_reference", []):
                if h.get("p_raw") is None:
                    continue
                kind = (str(h.get("source") or "any"), int(q.get("orders") or 0))
                kinds.setdefault(kind, []).append(
                    Sample(
                        p_raw=float(h["p_raw"]), quality=_quality_without(q, h), correct=bool(h["correct"])
                    )
                )
        if not kinds:
            notes.append(f"{backend} {model_id}@{revision}: no held-out verdict with a confidence")
            continue
        (signal, orders), samples = max(kinds.items(), key=lambda kv: len(kv[1]))  # the judge's usual kind
        try:
            calibration = fit(
                samples,
                backend=backend,
                model_id=model_id,
                model_revision=revision,
                signal=signal,
                orders=orders,
            )
        except ValueError as exc:
            notes.append(str(exc))
            continue
        hits = [s.correct for s in samples]
        result = Fitted(
            calibration=calibration,
            users=len(contexts),
            ece_raw=round(expected_calibration_error([s.p_raw for s in samples], hits), 4),
            ece_calibrated=round(
                expected_calibration_error([calibration.apply(s.p_raw, s.quality) for s in samples], hits), 4
            ),
        )
        store_calibration(
            db,
            calibration,
            {"users": result.users, "ece_raw": result.ece_raw, "ece_calibrated": result.ece_calibrated},
        )
        fitted.append(result)
    return fitted, notes


def store_calibration(db: Engine, calibration: Calibration, metrics: dict[str, Any]) -> None:
    """Keep a fitted calibration in the ledger: from then on the newest of its model version."""
    with session_scope(db) as session:
        save_calibration(
            session=session,
            version=calibration.version,
            backend=calibration.backend,
            model_id=calibration.model_id,
            model_revision=calibration.model_revision,
            params=calibration.model_dump(mode="json"),
            pairs=calibration.pairs,
            source=calibration.source,
            metrics=metrics,
        )
