"""Running the backends on the queue: registering users, planning against the ledger, judging, reading back.

Running
=======

Per backend: users and references are registered (idempotent), each user's context is bootstrapped
(queue ``context``), then the pairs still to judge go through `tasks.submit_judgments` in chunks
(queue ``bulk``) under one batch per run, and the harness waits on the ledger with a progress bar.
On the embedded default (``memory://`` broker) an in-process worker runs them; otherwise external
workers must consume ``context`` and ``bulk`` (``pigreward worker``). Baselines run in this process
on the same image store, read and normalized as workers do (`bench.accuracy.baselines`).

Resuming
========

Every judgment is a ledger row with a natural key (tenant, user, prompt, images, backend, options),
so a second run finds the rows of the first. Rows already finished (``done``/``invalid``) for the
current judge model, template and user context are reused without sending anything; finished rows
whose model, template or context (the user's references) changed are archived and judged again, as
`pigreward rescore` would; rejected, failed, cancelled and unfinished rows are sent again. On the
embedded default, rows left ``running`` by a killed earlier run are released first (only this
process's in-process worker could hold them). Each file gets its own tenant (``bench-<file stem>`` by
default), and a user whose stored references differ from the file is refused rather than mixed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bench.accuracy.format import Benchmark, BenchmarkError, BenchUser
from bench.accuracy.metrics import Outcome, VerdictTrust
from bench.accuracy.specs import BackendSpec
from core.enums import JudgmentStatus
from core.errors import PigrewardError
from models.batches import create_batch
from models.claims import release_claim
from models.db import session_scope
from models.judgments import JudgmentSpec, judgments_by_ids, judgments_by_keys
from models.references import add_reference, list_references
from models.rescoring import archive_and_requeue
from models.tables import Judgment, UserContext, id_of
from models.tenants import ensure_tenant
from models.users import ensure_user
from pigreward.progress import bar, wait_for_judgments
from workers.backends.base import Backend
from workers.pipeline import Resources, references_hash
from workers.trust import quality_score

log = logging.getLogger(__name__)

_FINISHED = (JudgmentStatus.done, JudgmentStatus.invalid)
_CONFLICTS_SHOWN = 10


@dataclass
class LedgerCounts:
    """What one backend's run did with the ledger."""

    judgments: int = 0
    reused: int = 0  # finished rows for the current versions: nothing sent
    submitted: int = 0  # new, unfinished, rejected or failed rows: sent
    rejudged: int = 0  # finished for an older model, template or context: archived, sent again
    released: int = 0  # left `running` by a killed embedded run


@dataclass
class BackendRun:
    """One backend's judgments: every test pair's spec (file order), which to send, the ids they got."""

    spec: BackendSpec
    specs: list[JudgmentSpec]
    pending: list[int]  # positions in specs still to judge
    ids: dict[int, int]  # position in specs -> judgment id
    counts: LedgerCounts


def default_tenant(name: str) -> str:
    """The tenant a benchmark's users live in: ``bench-<file stem>`` (slugged, at most 100 characters)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "set"
    return f"bench-{slug}"[:100]


# ------------------------------------------------------------------------------------------- users


def register_users(bench: Benchmark, tenant: str, engine: sa.Engine) -> None:
    """Users and reference pairs (idempotent); a user whose stored references differ is refused."""
    with session_scope(engine) as session:
        tenant_id = id_of(ensure_tenant(session=session, name=tenant))
        conflicts = [c for u in bench.users if (c := _register_user(session, tenant_id, u)) is not None]
        if conflicts:
            more = " ..." if len(conflicts) > _CONFLICTS_SHOWN else ""
            raise BenchmarkError(
                f"users of tenant {tenant!r} already hold reference pairs this file does not list: "
                f"{', '.join(conflicts[:_CONFLICTS_SHOWN])}{more}. The harness never deletes references: "
                "run with another tenant, or delete these users first"
            )


def _register_user(session: Session, tenant_id: int, user: BenchUser) -> str | None:
    """Add the user's missing reference pairs; describe the stored pairs the file lacks (None if none)."""
    user_id = id_of(ensure_user(session=session, tenant_id=tenant_id, external_id=user.user))
    wanted = dict.fromkeys((r.prompt, r.chosen, r.rejected) for r in user.references)
    stored = _stored(session, user_id)
    for prompt, chosen, rejected in (key for key in wanted if key not in stored):
        add_reference(
            session=session, user_id=user_id, prompt=prompt, chosen_uri=chosen, rejected_uri=rejected
        )
    extra = stored - set(wanted)
    return f"{user.user!r} ({len(extra)} stored pair(s) not in the file)" if extra else None


