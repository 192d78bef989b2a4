"""Faults the queue absorbs are logged as one WARNING line, not a traceback (tasks.logs)."""

from __future__ import annotations

import logging
import sys

import pytest
from billiard.exceptions import WorkerLostError

from tasks import logs


def _record(name: str, msg: str, args: tuple[object, ...], error: BaseException | None) -> logging.LogRecord:
    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize(
    ("name", "msg", "args", "error", "expected"),
    [
        (
            "celery.backends.base",
            "Failed operation %s. Retrying %s more times.",
            ("_store_result", 59),
            ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
            "result backend unreachable during _store_result (ConnectionError: Error 111",
        ),
        (
            "celery.worker.request",
            "Couldn't ack %r, reason:%r",
            (7, ConnectionResetError(104)),
            None,
            "message 7 could not be acknowledged",
        ),
        (
            "celery.worker.request",
            "Task handler raised error: %r",
            (WorkerLostError("signal 9"),),
            None,
            "a pool process died",
        ),
    ],
)
def test_expected_faults_become_one_warning_line(
    name: str, msg: str, args: tuple[object, ...], error: BaseException | None, expected: str
) -> None:
    record = _record(name, msg, args, error)
    assert logs.ExpectedFaults().filter(record)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage().startswith(expected), record.getMessage()


def test_other_records_keep_their_traceback() -> None:
    record = _record("celery.backends.base", "Something else %s", ("x",), ValueError("boom"))
    logs.ExpectedFaults().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_install_attaches_to_every_logger_once() -> None:
    logs.install()
    logs.install()
    for name in logs.LOGGERS:
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, logs.ExpectedFaults)]
        assert len(filters) == 1, name
