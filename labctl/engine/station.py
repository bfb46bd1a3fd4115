"""A station: the instruments of one bench, by role. The engine talks to roles, never to vendors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from drivers.base import Potentiostat, Thermostat
from drivers.errors import InstrumentError
from labctl.engine.pressure import StackPressureLoop

log = logging.getLogger(__name__)

SAFE_STATE_TIMEOUT_S = 5.0


@dataclass
class Station:
    """One bench: a potentiostat, and optionally a stack-pressure loop (rig)."""

    name: str
    potentiostat: Potentiostat
    pressure: StackPressureLoop | None = None
    """The closed stack-pressure loop, when the bench has a rig (screw or pneumatic)."""
    thermostat: Thermostat | None = None
    """The heater's controller, when the bench has one (its loop runs in the device)."""
    replace_cell: Callable[[], None] | None = None
    """A simulated bench puts a fresh cell in (a `wait` with `new_cell`); in a lab, the operator does."""

    async def make_safe(self) -> list[str]:
        """Every role to its safe state, in parallel, under a short timeout, even when cancelled.

        Returns:
            One message per role that could not be made safe (empty when all are safe).
        """
        failures: list[str] = []

        async def potentiostat_off() -> None:
            try:
                async with asyncio.timeout(SAFE_STATE_TIMEOUT_S):
                    await self.potentiostat.safe_state()
            except (InstrumentError, TimeoutError) as exc:
                failures.append(f"potentiostat: {exc or 'timed out'}; switch its output off by hand")

        async def pressure_held() -> None:
            if self.pressure is None:
                return
            try:
                async with asyncio.timeout(SAFE_STATE_TIMEOUT_S):
                    await self.pressure.hold()
            except (InstrumentError, TimeoutError) as exc:
                failures.append(f"rig: {exc or 'timed out'}; check the screw is stopped or the valve held")

        async def temperature_held() -> None:
            if self.thermostat is None:
                return
            try:
                async with asyncio.timeout(SAFE_STATE_TIMEOUT_S):
                    await self.thermostat.safe_state()
            except (InstrumentError, TimeoutError) as exc:
                failures.append(f"heater: {exc or 'timed out'}; check its set-point")

        # shielded: a cancelled run must still switch the source off (STYLE.md rule 9)
        await asyncio.shield(asyncio.gather(potentiostat_off(), pressure_held(), temperature_held()))
        for failure in failures:
            log.error("safe state not confirmed: %s", failure)
        return failures
