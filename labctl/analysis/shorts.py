"""Time to a short under a held stack pressure: the result of a pressure-hold short watch.

Li creeps through the separator's pores at high stack pressure and shorts the cell even with no
current flowing (DOMAIN.md §2.2, §4). The hold is timed from the end of the last `set` step before
the short (when the pressure reached its level), or from the start of the run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from labctl.data import EventKind, Journal


@dataclass
class ShortWatch:
    """How long the cell held, and whether and when it shorted."""

    shorted: bool
    time_to_short_s: float | None
    watched_s: float
    hold_pressure_pa: float | None
    probes: int
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for result.json."""
        return {
            "shorted": self.shorted,
            "time_to_short_h": None
            if self.time_to_short_s is None
            else round(self.time_to_short_s / 3600, 4),
            "watched_h": round(self.watched_s / 3600, 4),
            "hold_pressure_MPa": None
            if self.hold_pressure_pa is None
            else round(self.hold_pressure_pa / 1e6, 4),
            "probes": self.probes,
            "short": self.message,
        }


def short_watch(journal: Journal) -> ShortWatch:
    """Time from reaching the hold pressure to the first short the short detector fired, if any."""
    events = list(journal.events())
    if not events:
        return ShortWatch(False, None, 0.0, None, 0, None)
    kinds = {e.step: e.data.get("kind") for e in events if e.kind is EventKind.STEP_STARTED}
    short = next(
        (e for e in events if e.kind is EventKind.DETECTOR and e.data.get("type") == "short_circuit"), None
    )
    end_ns = short.data.get("t_ns", short.t_ns) if short is not None else events[-1].t_ns
    hold_start = events[0].t_ns
    for event in events:
        if event.t_ns > end_ns:
            break
        if event.kind is EventKind.STEP_ENDED and kinds.get(event.step) == "set":
            hold_start = event.t_ns
    held = [
        s.values["pressure_pa"]
        for s in journal.samples()
        if hold_start <= s.t_ns <= end_ns and "pressure_pa" in s.values
    ]
    probes = sum(
        1
        for e in events
        if e.kind is EventKind.STEP_STARTED
        and e.data.get("kind") == "current"
        and hold_start <= e.t_ns <= end_ns
    )
    elapsed = (end_ns - hold_start) / 1e9
    return ShortWatch(
        shorted=short is not None,
        time_to_short_s=elapsed if short is not None else None,
        watched_s=elapsed,
        hold_pressure_pa=statistics.median(held) if held else None,
        probes=probes,
        message=None if short is None else short.data.get("message"),
    )
