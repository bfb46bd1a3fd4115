"""A fake potentiostat for engine tests: the cheapest double that keeps the engine's seam (the role).

Readings are generated on the simulated clock from a function V(t, I), so tests state exactly what
the "cell" does and check what the engine makes of it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drivers.base import Reading
from labctl.clock import SimulatedClock


class FakePotentiostat:
    identity = "fake"

    def __init__(self, clock: SimulatedClock, voltage: Callable[[float, float], float]) -> None:
        self.clock = clock
        self.voltage = voltage
        self.current = 0.0
        self.output = False
        self.commands: list[tuple[str, float]] = []
        self.period = 1.0
        self.next_t: float | None = None
        self.safe_calls = 0

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.safe_state()

    async def set_current(self, current_a: float, voltage_limit_v: float) -> None:
        self._catch_up()
        self.current, self.output, self.mode = current_a, True, "current"
        self.commands.append(("current", current_a))

    async def set_voltage(self, voltage_v: float, current_limit_a: float) -> None:
        self._catch_up()
        self.mode, self.voltage_setpoint, self.current_limit = "voltage", voltage_v, current_limit_a
        self.output = True
        self.commands.append(("voltage", voltage_v))

    def _current_at(self, t: float) -> float:
        """Galvanostatic: the set current; potentiostatic: solve V(t, I) = V_set within the limit."""
        if getattr(self, "mode", "current") == "current":
            return self.current
        low, high = -self.current_limit, self.current_limit
        for _ in range(60):
            mid = 0.5 * (low + high)
            if self.voltage(t, mid) < self.voltage_setpoint:
                low = mid
            else:
                high = mid
        return 0.5 * (low + high)

    async def output_off(self) -> None:
        self.output = False

    async def read(self) -> Reading:
        return Reading(
            self.clock.monotonic(), self.voltage(self.clock.monotonic(), self.current), self.current
        )

    async def start_acquisition(self, period_s: float) -> None:
        self.period, self.next_t = period_s, self.clock.monotonic() + period_s
        self.pending: list[Reading] = []

    def _catch_up(self) -> None:
        if self.next_t is None:
            return
        while self.next_t <= self.clock.monotonic() + 1e-9:
            current = self._current_at(self.next_t) if self.output else 0.0
            self.pending.append(Reading(self.next_t, self.voltage(self.next_t, current), current))
            self.next_t += self.period

    async def fetch(self) -> list[Reading]:
        self._catch_up()
        readings, self.pending = self.pending, []
        return readings

    async def stop_acquisition(self) -> None:
        self.next_t = None

    async def safe_state(self) -> None:
        self.safe_calls += 1
        self.output = False
        self.commands.append(("off", 0.0))


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start_ns=1_700_000_000_000_000_000)


@pytest.fixture
def fake_potentiostat(clock):
    def make(voltage: Callable[[float, float], float]) -> FakePotentiostat:
        return FakePotentiostat(clock, voltage)

    return make
