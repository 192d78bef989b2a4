"""Expected faults logged as one line instead of a traceback (what happened, what happens next)."""

from __future__ import annotations

import logging
import warnings

from billiard.exceptions import WorkerLostError
from celery.exceptions import CPendingDeprecationWarning

LOST_POOL_PROCESS = (
    "a pool process died (%s): its task goes back to the queue and its judgments are taken back when "
    "their claims go silent"
)
LOST_ACK = (
    "message %r could not be acknowledged, the broker connection was lost (%s): the broker may deliver "
    "it again, and the claim on its judgment makes a second delivery a no-op"
)
LOST_RESULT_BACKEND = (
    "result backend unreachable during %s (%s): retrying, %s tries left; the judgment's verdict is "
    "already in the ledger"
)


class ExpectedFaults(logging.Filter):
    """Rewrites Celery's tracebacks for faults the queue absorbs into one WARNING line each:
    a pool process that died (killed, out of memory: its message is requeued, acks_late), an
    acknowledgement that could not be sent because the broker connection was lost, and a result
    backend (Redis) that went away while a task's result was stored (Celery retries it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        msg = record.msg if isinstance(record.msg, str) else ""
        if any(isinstance(a, WorkerLostError) for a in args):
            self._rewrite(record, LOST_POOL_PROCESS, (args[0],))
        elif msg.startswith(("Couldn't ack", "Couldn't reject")):
            self._rewrite(record, LOST_ACK, args[:2])
        elif msg.startswith("Failed operation") and len(args) == 2:
            error = record.exc_info[1] if record.exc_info else None
            self._rewrite(record, LOST_RESULT_BACKEND, (args[0], _one_line(error), args[1]))
        return True

    @staticmethod
    def _rewrite(record: logging.LogRecord, msg: str, args: tuple[object, ...]) -> None:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info, record.exc_text = msg, args, None, None


def _one_line(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "unknown error"


LOGGERS = ("celery.worker.request", "celery.backends.base")
"""Where Celery reports the faults above."""


def install() -> None:
    """Attach the filter to the loggers Celery reports these faults on (idempotent).

    Also silences Celery's 8-line notice, on every broker connection loss, that tasks still running
    are not cancelled: we keep them running on purpose (their claims make a redelivery a no-op, and
    the threads pool cannot cancel anyway).
    """
    warnings.filterwarnings(
        "ignore", message=r"\s*In Celery 5.1 we introduced", category=CPendingDeprecationWarning
    )
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedFaults) for f in logger.filters):
            logger.addFilter(ExpectedFaults())
