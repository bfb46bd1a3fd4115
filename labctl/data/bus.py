"""The in-process bus: live listeners (progress line, later the TUI and MQTT) see every record.

Listeners are called synchronously and must be quick; they are *views*. The journal is written
first and is the truth, so a slow or failing listener can never lose data — a listener that raises
is dropped with a log line instead of stopping the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Status:
    """What a run is doing now, for progress displays (not journaled)."""

    state: str
    step: int
    step_description: str
    elapsed_s: float
    values: dict[str, float]
    context: dict[str, Any]


Listener = Callable[[object], None]


class Bus:
    """Fan-out of records (Sample, Event, Status) to live listeners."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def publish(self, record: object) -> None:
        """Hand a record to every listener."""
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:
                log.exception("bus listener %r failed and was removed", listener)
                self._listeners.remove(listener)