def _stored(session: Session, user_id: int) -> set[tuple[str, str, str]]:
    return {
        (r.prompt, r.chosen_uri, r.rejected_uri) for r in list_references(session=session, user_id=user_id)
    }


# ------------------------------------------------------------------------------------------ planning


def plan_run(res: Resources, bench: Benchmark, tenant: str, spec: BackendSpec, embedded: bool) -> BackendRun:
    """Find what the ledger already holds for this backend; archive stale verdicts; list what to send."""
    from tasks.submit import judgment_spec

    specs = [
        judgment_spec(u.user, t.prompt, t.image_a, t.image_b, spec.options, tenant)
        for u in bench.users
        for t in u.tests
    ]
    run = BackendRun(spec, specs, pending=[], ids={}, counts=LedgerCounts(judgments=len(specs)))
    with session_scope(res.db) as session:
        tenant_id = id_of(ensure_tenant(session=session, name=tenant))
        keys = [s.key(tenant_id) for s in specs]
        found = judgments_by_keys(session=session, keys=keys)
        planner = _Planner(session, res, run, embedded)
        decided: dict[str, bool] = {}  # key -> reused (a key repeated in the file is decided once)
        for i, key in enumerate(keys):
            if key not in found:
                run.pending.append(i)
                continue
            judgment, context = found[key]
            run.ids[i] = id_of(judgment)
            if key not in decided:
                decided[key] = planner.reuse(judgment, context)
            if decided[key]:
                run.counts.reused += 1
            else:
                run.pending.append(i)
    run.counts.submitted = len(run.pending) - run.counts.rejudged
    return run


class _Planner:
    """Decides whether one stored row is reused; archives a stale verdict, releases an orphaned claim."""

    def __init__(self, session: Session, res: Resources, run: BackendRun, embedded: bool) -> None:
        self.session = session
        self.res = res
        self.run = run
        self.embedded = embedded
        self._backend: Backend | None = None  # asked for its versions once, on the first finished row
        self._refs_hash: dict[int, str] = {}  # user id -> hash of the stored references

    def reuse(self, judgment: Judgment, context: UserContext | None) -> bool:
        """Whether the row's stored verdict counts as is; False: the pair is sent (again)."""
        if judgment.status in _FINISHED:
            return self._current(judgment, context)
        # a running row on the embedded default: only this process's in-process worker could hold
        # it, so it is a killed earlier run's (this run's worker has not started yet)
        orphaned = judgment.status == JudgmentStatus.running and self.embedded
        if orphaned and release_claim(session=self.session, judgment_id=id_of(judgment)):
            self.run.counts.released += 1
        return False

    def _current(self, judgment: Judgment, context: UserContext | None) -> bool:
        """A finished verdict still valid for the backend's versions; otherwise archived and requeued."""
        from workers.rescoring import why_stale

        backend = self.backend()
        reason = why_stale(judgment, context, backend, self._references_hash(judgment.user_id))
        if reason is None:
            return True
        if archive_and_requeue(session=self.session, judgment_id=id_of(judgment), reason=reason, run_id=None):
            self.run.counts.rejudged += 1
        return False

    def backend(self) -> Backend:
        """The backend whose versions a verdict must match; an unreachable one stops the run."""
        if self._backend is None:
            spec = self.run.spec
            try:
                backend = self.res.backend_for(spec.name, spec.protocol)
                backend.context_identity  # noqa: B018 - an LVLM backend asks its server for the model now
            except PigrewardError as exc:
                raise BenchmarkError(
                    f"cannot read the versions of backend {spec.label!r}: {exc.message}"
                ) from exc
            self._backend = backend
        return self._backend

    def _references_hash(self, user_id: int | None) -> str | None:
        """The hash of the user's stored references, which a current context was built from."""
        if user_id is None:
            return None
        if user_id not in self._refs_hash:
            rows = list_references(session=self.session, user_id=user_id)
            self._refs_hash[user_id] = references_hash(
                [(r.prompt, r.chosen_uri, r.rejected_uri) for r in rows]
            )
        return self._refs_hash[user_id]


# ------------------------------------------------------------------------------------------- judging


