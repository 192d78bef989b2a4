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


class ExpectedFaults(logging.Filter):
    """Rewrites Celery's tracebacks for faults the queue absorbs into one WARNING line each:
    a pool process that died (killed, out of memory: its message is requeued, acks_late), and an
    acknowledgement that could not be sent because the broker connection was lost."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(a, WorkerLostError) for a in args):
            self._rewrite(record, LOST_POOL_PROCESS, (args[0],))
        elif isinstance(record.msg, str) and record.msg.startswith(("Couldn't ack", "Couldn't reject")):
            self._rewrite(record, LOST_ACK, args[:2])
        return True

    @staticmethod
    def _rewrite(record: logging.LogRecord, msg: str, args: tuple[object, ...]) -> None:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info, record.exc_text = msg, args, None, None


def install() -> None:
    """Attach the filter to the logger Celery reports these faults on (idempotent).

    Also silences Celery's 8-line notice, on every broker connection loss, that tasks still running
    are not cancelled: we keep them running on purpose (their claims make a redelivery a no-op, and
    the threads pool cannot cancel anyway).
    """
    warnings.filterwarnings(
        "ignore", message=r"\s*In Celery 5.1 we introduced", category=CPendingDeprecationWarning
    )
    logger = logging.getLogger("celery.worker.request")
    if not any(isinstance(f, ExpectedFaults) for f in logger.filters):
        logger.addFilter(ExpectedFaults())
