"""Closed-loop stack pressure on a screw rig: a force gauge and an actuator, the loop in labctl.

The loop is a PI controller on force with the actuator as the plant: each period it reads the
force, converts the pressure error into a position correction through the stack's stiffness
(estimated on line from the last moves, so the gain adapts to the pellet), and moves the screw.
Li creep relaxes the stack at a fixed gap; the integral term is what compensates it. Limits stop
the actuator: a force above `max_force_n` or a travel beyond `max_travel_m` from where control
started ends the loop in a fault, with the screw stopped (holding).

Tuning (documented for the simulated stack, 5 MN/m, and typical pellet dies): period 1 s,
proportional gain 0.6 of the stiffness-scaled error, integral time 20 s, at most 20 µm per
period. A 1 → 25 MPa step settles in about a minute within ±0.05 MPa.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass

from drivers.base import Actuator, ForceSensor
from drivers.errors import InstrumentError
from labctl.clock import Clock

log = logging.getLogger(__name__)


class PressureFault(InstrumentError):
    """The pressure loop stopped itself: a force or travel limit, or the gauge/actuator failed."""


@dataclass
class PressureLoopSettings:
    """Controller tuning and limits (SI).

    Attributes:
        period_s: control period.
        gain: fraction of the (stiffness-converted) position error corrected per period.
        integral_s: integral time; 0 disables the integral term.
        max_step_m: largest move per period.
        stiffness_guess_n_m: initial stack stiffness estimate (refined from the moves).
        max_force_n: force limit: above it the screw stops and the loop faults.
        max_travel_m: travel limit from the starting position.
    """

    period_s: float = 1.0
    gain: float = 0.6
    integral_s: float = 20.0
    max_step_m: float = 20e-6
    stiffness_guess_n_m: float = 5e6
    max_force_n: float = 2500.0
    max_travel_m: float = 2e-3


class StackPressureController:
    """Holds a stack pressure (Pa) on the cell area with a gauge and a screw actuator.

    Args:
        gauge: the force sensor under the stack.
        actuator: the screw; its safe state is "stopped" (the screw holds the pressure).
        area_m2: the cell area that turns force into pressure.
        clock: waits go through it (simulated runs stay deterministic).
    """

    def __init__(
        self,
        gauge: ForceSensor,
        actuator: Actuator,
        area_m2: float,
        clock: Clock,
        settings: PressureLoopSettings | None = None,
    ) -> None:
        self.gauge = gauge
        self.actuator = actuator
        self.area_m2 = area_m2
        self.clock = clock
        self.settings = settings or PressureLoopSettings()
        self.target_pa: float | None = None
        self.pressure_pa = 0.0
        self.fault: str | None = None
        self._history: collections.deque[tuple[float, float]] = collections.deque(maxlen=600)
        self._integral = 0.0
        self._stiffness = self.settings.stiffness_guess_n_m
        self._start_position: float | None = None

    async def read_pressure(self) -> float:
        """Measure the stack pressure now (Pa) and remember it for settling."""
        force = await self.gauge.read_force()
        self.pressure_pa = force / self.area_m2
        self._history.append((self.clock.monotonic(), self.pressure_pa))
        if force > self.settings.max_force_n:
            await self._trip(f"force {force:.0f} N above the {self.settings.max_force_n:.0f} N limit")
        return self.pressure_pa

    async def step(self) -> float:
        """One control period: measure, correct the screw; returns the pressure (Pa)."""
        if self.fault is not None:
            raise PressureFault(self.fault)
        pressure = await self.read_pressure()
        if self.target_pa is None:
            return pressure
        position = await self.actuator.position()
        if self._start_position is None:
            self._start_position = position
        s = self.settings
        error_n = (self.target_pa - pressure) * self.area_m2
        if s.integral_s > 0:
            self._integral += error_n * s.period_s / s.integral_s
            self._integral = max(-s.max_force_n, min(s.max_force_n, self._integral))
        correction = s.gain * (error_n + self._integral) / self._stiffness
        correction = max(-s.max_step_m, min(s.max_step_m, correction))
        if abs(position + correction - self._start_position) > s.max_travel_m:
            await self._trip(f"travel beyond {s.max_travel_m * 1e3:g} mm from the start")
        if abs(correction) > 1e-9:
            await self.actuator.move_by(correction)
        return pressure

    async def _trip(self, reason: str) -> None:
        self.fault = reason
        self.target_pa = None
        try:
            await self.actuator.stop()
        finally:
            raise PressureFault(f"pressure loop stopped: {reason}; the screw holds where it is")

    def rate_pa_s(self, window_s: float) -> float | None:
        """|dP/dt| over the last `window_s`: the least-squares slope, so gauge noise averages out.

        None until the history covers the window.
        """
        if len(self._history) < 3:
            return None
        t_now = self._history[-1][0]
        points = [(t, p) for t, p in self._history if t_now - t <= window_s]
        if t_now - points[0][0] < 0.9 * window_s:
            return None
        n = len(points)
        t_mean = sum(t for t, _ in points) / n
        p_mean = sum(p for _, p in points) / n
        spread = sum((t - t_mean) ** 2 for t, _ in points)
        return abs(sum((t - t_mean) * (p - p_mean) for t, p in points) / spread)

    async def settle(self, target_pa: float, *, rate_below: float, hold_s: float, timeout_s: float) -> float:
        """Drive to `target_pa` and return once |dP/dt| < rate_below for `hold_s`, near the target.

        Raises:
            PressureFault: a limit tripped, or not settled within `timeout_s`.
        """
        self.target_pa = target_pa
        self._integral = 0.0
        start = self.clock.monotonic()
        calm_since: float | None = None
        tolerance = max(0.02 * target_pa, 20e3)
        while True:
            pressure = await self.step()
            now = self.clock.monotonic()
            rate = self.rate_pa_s(max(hold_s, 30.0))
            calm = rate is not None and rate < rate_below and abs(pressure - target_pa) < tolerance
            calm_since = (calm_since or now) if calm else None
            if calm_since is not None and now - calm_since >= hold_s:
                return pressure
            if now - start > timeout_s:
                raise PressureFault(
                    f"stack pressure not settled at {target_pa / 1e6:g} MPa within {timeout_s:g} s "
                    f"(now {pressure / 1e6:.3g} MPa); check the rig and the gauge"
                )
            await self.clock.sleep(self.settings.period_s)

    async def hold(self) -> None:
        """Safe state: stop the screw where it is (the stack keeps its pressure)."""
        self.target_pa = None
        await self.actuator.stop()


async def run_loop(controller: StackPressureController, stop: asyncio.Event) -> None:
    """Keep regulating at the controller's target until `stop` is set (the runner owns this task)."""
    while not stop.is_set():
        await controller.step()
        await controller.clock.sleep(controller.settings.period_s)
