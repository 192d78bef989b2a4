"""What the sweeper asks the broker, over Celery's own connection: the same on Redis and RabbitMQ.

Queue depths come from a passive queue declaration (messages ready, not those delivered to workers);
the sentinel is one persistent message in a durable queue that no worker consumes, so it is there
exactly as long as the broker kept its messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu import Connection, Queue
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as KombuOperationalError

from core.errors import BrokerUnavailable
from tasks.submit import send_judgments

log = logging.getLogger(__name__)

SENTINEL_QUEUE = "pigreward.sentinel"
BULK_CHUNK = 50
"""Rows per `judge_chunk` message when re-sending to the `bulk` queue."""


@contextmanager
def _reachable(conn: Connection) -> Iterator[Connection]:
    """The transport's connection errors (redis, amqp, sockets) as one `BrokerUnavailable`."""
    errors: tuple[type[BaseException], ...] = (KombuOperationalError, OSError, *conn.connection_errors)
    try:
        with conn:
            yield conn
    except errors as exc:
        raise BrokerUnavailable(f"broker unreachable: {exc}") from exc


class CeleryBroker:
    """The `workers.recovery.Broker` of a Celery app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def depth(self, queue: str) -> int:
        with _reachable(self.app.connection_for_read()) as conn:
            channel: Any = conn.channel()  # the transport's channel: kombu types it as the bare base
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:  # no such queue: nothing waits in it
                return 0
            finally:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001 - RabbitMQ closed it after the 404 already
                    log.debug("channel already closed")

    def sentinel_present(self) -> bool:
        return self.depth(SENTINEL_QUEUE) > 0

    def plant_sentinel(self, epoch: str) -> None:
        queue = Queue(SENTINEL_QUEUE, durable=True)
        with _reachable(self.app.connection_for_write()) as conn:
            conn.Producer().publish(
                {"epoch": epoch},
                routing_key=SENTINEL_QUEUE,
                declare=[queue],
                delivery_mode=2,
                retry=True,
            )

    def send(self, queue: str, judgment_ids: Sequence[int]) -> None:
        chunk = BULK_CHUNK if queue == "bulk" else 1
        send_judgments(judgment_ids, chunk_size=chunk, queue=queue)


def consumers_by_queue(app: Celery, timeout_s: float = 1.0) -> dict[str, list[str]]:
    """Which workers consume which queue, as the workers answer a broadcast (Redis and RabbitMQ alike)."""
    replies = app.control.inspect(timeout=timeout_s).active_queues() or {}
    found: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            found.setdefault(str(queue.get("name")), []).append(worker)
    return found


def waiting_without_consumer(app: Celery, queues: Sequence[str], timeout_s: float = 1.0) -> dict[str, int]:
    """Queues holding messages that no worker consumes, with their depth: work that would wait forever.

    Cheap when nothing waits (one passive declaration per queue); asks the workers only otherwise.
    """
    broker = CeleryBroker(app)
    depths = {q: broker.depth(q) for q in queues}
    waiting = {q: n for q, n in depths.items() if n}
    if not waiting:
        return {}
    consumed = consumers_by_queue(app, timeout_s)
    return {q: n for q, n in waiting.items() if not consumed.get(q)}


def no_consumer_hint(waiting: dict[str, int]) -> str | None:
    """One line saying what to start, or None when nothing waits without a consumer."""
    if not waiting:
        return None
    which = ", ".join(f"'{q}' ({n} waiting)" for q, n in sorted(waiting.items()))
    only = ",".join(sorted(waiting))
    return (
        f"no worker consumes {which}: start `pigreward worker` (every queue) or `pigreward worker -Q {only}`"
    )
