"""Stack pressure from a pneumatic cylinder under an Alicat pressure controller: the loop in the device.

A cylinder (or bellows) pushes on the stack with force = gas pressure × piston area, and an Alicat
PC regulates the gas pressure with its own valve loop (INSTRUMENTS.md §3.5). Unlike the screw rig
(`labctl.engine.pressure.StackPressureController`), labctl closes no loop here: the force does not
depend on the stack's stiffness or on Li creep (the piston follows the stack as it relaxes), so
the device's gas loop is the whole regulation. labctl converts the stack pressure into a gas
set-point (stack pressure × cell area / piston area), sends it once per `set` step, then only
measures: each period it reads the pressure and trips a fault on a force limit or on a deviation
from the target that persists (a leak, an empty gas bottle, a stuck piston).

Safe state is the device's hold: the valve is held, the cylinder is sealed and keeps its pressure,
so the stack keeps its load if labctl stops. A later `settle` sends a new set-point (the driver
cancels the hold first).

With an optional force gauge under the stack, the stack pressure is the gauge's force / cell area
(what the cell feels, piston friction included); without one it is the gas pressure × piston area
/ cell area.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from drivers.base import ForceSensor, PressureController
from drivers.errors import InstrumentError, InstrumentRejectedError
from labctl.clock import Clock
from labctl.engine.pressure import PressureFault, PressureHistory, wait_until_settled

log = logging.getLogger(__name__)


@dataclass
class PneumaticLoopSettings:
    """Measurement period and limits of a pneumatic rig (SI).

    Attributes:
        period_s: measurement period while settling or off target, s.
        hold_period_s: measurement period while on target, s.
        max_force_n: force limit, N: above it the valve is held and the loop faults.
        tolerance_fraction: a deviation beyond this fraction of the target (or `tolerance_pa`,
            whichever is larger) counts as off target.
        tolerance_pa: smallest off-target band, Pa.
        deviation_s: how long the pressure may stay off target before the loop faults, s.
    """

    period_s: float = 1.0
    hold_period_s: float = 10.0
    max_force_n: float = 2500.0
    tolerance_fraction: float = 0.05
    tolerance_pa: float = 0.1e6
    deviation_s: float = 60.0


class PneumaticPressureLoop:
    """Holds a stack pressure (Pa) on the cell area with a gas-pressure-controlled cylinder.

    Implements `labctl.engine.pressure.StackPressureLoop`.

    Args:
        controller: the gas pressure controller (an `AlicatPressureController`); its safe state
            is "valve held" (the sealed cylinder keeps the pressure).
        piston_area_m2: the cylinder's piston area, m² (force = gas pressure × piston area).
        area_m2: the cell area that turns force into stack pressure, m².
        clock: waits go through it (simulated runs stay deterministic).
        settings: period and limits.
        gauge: an optional force sensor under the stack; when given, it measures the stack force.
    """

    def __init__(
        self,
        controller: PressureController,
        piston_area_m2: float,
        area_m2: float,
        clock: Clock,
        settings: PneumaticLoopSettings | None = None,
        *,
        gauge: ForceSensor | None = None,
    ) -> None:
        if piston_area_m2 <= 0 or area_m2 <= 0:
            raise ValueError("piston_area_m2 and area_m2 must be positive")
        self.controller = controller
        self.piston_area_m2 = piston_area_m2
        self.area_m2 = area_m2
        self.clock = clock
        self.settings = settings or PneumaticLoopSettings()
        self.gauge = gauge
        self.target_pa: float | None = None
        self.pressure_pa = 0.0
        self.gas_pa = 0.0
        """The last measured gas (gauge) pressure, Pa."""
        self.fault: str | None = None
        self._history = PressureHistory()
        self._off_target_since: float | None = None

    def gas_setpoint_pa(self, stack_pa: float) -> float:
        """The gas pressure (Pa) that puts `stack_pa` on the cell: stack × cell area / piston area."""
        return stack_pa * self.area_m2 / self.piston_area_m2

    async def read_pressure(self) -> float:
        """Measure the stack pressure now (Pa), remember it for settling, check the force limit."""
        self.gas_pa = await self.controller.read_pressure()
        if self.gauge is not None:
            force = await self.gauge.read_force()
        else:
            force = max(0.0, self.gas_pa * self.piston_area_m2)
        self.pressure_pa = force / self.area_m2
        self._history.append(self.clock.monotonic(), self.pressure_pa)
        if force > self.settings.max_force_n:
            await self._trip(f"force {force:.0f} N above the {self.settings.max_force_n:.0f} N limit")
        return self.pressure_pa

    async def step(self) -> float:
        """One period while holding: measure, and fault if the pressure stays off target too long."""
        if self.fault is not None:
            raise PressureFault(self.fault)
        pressure = await self.read_pressure()
        if self.target_pa is None:
            return pressure
        s = self.settings
        now = self.clock.monotonic()
        if abs(pressure - self.target_pa) <= max(s.tolerance_fraction * self.target_pa, s.tolerance_pa):
            self._off_target_since = None
        elif self._off_target_since is None:
            self._off_target_since = now
        elif now - self._off_target_since > s.deviation_s:
            await self._trip(
                f"stack pressure {pressure / 1e6:.3g} MPa off the {self.target_pa / 1e6:g} MPa target for "
                f"{now - self._off_target_since:.0f} s (gas {self.gas_pa / 1e3:.0f} kPa): check the gas "
                "supply, the cylinder for leaks and that the piston moves freely"
            )
        return pressure

    async def settle(self, target_pa: float, *, rate_below: float, hold_s: float, timeout_s: float) -> float:
        """Send the gas set-point for `target_pa`; return once |dP/dt| < rate_below for `hold_s`.

        The criterion is the screw rig's (`wait_until_settled`): the device does the regulating,
        labctl only measures until the pressure is near the target and calm.

        Raises:
            PressureFault: a limit tripped, the controller refused the set-point, or not settled
                within `timeout_s`.
        """
        await self.set_target(target_pa)
        log.info("stack %.3g MPa: gas %.1f kPa", target_pa / 1e6, self.gas_setpoint_pa(target_pa) / 1e3)

        async def measure() -> float:
            if self.fault is not None:
                raise PressureFault(self.fault)
            return await self.read_pressure()

        return await wait_until_settled(
            measure,
            self._history,
            self.clock,
            self.settings.period_s,
            target_pa,
            rate_below=rate_below,
            hold_s=hold_s,
            timeout_s=timeout_s,
        )

    async def set_target(self, target_pa: float) -> None:
        """Send the gas set-point for `target_pa` (the device regulates from now on)."""
        if self.fault is not None:
            raise PressureFault(self.fault)
        gas_pa = self.gas_setpoint_pa(target_pa)
        try:
            if self.target_pa is None:
                await self.controller.release()  # a held valve ignores set-points: cancel the hold
            await self.controller.set_pressure(gas_pa)
        except (ValueError, InstrumentRejectedError) as exc:
            raise PressureFault(
                f"{target_pa / 1e6:g} MPa on {self.area_m2 * 1e4:g} cm² needs {gas_pa / 1e3:.0f} kPa of gas "
                f"on the {self.piston_area_m2 * 1e4:g} cm² piston, which the controller refuses ({exc}); "
                "lower the pressure or use a larger piston"
            ) from exc
        self.target_pa = target_pa
        self._off_target_since = None

    async def release(self) -> None:
        """Vent the cylinder: gas set-point zero; then stop regulating."""
        await self.set_target(0.0)
        self.target_pa = None
        await self.read_pressure()

    async def hold(self) -> None:
        """Safe state: hold the valve (the sealed cylinder keeps the stack's pressure)."""
        self.target_pa = None
        self._off_target_since = None
        await self.controller.hold()

    async def _trip(self, reason: str) -> None:
        self.fault = reason
        self.target_pa = None
        try:
            await self.controller.hold()
        except InstrumentError as exc:
            log.error("pneumatic rig: hold after a fault failed: %s", exc)
            raise PressureFault(
                f"pressure loop stopped: {reason}; holding the valve failed too ({exc}): vent the "
                "cylinder by hand"
            ) from exc
        raise PressureFault(f"pressure loop stopped: {reason}; the valve holds the cylinder sealed")
