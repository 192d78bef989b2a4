"""Re-scoring judgments whose model, template or user context is no longer current.

A judgment is stale when the judge model or its revision changed, the prompt template changed, its
decoding parameters changed (sampling, penalties, stop strings, grammar), the user's context changed
(new references, a new reasoner, template or reasoner decoding), or a person flagged it. Stale
verdicts are archived (`judgment_history`) and their rows put back in the queue, in chunks, under a
run whose key (one per night by default) makes a second run of the same night add nothing unless rows
went stale since it finished, which a follow-up run (`<key>+2`, `+3`, ...) re-scores. A run that
crashed resumes where it stopped: re-queued rows are no longer stale, so they are not found again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from core.enums import RunStatus
from core.errors import PigrewardError
from models.db import session_scope
from models.references import list_references
from models.rescoring import (
    archive_and_requeue,
    candidates,
    count_requeued,
    ensure_run,
    finish_rescore_run,
    follow_up_run,
)
from models.tables import Judgment, UserContext, id_of
from workers.backends.base import Backend
from workers.pipeline import Resources, references_hash

PAGE = 1000


@dataclass
class RescoreReport:
    run_key: str
    dry_run: bool
    requeued: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    scanned: int = 0
    skipped_backends: dict[str, str] = field(default_factory=dict)  # backend -> why its versions are unknown
    already_done: bool = False
    follow_up_of: str | None = None  # the finished run whose newly stale rows this run re-scores
    requeued_ids: list[int] = field(default_factory=list)  # by this call


class _Versions:
    """Current versions per (backend, protocol), asked of each backend once per run."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.cache: dict[tuple[str, str | None], Backend | None] = {}
        self.errors: dict[str, str] = {}

    def backend(self, name: str, protocol: str | None) -> Backend | None:
        key = (name, protocol)
        if key not in self.cache:
            try:
                backend = self.res.backend_for(name, protocol)
                backend.context_identity  # noqa: B018 - asks an LVLM server for its models now
                self.cache[key] = backend
            except PigrewardError as exc:
                self.errors[f"{name}/{protocol or ''}"] = exc.message
                self.cache[key] = None
        return self.cache[key]


def why_stale(
    judgment: Judgment, context: UserContext | None, backend: Backend, current_refs: str | None
) -> str | None:
    """The reason this finished judgment should be judged again, or None if it is current."""
    if judgment.flagged_at is not None:
        return "flagged"
    if judgment.judge_model != backend.model_id or judgment.model_revision != backend.model_revision:
        return "judge_model"
    if judgment.template_version != backend.template_version:
        return "template"
    if (judgment.decoding or {}) != backend.decoding:
        return "decoding"
    author = backend.context_identity
    if context is not None and (
        context.references_hash != current_refs
        or context.model_id != author.model_id
        or context.model_revision != author.revision
        or context.template_version != backend.context_version
    ):
        return "context"
    return None


def find_stale(
    res: Resources, *, since: datetime | None = None, progress: Callable[[int], None] | None = None
) -> tuple[list[tuple[int, str]], dict[str, str], int]:
    """All stale judgments as (id, reason), backends whose versions could not be read, rows scanned."""
    versions = _Versions(res)
    refs: dict[int, str] = {}
    stale: list[tuple[int, str]] = []
    after, scanned = 0, 0
    while True:
        with session_scope(res.db) as session:
            page = candidates(session=session, after_id=after, limit=PAGE, since=since)
            for judgment, _ in page:
                if judgment.user_id is not None and judgment.user_id not in refs:
                    rows = list_references(session=session, user_id=judgment.user_id)
                    refs[judgment.user_id] = references_hash(
                        [(r.prompt, r.chosen_uri, r.rejected_uri) for r in rows]
                    )
        if not page:
            return stale, versions.errors, scanned
        for judgment, context in page:
            backend = versions.backend(judgment.backend, judgment.options.get("protocol"))
            if backend is not None:
                reason = why_stale(judgment, context, backend, refs.get(judgment.user_id or -1))
                if reason:
                    stale.append((id_of(judgment), reason))
        scanned += len(page)
        after = id_of(page[-1][0])
        if progress:
            progress(len(page))


def run_rescore(
    res: Resources,
    *,
    run_key: str,
    send: Callable[[Sequence[int]], None],
    since: datetime | None = None,
    dry_run: bool = False,
    chunk_size: int = 100,
    progress: Callable[[int], None] | None = None,
) -> RescoreReport:
    """Find the stale set and re-queue it under `run_key`; `send` enqueues a chunk of judgment ids."""
    report = RescoreReport(run_key=run_key, dry_run=dry_run)
    params = {"since": since.isoformat() if since else None}
    stale: list[tuple[int, str]] | None = None
    if not dry_run:
        with session_scope(res.db) as session:
            run = ensure_run(session=session, run_key=run_key, params=params)
        if run.status == RunStatus.done:
            # rows that went stale after that run finished (a new reference, a flag) are re-scored by a
            # follow-up run of the same key; with nothing newly stale, the run adds nothing
            stale, report.skipped_backends, report.scanned = find_stale(res, since=since)
            if not stale:
                report.already_done = True
                report.requeued, report.by_reason = run.requeued, dict(run.by_reason)
                return report
            with session_scope(res.db) as session:
                run = follow_up_run(session=session, run_key=run_key, params=params)
            report.run_key, report.follow_up_of = run.run_key, run_key
        run_id = id_of(run)
    if stale is None:
        stale, report.skipped_backends, report.scanned = find_stale(res, since=since)
    reasons = Counter(reason for _, reason in stale)
    if dry_run:
        report.by_reason = dict(reasons)
        report.requeued = 0
        return report
    for start in range(0, len(stale), chunk_size):
        chunk = stale[start : start + chunk_size]
        with session_scope(res.db) as session:
            requeued = {
                jid
                for jid, reason in chunk
                if archive_and_requeue(session=session, judgment_id=jid, reason=reason, run_id=run_id)
            }
            count_requeued(
                session=session, run_id=run_id, reasons=[reason for jid, reason in chunk if jid in requeued]
            )
        if requeued:  # after the commit: the ledger knows before the broker does
            send(sorted(requeued))
            report.requeued_ids.extend(sorted(requeued))
        if progress:
            progress(len(chunk))
    with session_scope(res.db) as session:
        run = finish_rescore_run(session=session, run_id=run_id)
        report.requeued, report.by_reason = run.requeued, dict(run.by_reason)
    return report
