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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from drivers.base import Actuator, ForceSensor
from drivers.errors import InstrumentError
from labctl.clock import Clock

log = logging.getLogger(__name__)


RELEASE_MARGIN_M = 100e-6
"""How far a released screw backs off beyond the stack's elastic compression, m."""

ON_TARGET_FRACTION = 0.005
"""A held pressure within this fraction of its target is on target (the loop slows down)."""


class PressureFault(InstrumentError):
    """The pressure loop stopped itself: a force or travel limit, or the gauge/actuator failed."""


class LoopTiming(Protocol):
    """The part of a loop's settings the runner reads."""

    @property
    def period_s(self) -> float:
        """Measurement (and, where labctl closes the loop, control) period, s."""
        ...

    @property
    def hold_period_s(self) -> float:
        """The longer period while the pressure sits on its target, s (creep takes hours)."""
        ...


class StackPressureLoop(Protocol):
    """A stack-pressure loop as the runner uses it, whichever rig closes it (screw or pneumatic).

    Attributes:
        target_pa: the pressure being held, Pa; None while nothing is regulated (held, or faulted).
        pressure_pa: the last measured stack pressure, Pa.
        fault: why the loop stopped itself, or None.
        clock: the clock every wait goes through.
    """

    target_pa: float | None
    pressure_pa: float
    fault: str | None
    clock: Clock

    @property
    def settings(self) -> LoopTiming:
        """The loop's settings; the runner reads `period_s`."""
        ...

    async def read_pressure(self) -> float:
        """Measure the stack pressure now, Pa."""
        ...

    async def step(self) -> float:
        """One period of the loop (measure, and correct where labctl closes the loop); returns Pa."""
        ...

    async def settle(self, target_pa: float, *, rate_below: float, hold_s: float, timeout_s: float) -> float:
        """Drive to `target_pa` and return the pressure (Pa) once settled; PressureFault otherwise."""
        ...

    async def hold(self) -> None:
        """Safe state: stop regulating and keep the pressure the stack has."""
        ...

    async def set_target(self, target_pa: float) -> None:
        """Regulate toward `target_pa` from the next `step` on, without waiting (a ramp's points)."""
        ...

    async def release(self) -> None:
        """Take the pressure off the stack (before a cell swap) and stop regulating."""
        ...


RELEASED_PA = 50e3
"""A stack below this pressure (Pa) counts as released: the fixture can be opened."""


async def ramp_to(loop: StackPressureLoop, target_pa: float, rate_pa_s: float) -> None:
    """Move the set-point from the present pressure to `target_pa` at `rate_pa_s`, one point per period.

    The loop follows each point as it would a held set-point; settling at the end is the caller's.
    """
    clock = loop.clock
    start_pa = await loop.read_pressure()
    t0 = clock.monotonic()
    direction = 1.0 if target_pa >= start_pa else -1.0
    while True:
        point = start_pa + direction * rate_pa_s * (clock.monotonic() - t0)
        if (point - target_pa) * direction >= 0:
            return
        await loop.set_target(point)
        await loop.step()
        await clock.sleep(loop.settings.period_s)


class PressureHistory:
    """Recent (time s, pressure Pa) measurements and the settling slope over them.

    Args:
        maxlen: how many measurements are kept.
    """

    def __init__(self, maxlen: int = 600) -> None:
        self._points: collections.deque[tuple[float, float]] = collections.deque(maxlen=maxlen)

    def append(self, t: float, pressure_pa: float) -> None:
        """Remember one measurement."""
        self._points.append((t, pressure_pa))

    def rate_pa_s(self, window_s: float) -> float | None:
        """|dP/dt| over the last `window_s`: the least-squares slope, so gauge noise averages out.

        None until the history covers the window.
        """
        if len(self._points) < 3:
            return None
        t_now = self._points[-1][0]
        points = [(t, p) for t, p in self._points if t_now - t <= window_s]
        if t_now - points[0][0] < 0.9 * window_s:
            return None
        n = len(points)
        t_mean = sum(t for t, _ in points) / n
        p_mean = sum(p for _, p in points) / n
        spread = sum((t - t_mean) ** 2 for t, _ in points)
        return abs(sum((t - t_mean) * (p - p_mean) for t, p in points) / spread)


