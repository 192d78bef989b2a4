"""A channel closed after the broker went away must not crash the worker (kombu 5.7 Redis transport).

Reproduces, on a real Redis, the state Celery's consumer reaches when the broker restarts while a
message is unacknowledged: `collect()` has closed the transport, the channel is still open without a
pool, and the consumer closes the connection again (`tasks/kombu_fixes.py`).
"""

from __future__ import annotations

from pathlib import Path

import redis
from kombu import Connection, Exchange, Queue
from kombu.common import ignore_errors

import tasks  # noqa: F401 - importing the app installs the guard, as in every worker
from ops.stack import redis_server


def test_closing_a_half_closed_connection_with_unacked_messages_is_ignored(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        conn = Connection(url)
        channel = conn.default_channel
        queue = Queue("loss", Exchange("loss"), "loss")
        queue(channel).declare()
        conn.Producer().publish({"x": 1}, routing_key="loss", exchange=queue.exchange)
        got: list[object] = []
        consumer = conn.Consumer([queue], callbacks=[lambda body, message: got.append(message)], no_ack=False)
        consumer.consume()
        conn.drain_events(timeout=5)
        assert len(got) == 1  # delivered, not acknowledged
        assert redis.Redis.from_url(url).hlen("unacked") == 1
        # what the first collect() leaves behind when the broker is gone mid-close
        conn.transport.client = None
        channel._pool = None
        ignore_errors(conn, conn.close)  # raised AttributeError ('hostname') without the guard
        # the message was not lost: still in the unacked set, for the visibility timeout to restore
        assert redis.Redis.from_url(url).hlen("unacked") == 1
