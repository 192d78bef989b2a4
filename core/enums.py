"""The outcomes that travel between layers, as str enums (stored and sent as their short strings).

Stored columns hold the value (`"done"`), so SQLite and Postgres need no database enum types, and a
JSON result carries the same string; code compares against the enum, never a bare literal.
"""

from __future__ import annotations

from enum import StrEnum


class JudgmentStatus(StrEnum):
    """Where a ledger row stands. `queued` → `running` → one of the terminal statuses, with `waiting`
    between runs while transient trouble lasts (until the retry horizon, then `failed`)."""

    queued = "queued"  # ledger row written, message sent (or about to be)
    running = "running"  # a worker took it (and renews its claim's heartbeat while it runs)
    waiting = "waiting"  # transient trouble (store, database, model server): retried at retry_at
    done = "done"  # valid verdict stored
    invalid = "invalid"  # the model answered, but not in the protocol: reason + raw text kept
    rejected = "rejected"  # bad input (missing image, unknown user...): permanent, reason kept
    failed = "failed"  # transient errors outlasted the retries, or an internal error
    cancelled = "cancelled"  # its batch was cancelled before a worker took it


TERMINAL_STATUSES = frozenset(
    {
        JudgmentStatus.done,
        JudgmentStatus.invalid,
        JudgmentStatus.rejected,
        JudgmentStatus.failed,
        JudgmentStatus.cancelled,
    }
)

RETRYABLE_ON_RESEND = frozenset({JudgmentStatus.rejected, JudgmentStatus.failed, JudgmentStatus.cancelled})
"""A re-send puts these back in the queue (the input may have been fixed); verdicts stay."""

RESCORABLE = frozenset({JudgmentStatus.done, JudgmentStatus.invalid})
"""Finished judgments whose verdict a re-scoring may replace (kept as history)."""


class Winner(StrEnum):
    """A judgment's verdict, in the caller's (A, B) order."""

    A = "A"
    B = "B"
    tie = "tie"
    inconsistent = "inconsistent"  # both orders judged and they disagree


class Outcome(StrEnum):
    """Whether a model answer followed the protocol (`invalid` answers keep their reason and raw text)."""

    valid = "valid"
    invalid = "invalid"


class ContextStatus(StrEnum):
    ready = "ready"
    failed = "failed"


class RunStatus(StrEnum):
    """A long job's status: a re-scoring run or a prompt-optimization run."""

    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


FINISHED_RUNS = frozenset({RunStatus.done, RunStatus.failed})
