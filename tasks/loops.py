"""A background loop for a worker process that must survive anything it meets."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.errors import PigrewardError

log = logging.getLogger(__name__)

STOP = threading.Event()
"""Set when the worker shuts down: every loop ends."""


class Loop:
    """Call `step` every `interval_s()` seconds in a daemon thread until `STOP` is set.

    A failing step is one WARNING line when the failures start and one when it works again.
    """

    def __init__(self, name: str, interval_s: Callable[[], float], step: Callable[[], object]) -> None:
        self.name, self.interval_s, self.step = name, interval_s, step
        self.failing: str | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Loop:
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        while not STOP.wait(self.interval_s()):
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a loop that dies stops recovery
                message = exc.message if isinstance(exc, PigrewardError) else f"{type(exc).__name__}: {exc}"
                if self.failing is None:
                    log.warning("%s: %s; trying again every %.0f s", self.name, message, self.interval_s())
                self.failing = message
                continue
            if self.failing is not None:
                log.warning("%s: working again", self.name)
                self.failing = None