async def wait_until_settled(
    step: Callable[[], Awaitable[float]],
    history: PressureHistory,
    clock: Clock,
    period_s: float,
    target_pa: float,
    *,
    rate_below: float,
    hold_s: float,
    timeout_s: float,
) -> float:
    """Call `step` every `period_s` until |dP/dt| < rate_below for `hold_s`, near the target.

    The settling criterion every rig shares: the regression slope of `history` (which `step`
    feeds) over max(hold_s, 30 s), with the pressure within max(2 %, 0.02 MPa) of the target.

    Returns:
        The last measured pressure, Pa.

    Raises:
        PressureFault: not settled within `timeout_s` (or `step` faulted).
    """
    start = clock.monotonic()
    calm_since: float | None = None
    tolerance = max(0.02 * target_pa, 20e3)
    while True:
        pressure = await step()
        now = clock.monotonic()
        rate = history.rate_pa_s(max(hold_s, 30.0))
        calm = rate is not None and rate < rate_below and abs(pressure - target_pa) < tolerance
        calm_since = (calm_since if calm_since is not None else now) if calm else None
        if calm_since is not None and now - calm_since >= hold_s:
            return pressure
        if now - start > timeout_s:
            raise PressureFault(
                f"stack pressure not settled at {target_pa / 1e6:g} MPa within {timeout_s:g} s "
                f"(now {pressure / 1e6:.3g} MPa); check the rig and the gauge"
            )
        await clock.sleep(period_s)


@dataclass
class PressureLoopSettings:
    """Controller tuning and limits (SI).

    Attributes:
        period_s: control period.
        hold_period_s: control period while the pressure sits on its target (within
            `ON_TARGET_FRACTION`): Li creep relaxes a stack over hours, so a 10 s period holds it as
            well and costs a tenth of the gauge and actuator traffic over a months-long hold.
        gain: fraction of the (stiffness-converted) position error corrected per period.
        integral_s: integral time; 0 disables the integral term.
        max_step_m: largest move per period.
        stiffness_guess_n_m: initial stack stiffness estimate (refined from the moves).
        max_force_n: force limit: above it the screw stops and the loop faults.
        max_travel_m: travel limit from the starting position.
    """

    period_s: float = 1.0
    hold_period_s: float = 10.0
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
        self._history = PressureHistory()
        self._integral = 0.0
        self._stiffness = self.settings.stiffness_guess_n_m
        self._start_position: float | None = None

    async def read_pressure(self) -> float:
        """Measure the stack pressure now (Pa) and remember it for settling."""
        force = await self.gauge.read_force()
        self.pressure_pa = force / self.area_m2
        self._history.append(self.clock.monotonic(), self.pressure_pa)
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
        """|dP/dt| over the last `window_s` (see `PressureHistory.rate_pa_s`); None until covered."""
        return self._history.rate_pa_s(window_s)

    async def settle(self, target_pa: float, *, rate_below: float, hold_s: float, timeout_s: float) -> float:
        """Drive to `target_pa` and return once |dP/dt| < rate_below for `hold_s`, near the target.

        Raises:
            PressureFault: a limit tripped, or not settled within `timeout_s`.
        """
        self.target_pa = target_pa
        self._integral = 0.0
        return await wait_until_settled(
            self.step,
            self._history,
            self.clock,
            self.settings.period_s,
            target_pa,
            rate_below=rate_below,
            hold_s=hold_s,
            timeout_s=timeout_s,
        )

    async def hold(self) -> None:
        """Safe state: stop the screw where it is (the stack keeps its pressure)."""
        self.target_pa = None
        await self.actuator.stop()

    async def set_target(self, target_pa: float) -> None:
        """Regulate toward `target_pa` from the next step on (the integral term is kept)."""
        self.target_pa = target_pa

    async def release(self) -> None:
        """Back the screw off past where the stack stops pushing (elastic compression + 0.1 mm)."""
        self.target_pa = None
        await self.actuator.stop()
        force = await self.gauge.read_force()
        await self.actuator.move_by(-(max(force, 0.0) / self._stiffness + RELEASE_MARGIN_M))
        while await self.actuator.is_moving():
            await self.clock.sleep(self.settings.period_s)
        await self.read_pressure()


async def run_loop(controller: StackPressureLoop, stop: asyncio.Event) -> None:
    """Keep regulating at the controller's target until `stop` is set (the runner owns this task)."""
    settings = controller.settings
    while not stop.is_set():
        pressure = await controller.step()
        target = controller.target_pa
        on_target = target is not None and abs(pressure - target) <= ON_TARGET_FRACTION * target
        await controller.clock.sleep(settings.hold_period_s if on_target else settings.period_s)
