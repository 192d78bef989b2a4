"""The judging pipeline, callable without Celery: load → normalize → backend → parse → persist.

Tasks, the CLI, tests and benchmarks call these functions with the pieces a worker process holds
(`Resources`). Bad input raises a `PermanentError` that is recorded on the row as `rejected`; a
transient error (store, database, model server) makes the row wait and be retried with backoff
(`park=True`, the queue's way) or propagates (`park=False`, for callers that retry themselves);
anything else is recorded as `failed` and re-raised. A run holds a claim on its row
(`claim_judgment`), renewed by the process's heartbeat, so duplicate messages for the same judgment
never run it twice at once, and a result whose claim was lost is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from core.enums import JudgmentStatus, Outcome, Winner
from core.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidRequest,
    NoReferences,
    PermanentError,
    PigrewardError,
    TransientError,
    UnknownUser,
)
from models.claims import ClaimedJudgment, ClaimLost, claim_judgment, close_with_error, park_judgment
from models.contexts import ReferenceInput, find_context, ready_contexts, reference_inputs, save_context
from models.db import session_scope
from models.images import upsert_image
from models.judgments import (
    DimensionRecord,
    VerdictRecord,
    finish_judgment,
    get_judgment,
    judgment_subjects,
)
from models.tables import EndUser, Judgment, UserContext, id_of
from models.tenants import find_tenant, tenant_name
from models.upsert import natural_key
from models.users import find_user
from workers.backends.base import Backend
from workers.claims import ActiveClaims
from workers.imaging import ImageLoader, NormalizedImage
from workers.outages import Outages
from workers.position import PairVerdict, judge_pair
from workers.quality import assess_context
from workers.recovery import Backoff
from workers.schemas import ContextData, ReferenceExample
from workers.trust import CalibrationBook, verdict_confidence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgmentEvent:
    """How one run of a judgment ended (`done`, `invalid`, `rejected` or `failed`), for observers."""

    judgment_id: int
    backend: str
    status: JudgmentStatus
    attempt: int  # 1 on the first run of the row (retries and takeovers count up)
    queue_wait_s: float | None  # ledger row created -> this run started
    winner: Winner | None = None
    invalid_reason: str | None = None
    error_code: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)


class PipelineEvents:
    """Observer of pipeline runs (e.g. tasks/metrics.py); this default does nothing.

    Called in the worker thread that ran the judgment; an exception it raises is logged and ignored.
    """

    def judgment_finished(self, event: JudgmentEvent) -> None:
        return None


@dataclass
class Resources:
    """What one worker process holds and reuses across tasks."""

    db: Engine  # the ledger database
    loader: ImageLoader
    backend_for: Callable[[str, str | None], Backend]  # (backend name, protocol or None)
    lease_s: float = 60.0  # a claim not renewed for this long is presumed dead (its worker died)
    max_attempts: int = 8  # runs of one row that end without a word before it is failed (crash loops)
    backoff: Backoff = field(default_factory=Backoff)
    claims: ActiveClaims = field(default_factory=ActiveClaims)
    outages: Outages = field(default_factory=Outages)
    events: PipelineEvents = field(default_factory=PipelineEvents)
    # image row ids by content sha256, filled once a row is committed: image rows are never deleted
    # or re-keyed, so a known id stays valid and a judgment of known images skips the upserts
    image_ids: dict[str, int] = field(default_factory=dict, repr=False)
    # leave-one-out check of new contexts (workers.quality): None = on for lite, off for LVLM backends
    context_quality: bool | None = None
    calibrations: CalibrationBook = field(default_factory=CalibrationBook, repr=False)


class JudgmentSummary(BaseModel):
    """What a judge task returns (the full result lives in the ledger)."""

    judgment_id: int
    status: JudgmentStatus
    winner: Winner | None = None
    error_code: str | None = None
    error: str | None = None
    skipped: bool = False
    confidence: float | None = None  # that the user prefers `winner` (see workers.confidence)
    calibration_version: str | None = None


@contextmanager
def database_errors() -> Iterator[None]:
    """Connection losses and deadlocks are transient: the whole attempt is safe to retry."""
    try:
        yield
    except OperationalError as exc:
        raise DatabaseUnavailable(f"database error, will retry: {exc.orig or exc}") from exc


def references_hash(refs: list[tuple[str, str, str]]) -> str:
    return natural_key("references", refs)


def resolve_user(*, db: Engine, tenant: str, user: str) -> EndUser:
    with database_errors(), session_scope(db) as session:
        tenant_row = find_tenant(session=session, name=tenant)
        row = (
            find_user(session=session, tenant_id=id_of(tenant_row), external_id=user) if tenant_row else None
        )
    if row is None:
        raise UnknownUser(
            f"unknown user {user!r} in tenant {tenant!r}: add the user and reference pairs first"
        )
    return row


_PER_PROMPT_USAGE = frozenset({"rationales_dropped", "rationales_used", "prompt_tokens_estimated"})


ContextKey = tuple[int, str, str, str, str]
"""user id, backend, model id, model revision, template version: a context version minus its references."""


@dataclass
class ContextMemo:
    """Contexts already looked up, by user and version: the judgments of one chunk share them.

    `chunk_contexts` fills it for a whole chunk with one query of its users' references and one of
    their contexts, instead of two queries per judgment; a judgment whose user is not in it looks up
    (or builds) its own context and adds it. An entry is the context that was current when it was
    read: a reference added while a chunk runs applies from the next chunk on (each verdict records
    the context it used, so re-scoring finds the ones judged with the older context).
    """

    entries: dict[ContextKey, tuple[UserContext, ContextData]] = field(default_factory=dict)


def _context_version(backend: Backend) -> dict[str, str]:
    author = backend.context_identity
    return {
        "backend": backend.name,
        "model_id": author.model_id,
        "model_revision": author.revision,
        "template_version": backend.context_version,
    }


def _context_key(user_id: int, version: dict[str, str]) -> ContextKey:
    return (
        user_id,
        version["backend"],
        version["model_id"],
        version["model_revision"],
        version["template_version"],
    )


def _refs_hash(refs: list[ReferenceInput]) -> str:
    return references_hash([(r.prompt, r.chosen_uri, r.rejected_uri) for r in refs])


def chunk_contexts(*, res: Resources, judgment_ids: Collection[int]) -> ContextMemo:
    """The current contexts of the users these judgments are for, looked up together (see
    `ContextMemo`). Users or backends that cannot be resolved here are left to each judgment."""
    memo = ContextMemo()
    with database_errors(), session_scope(res.db) as session:
        subjects = judgment_subjects(session=session, judgment_ids=judgment_ids)
        users = {user_id for user_id, _, _ in subjects if user_id is not None}
        hashes = {
            u: _refs_hash(refs) for u, refs in reference_inputs(session=session, user_ids=users).items()
        }
        rows = ready_contexts(session=session, user_ids=hashes, references_hashes=set(hashes.values()))
    by_version = {
        (
            row.references_hash,
            (row.user_id, row.backend, row.model_id, row.model_revision, row.template_version),
        ): row
        for row in rows
    }
    versions: dict[tuple[str, str | None], dict[str, str] | None] = {}
    for user_id, name, protocol in subjects:
        if user_id not in hashes:
            continue
        if (name, protocol) not in versions:  # once per backend: asking a model server costs requests
            try:
                versions[(name, protocol)] = _context_version(res.backend_for(name, protocol))
            except PigrewardError:  # an unknown backend, an unreachable model server: each judgment says
                versions[(name, protocol)] = None
        version = versions[(name, protocol)]
        if version is None:
            continue
        key = _context_key(user_id, version)
        row = by_version.get((hashes[user_id], key))
        if row is not None:
            memo.entries[key] = (row, ContextData(rationales=row.rationales, payload=row.payload))
    return memo


def ensure_context(
    *, res: Resources, backend: Backend, user_id: int, memo: ContextMemo | None = None
) -> tuple[UserContext, ContextData]:
    """The user's context for the current references and backend version, built if missing
    (found in `memo` when its chunk looked it up already)."""
    version = _context_version(backend)
    key = _context_key(user_id, version)
    if memo is not None and key in memo.entries:
        return memo.entries[key]
    with database_errors(), session_scope(res.db) as session:
        refs = reference_inputs(session=session, user_ids=[user_id]).get(user_id, [])
        if not refs:
            raise NoReferences(f"user {user_id} has no reference pairs: a context needs at least one")
        ref_hash = _refs_hash(refs)
        row = find_context(session=session, user_id=user_id, references_hash=ref_hash, **version)
    if row is None:
        started = time.perf_counter()
        examples = []
        for ref in refs:
            try:
                chosen, rejected = res.loader.load(ref.chosen_uri), res.loader.load(ref.rejected_uri)
            except PermanentError as exc:
                raise type(exc)(f"reference pair {ref.id} of user {user_id}: {exc.message}") from exc
            examples.append(ReferenceExample(ref.prompt, chosen, rejected))
        data = backend.build_context(examples)
        quality = None
        if _checks_quality(res, backend):
            try:
                checked = assess_context(backend, examples, data, swap=backend.name != "lite")
            except Exception as exc:  # noqa: BLE001 - the check is extra: the context itself is kept
                log.warning(
                    "user %s: context stored without its quality check (%s: %s)",
                    user_id,
                    type(exc).__name__,
                    exc,
                )
                checked = None
            quality = checked.model_dump(mode="json") if checked is not None else None
        with database_errors(), session_scope(res.db) as session:
            # a concurrent worker may have stored this version first: theirs is kept and used
            row = save_context(
                session=session,
                user_id=user_id,
                references_hash=ref_hash,
                reference_count=len(refs),
                rationales=data.rationales,
                payload=data.payload,
                build_seconds=time.perf_counter() - started,
                quality=quality,
                **version,
            )
    found = (row, ContextData(rationales=row.rationales, payload=row.payload))
    if memo is not None:
        memo.entries[key] = found
    return found


def _checks_quality(res: Resources, backend: Backend) -> bool:
    return res.context_quality if res.context_quality is not None else backend.name == "lite"


def run_judgment(
    *, res: Resources, judgment_id: int, token: str, park: bool = True, contexts: ContextMemo | None = None
) -> JudgmentSummary:
    """Run one ledger row under claim `token` until it is done, invalid, rejected or (`park`) waiting.

    Raises `DatabaseUnavailable` when the database cannot be reached to take the claim or to write the
    outcome: the row then stays as it was and the sweeper sends it again once the database is back.
    `contexts`: the contexts its chunk looked up already (see `ContextMemo`).
    """
    with database_errors(), session_scope(res.db) as session:
        job = claim_judgment(
            session=session,
            judgment_id=judgment_id,
            token=token,
            lease_s=res.lease_s,
            max_attempts=res.max_attempts,
            worker=res.claims.worker,
        )
        if job is None:
            existing = get_judgment(session=session, judgment_id=judgment_id)
            if existing is None:
                raise LookupError(f"judgment {judgment_id} is not in the ledger")
            return _summary(existing, skipped=True)
    res.claims.add([judgment_id])
    try:
        return _run(res, job, token, contexts)
    except TransientError as exc:
        if not park:
            raise
        return _park(res, job, token, exc)
    finally:
        res.claims.discard(judgment_id)


def _run(res: Resources, job: ClaimedJudgment, token: str, contexts: ContextMemo | None) -> JudgmentSummary:
    """The claimed run: judge and store the verdict, or record why not (transient errors propagate)."""
    judgment_id = job.id
    try:
        record = _judge(res, job, contexts)
        try:
            with database_errors(), session_scope(res.db) as session:
                finish_judgment(session=session, judgment_id=judgment_id, verdict=record, token=token)
        except IntegrityError as exc:  # an image id from `res.image_ids` is gone (database replaced?)
            res.image_ids.clear()
            raise DatabaseUnavailable(
                f"verdict refers to rows that are gone, ids forgotten: {exc.orig}"
            ) from exc
        res.outages.recovered()
        _report(res, job, record.status, record=record)
        return JudgmentSummary(
            judgment_id=judgment_id,
            status=record.status,
            winner=record.winner,
            confidence=record.confidence,
            calibration_version=record.calibration_version,
        )
    except ClaimLost as exc:
        log.warning("judgment %s: result dropped, %s", judgment_id, exc)
        with database_errors(), session_scope(res.db) as session:
            return _summary(get_judgment(session=session, judgment_id=judgment_id), skipped=True)
    except PermanentError as exc:
        _close(res.db, judgment_id, JudgmentStatus.rejected, exc.code, exc.message, token)
        res.outages.recovered()
        _report(res, job, JudgmentStatus.rejected, error_code=exc.code)
        return JudgmentSummary(
            judgment_id=judgment_id, status=JudgmentStatus.rejected, error_code=exc.code, error=exc.message
        )
    except TransientError:
        raise
    except ConfigurationError as exc:  # retrying cannot help; the message names the setting to fix
        log.error("judgment %s failed: %s", judgment_id, exc.message)
        _close(res.db, judgment_id, JudgmentStatus.failed, exc.code, exc.message, token)
        _report(res, job, JudgmentStatus.failed, error_code=exc.code)
        return JudgmentSummary(
            judgment_id=judgment_id, status=JudgmentStatus.failed, error_code=exc.code, error=exc.message
        )
    except Exception as exc:
        log.exception("judgment %s failed", judgment_id)
        _close(
            res.db,
            judgment_id,
            JudgmentStatus.failed,
            "internal_error",
            f"{type(exc).__name__}: {exc}",
            token,
        )
        _report(res, job, JudgmentStatus.failed, error_code="internal_error")
        raise


def _park(res: Resources, job: ClaimedJudgment, token: str, exc: TransientError) -> JudgmentSummary:
    """A transient error: the row waits and is sent again after a backoff (or fails past the horizon)."""
    judgment_id = job.id
    res.outages.fault(exc)
    failures = job.transient_failures + 1
    delay = res.backoff.delay(failures)
    try:
        with database_errors(), session_scope(res.db) as session:
            status = park_judgment(
                session=session,
                judgment_id=judgment_id,
                token=token,
                code=exc.code,
                message=exc.message,
                retry_in_s=delay,
                horizon_s=res.backoff.horizon_s,
            )
    except DatabaseUnavailable as db_exc:
        raise DatabaseUnavailable(
            f"{exc.message}; and the database could not record it: {db_exc.message}"
        ) from exc
    if status is None:  # someone else took the row meanwhile: theirs is the outcome
        return JudgmentSummary(judgment_id=judgment_id, status=JudgmentStatus.running, skipped=True)
    if status == JudgmentStatus.failed:
        log.warning(
            "judgment %s: %s; transient errors outlasted the retry horizon: failed", judgment_id, exc.message
        )
        _report(res, job, JudgmentStatus.failed, error_code=exc.code)
    else:
        log.warning(
            "judgment %s: %s; waiting, next try in %.0f s (transient failure %d)",
            judgment_id,
            exc.message,
            delay,
            failures,
        )
    return JudgmentSummary(judgment_id=judgment_id, status=status, error_code=exc.code, error=exc.message)


def _report(
    res: Resources,
    job: ClaimedJudgment,
    status: JudgmentStatus,
    record: VerdictRecord | None = None,
    error_code: str | None = None,
) -> None:
    """Tell the observer how this run ended; an observer error never changes the outcome."""
    try:
        wait = None
        if job.created_at and job.started_at:  # SQLite hands back naive UTC timestamps
            start, created = (
                t if t.tzinfo else t.replace(tzinfo=UTC) for t in (job.started_at, job.created_at)
            )
            wait = max(0.0, (start - created).total_seconds())
        res.events.judgment_finished(
            JudgmentEvent(
                judgment_id=job.id,
                backend=job.backend,
                status=status,
                attempt=job.attempts,
                queue_wait_s=wait,
                winner=record.winner if record else None,
                invalid_reason=record.invalid_reason if record else None,
                error_code=error_code,
                timings=dict(record.timings) if record else {},
                usage=dict(record.usage) if record else {},
            )
        )
    except Exception:
        log.exception("pipeline observer failed for judgment %s", job.id)


def _judge(res: Resources, job: ClaimedJudgment, contexts: ContextMemo | None = None) -> VerdictRecord:
    """The steps of one judgment, each one call; returns what the ledger stores."""
    timings: dict[str, float] = {}
    if not job.prompt.strip():
        raise InvalidRequest("prompt is empty")
    user_id = job.user_id
    if user_id is None:  # the user may have been created after the judgment was submitted
        with database_errors(), session_scope(res.db) as session:
            tenant = tenant_name(session=session, tenant_id=job.tenant_id)
        user_id = id_of(resolve_user(db=res.db, tenant=tenant, user=job.user_ref))
    backend = res.backend_for(job.backend, job.options.get("protocol"))
    t = time.perf_counter()
    context_row, context = ensure_context(res=res, backend=backend, user_id=user_id, memo=contexts)
    timings["context_s"] = time.perf_counter() - t
    t = time.perf_counter()
    image_a, image_b = res.loader.load(job.image_a_uri), res.loader.load(job.image_b_uri)
    timings["images_s"] = time.perf_counter() - t
    if image_a.sha256 == image_b.sha256:
        raise InvalidRequest(
            "image_a and image_b are the same image (identical bytes): a preference needs two different images"
        )
    t = time.perf_counter()
    verdict = judge_pair(backend, context, job.prompt, image_a, image_b, swap=job.swap)
    timings["backend_s"] = time.perf_counter() - t
    ids = _image_ids(res, image_a, image_b)
    calibration = res.calibrations.get(res.db, backend.name, backend.model_id, backend.model_revision)
    return _verdict_record(
        verdict,
        backend,
        context_id=id_of(context_row),
        image_ids=(ids[image_a.sha256], ids[image_b.sha256]),
        swap=job.swap,
        timings=timings,
        trust=verdict_confidence(verdict, calibration, context_row.quality),
    )


def _verdict_record(
    verdict: PairVerdict,
    backend: Backend,
    *,
    context_id: int,
    image_ids: tuple[int, int],
    swap: bool,
    timings: dict[str, float],
    trust: dict[str, Any] | None = None,
) -> VerdictRecord:
    valid = verdict.outcome == Outcome.valid
    first = verdict.first
    usage: dict[str, int] = {}
    for part in (verdict.first, verdict.second):
        for k, v in (part.usage if part else {}).items():
            # counts of work add up over both orders; facts about the prompt are the same in both
            usage[k] = max(usage.get(k, 0), v) if k in _PER_PROMPT_USAGE else usage.get(k, 0) + v
    return VerdictRecord(
        status=JudgmentStatus.done if valid else JudgmentStatus.invalid,
        winner=verdict.winner,
        total_a=first.total_a if valid else None,
        total_b=first.total_b if valid else None,
        rationale=first.rationale or None,
        raw_outputs=verdict.raw_outputs,
        invalid_reason=verdict.invalid_reason,
        error=verdict.invalid_detail,
        dimensions=[
            DimensionRecord(name=d.name, score_a=d.score_a, score_b=d.score_b, reason=d.reason)
            for d in (first.dimensions if valid else [])
        ],
        context_id=context_id,
        image_a_id=image_ids[0],
        image_b_id=image_ids[1],
        judge_model=backend.model_id,
        model_revision=backend.model_revision,
        template_version=backend.template_version,
        decoding=backend.decoding,
        swap=swap,
        timings=timings,
        usage=usage,
        **(trust or {}),
    )


def record_failure(*, db: Engine, judgment_id: int, code: str, message: str, token: str | None) -> bool:
    """Give up on a judgment (retries exhausted): the reason stays on the row, if we still hold it."""
    return _close(db, judgment_id, JudgmentStatus.failed, code, message, token)


def _close(
    db: Engine, judgment_id: int, status: JudgmentStatus, code: str, message: str, token: str | None
) -> bool:
    with database_errors(), session_scope(db) as session:
        return close_with_error(
            session=session, judgment_id=judgment_id, status=status, code=code, message=message, token=token
        )


def _sha(img: NormalizedImage) -> str:
    return img.sha256


IMAGE_ID_CACHE = 100_000  # entries (~20 MB); the cache starts over when full


def _image_ids(res: Resources, *images: NormalizedImage) -> dict[str, int]:
    """Image row ids by sha256, written on first sight; known ones come from `res.image_ids`."""
    known = res.image_ids
    ids = {img.sha256: known[img.sha256] for img in images if img.sha256 in known}
    missing = [img for img in images if img.sha256 not in ids]
    if missing:
        with database_errors(), session_scope(res.db) as session:
            # rows locked in content order, so judgments of (A, B) and (B, A) cannot deadlock
            found = {img.sha256: _image_id(session, img) for img in sorted(missing, key=_sha)}
        if len(known) + len(found) > IMAGE_ID_CACHE:
            known.clear()
        known.update(found)  # only after the commit: a cached id always names a stored row
        ids.update(found)
    return ids


def _image_id(session: Session, img: NormalizedImage) -> int:
    return upsert_image(
        session=session,
        sha256=img.sha256,
        uri=img.uri,
        width=img.width,
        height=img.height,
        format=img.format,
        size_bytes=img.size_bytes,
    )


def _summary(row: Judgment | None, skipped: bool = False) -> JudgmentSummary:
    if row is None:
        raise LookupError("judgment vanished from the ledger")
    return JudgmentSummary(
        judgment_id=id_of(row),
        status=row.status,
        winner=row.winner,
        error_code=row.error_code,
        error=row.error,
        skipped=skipped,
        confidence=row.confidence,
        calibration_version=row.calibration_version,
    )
