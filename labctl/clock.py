"""Clocks: real time for the lab, simulated time for CI and dry runs.

Every wait in labctl goes through a Clock. With `RealClock` a wait is `asyncio.sleep`. With
`SimulatedClock` a wait costs no wall time: simulated time jumps to the earliest wake-up as soon as
every participant is waiting, while all I/O (including each sample crossing the TCP link to a
simulator) still happens for real. Time advances only inside `sleep`, so a run's values depend on
its inputs and seed alone — never on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Where labctl gets the time and how it waits."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary origin; never goes backwards."""
        ...

    def time_ns(self) -> int:
        """UTC wall time in nanoseconds, for record timestamps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (≥ 0) on this clock."""
        ...


class Participant:
    """A registered sleeper of a SimulatedClock; leaving (end of `with`) unregisters it."""

    def __init__(self, clock: SimulatedClock) -> None:
        self._clock: SimulatedClock | None = clock

    def __enter__(self) -> Participant:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._clock is not None:
            clock, self._clock = self._clock, None
            clock._leave()


class RealClock:
    """The machine's clocks; waits are real."""

    def monotonic(self) -> float:
        """Seconds from `time.monotonic`."""
        return time.monotonic()

    def time_ns(self) -> int:
        """UTC nanoseconds from `time.time_ns`."""
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock:
    """Simulated time that runs as fast as the work allows, deterministically.

    Tasks that wait on this clock register as participants (`with clock.participant():`). Time
    advances only when every participant is asleep; it then jumps to the earliest deadline and wakes
    exactly that sleeper (ties in the order they went to sleep). With no registered participant
    every sleep advances time at once, which is right for a single runner task.

    Args:
        start_ns: UTC nanoseconds that simulated time zero maps to (record timestamps).
    """

    def __init__(self, start_ns: int | None = None) -> None:
        self._now = 0.0
        self._start_ns = time.time_ns() if start_ns is None else start_ns
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._participants = 0

    def monotonic(self) -> float:
        """Simulated seconds since the clock was made."""
        return self._now

    def time_ns(self) -> int:
        """UTC nanoseconds: the start time plus simulated seconds."""
        return self._start_ns + round(self._now * 1e9)

    def participant(self) -> Participant:
        """Count a task in, from now on: time will not advance while it is busy.

        Create participants *before* starting the tasks that use them (the first one to sleep
        would otherwise advance time alone), and leave with `with participant:` in each task.
        """
        self._participants += 1
        return Participant(self)

    def _leave(self) -> None:
        self._participants -= 1
        self._advance_if_all_asleep()

    async def sleep(self, seconds: float) -> None:
        """Sleep in simulated time; returns as soon as this sleeper is the earliest and all wait."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._order), future))
        self._advance_if_all_asleep()
        try:
            await future
        except asyncio.CancelledError:
            self._sleepers = [s for s in self._sleepers if s[2] is not future]
            heapq.heapify(self._sleepers)
            self._advance_if_all_asleep()
            raise

    def _advance_if_all_asleep(self) -> None:
        pending = [s for s in self._sleepers if not s[2].done()]
        if not pending or len(pending) < max(1, self._participants):
            return
        deadline, _, future = heapq.heappop(self._sleepers)
        while future.done():  # a sleeper that was woken already (cannot happen twice, but be safe)
            if not self._sleepers:
                return
            deadline, _, future = heapq.heappop(self._sleepers)
        self._now = max(self._now, deadline)
        future.set_result(None)


class PacedClock:
    """Simulated time that runs `speed` times faster than the wall clock (a watchable simulation).

    Why: a simulated CCD in `SimulatedClock` ends in seconds, too fast to watch, pause or resume from
    the terminal UI; at `speed = 600` an 8-hour CCD takes under a minute. Simulators read its
    `monotonic()`, so their physics follows it; sleeps are real sleeps divided by `speed`.

    Args:
        speed: simulated seconds per wall second (> 0).
        start_ns: UTC nanoseconds that simulated time zero maps to (record timestamps).
    """

    def __init__(self, speed: float, start_ns: int | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.speed = speed
        self._wall0 = time.monotonic()
        self._start_ns = time.time_ns() if start_ns is None else start_ns

    def monotonic(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._wall0) * self.speed

    def time_ns(self) -> int:
        """UTC nanoseconds: the start time plus simulated seconds."""
        return self._start_ns + round(self.monotonic() * 1e9)

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of simulated time (seconds / speed of wall time)."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)