def judge_on_queue(
    runs: Sequence[BackendRun],
    bench: Benchmark,
    tenant: str,
    *,
    embedded: bool,
    wait_contexts: bool,
    chunk_size: int,
    progress: bool,
    timeout_s: float,
    engine: sa.Engine,
) -> int | None:
    """Bootstrap contexts, send what is pending, wait on the ledger; returns the batch id (if any).

    Contexts are built ahead (one task per user, as `pigreward demo` does) only when their results
    can be read back (`wait_contexts`); otherwise each user's first judgment builds it.
    """
    from tasks import app, submit_judgments
    from tasks.embedded import embedded_worker

    pending = sum(len(r.pending) for r in runs)
    if not pending:
        return None
    with session_scope(engine) as session:
        batch = create_batch(
            session=session, tenant=tenant, name=f"bench accuracy {bench.name}", kind="bench", total=pending
        )
        batch_id = id_of(batch)
    with embedded_worker(app) if embedded else contextlib.nullcontext():
        for run in (r for r in runs if r.pending):
            if wait_contexts:
                _bootstrap_contexts(run, tenant, progress=progress, timeout_s=timeout_s)
            sent = submit_judgments(
                [run.specs[i].model_copy(update={"batch_id": batch_id}) for i in run.pending],
                chunk_size=chunk_size,
            )
            run.ids.update(zip(run.pending, sent, strict=True))
        all_ids = sorted({jid for run in runs for jid in run.ids.values()})
        wait_for_judgments(engine, all_ids, progress=progress, timeout_s=timeout_s)
    return batch_id


def _bootstrap_contexts(run: BackendRun, tenant: str, *, progress: bool, timeout_s: float) -> None:
    """Build the context of each user with pending pairs (queue ``context``) and wait for them."""
    from tasks import bootstrap_context

    users = list(dict.fromkeys(run.specs[i].user for i in run.pending))
    results = [
        bootstrap_context.delay(u, tenant=tenant, backend=run.spec.name, protocol=run.spec.protocol)
        for u in users
    ]
    with bar(len(results), f"contexts ({run.spec.label})", progress and bool(results), unit="user") as pbar:
        for result in results:
            outcome = result.get(timeout=timeout_s, disable_sync_subtasks=False)
            if outcome["status"] != "ready":
                log.warning("context of %s: %s", outcome["user"], outcome.get("error"))
            pbar.update(1)


# ----------------------------------------------------------------------------------------- reading


def read_outcomes(run: BackendRun, bench: Benchmark, engine: sa.Engine) -> tuple[list[Outcome], list[str]]:
    """The stored verdicts of a backend's test pairs, in file order, and the model versions seen.

    Each finished verdict carries its trust signals: the confidence as stored and raw, the
    calibration that was active, and the quality score of the user's context the judgment used.
    """
    with session_scope(engine) as session:
        rows = judgments_by_ids(session=session, ids=run.ids.values())
        qualities = _context_qualities(session, {r.context_id for r in rows.values() if r.context_id})
    labels = [(u.user, t.label) for u in bench.users for t in u.tests]
    out = []
    versions: Counter[str] = Counter()
    for i, (user, label) in enumerate(labels):
        jid = run.ids.get(i)
        row = rows.get(jid) if jid is not None else None
        if row is None:
            out.append(Outcome(user, label, None, "missing"))
            continue
        winner = row.winner if row.status == JudgmentStatus.done else None
        trust = _trust(row, qualities) if row.status in _FINISHED else None
        out.append(Outcome(user, label, winner, str(row.status), bool(row.swap), row.id, trust))
        if row.status in _FINISHED:
            versions[f"{row.judge_model} rev {row.model_revision}, template {row.template_version}"] += 1
    return out, [f"{v} ({n})" for v, n in versions.most_common()]


def _context_qualities(session: Session, ids: set[int]) -> dict[int, float | None]:
    """Context id -> the quality score of that context (None where its check was not computed)."""
    out: dict[int, float | None] = {}
    distinct = sorted(ids)
    for start in range(0, len(distinct), 500):
        stmt = select(UserContext.id, UserContext.quality).where(
            col(UserContext.id).in_(distinct[start : start + 500])
        )
        for context_id, quality in session.exec(stmt):
            if context_id is not None:
                out[context_id] = quality_score(dict(quality) if quality else None)
    return out


def _trust(row: Judgment, qualities: dict[int, float | None]) -> VerdictTrust:
    """A finished verdict's trust signals; the context's stored quality, else the one it was judged with."""
    signals = row.confidence_signals or {}
    quality = qualities.get(row.context_id) if row.context_id is not None else None
    if quality is None and isinstance(signals.get("context_quality"), int | float):
        quality = float(signals["context_quality"])
    return VerdictTrust(
        confidence=row.confidence,
        confidence_raw=row.confidence_raw,
        calibration_version=row.calibration_version,
        source=signals.get("source"),
        context_quality=quality,
        judge_model=row.judge_model,
        model_revision=row.model_revision,
    )
