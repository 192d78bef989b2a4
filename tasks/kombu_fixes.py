"""A guard for a kombu 5.7 Redis-transport crash on broker loss (the worker's main process died of it).

When the broker goes away while a channel holds unacknowledged messages, Celery's consumer first
`collect()`s the connection, which closes the transport (`transport.client = None`) even though the
channel's close failed half-way, then `close()`s it again. The second close tries to give the unacked
messages back, needs a new Redis pool for that, and kombu builds its parameters from the transport's
client, now None: `AttributeError: 'NoneType' object has no attribute 'hostname'`. That is not one of
the errors Celery's reconnect path ignores, so the main process stopped ("Unrecoverable error") and
waited for its supervisor. Seen in the fault suite's broker restart (kombu 5.7.0, celery 5.7.0).

The guard raises the transport's own connection error instead, which the reconnect path ignores: the
messages stay in the unacked set, where Redis's visibility timeout restores them, and the sweeper
re-sends whatever the restarted broker no longer holds (claims make a second delivery a no-op).
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from kombu.transport import redis as redis_transport

_GUARDED = "_pigreward_guarded"


def install() -> None:
    """Guard `Channel._connparams` (idempotent)."""
    channel: Any = redis_transport.Channel
    original = channel._connparams
    if getattr(original, _GUARDED, False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection is already closed")
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _GUARDED, True)
    channel._connparams = _connparams
