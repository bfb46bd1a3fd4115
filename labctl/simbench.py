"""A simulated bench for `labctl run --sim`, wired over a real TCP link.

A cell model sits behind a Keithley 2450 simulator on a loopback TCP port, driven by the real
driver over pyvisa-py, so simulated runs exercise the same wire protocol and transport code as
the lab. The only labctl module that imports simulators
(besides the `sim` command), as import-linter enforces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from drivers.keithley2450 import Keithley2450
from drivers.transports.visa import VisaTransport
from labctl.clock import Clock
from labctl.engine.station import Station
from labctl.errors import ConfigError
from labctl.protocol.plan import Plan


@asynccontextmanager
async def simulated_station(plan: Plan, clock: Clock, seed: int) -> AsyncIterator[Station]:
    """A station whose potentiostat is a simulated 2450 wired to a simulated cell.

    Args:
        plan: gives the cell (material, area, thickness) and the conditions (pressure, temperature).
        clock: the simulators read the same clock as the engine, so their physics runs in step.
        seed: seeds every random process (noise, dendrite nucleation): same seed, same run.
    """
    from simulators.cell import CellParameters, SymmetricCell
    from simulators.keithley2450 import Keithley2450Server, Keithley2450Simulator

    try:
        cell = SymmetricCell(
            CellParameters(
                material=plan.cell.material,
                area_m2=plan.cell.area_m2,
                thickness_m=plan.cell.thickness_m,
                pressure_pa=plan.pressure_pa,
                temperature_k=plan.temperature_k,
                seed=seed,
            )
        )
    except KeyError as exc:
        raise ConfigError(f"simulated cell: {exc.args[0]}") from None
    simulator = Keithley2450Simulator(cell, time_source=clock.monotonic, seed=seed)
    server = Keithley2450Server(simulator)
    port = await server.start(host="127.0.0.1", port=0)
    try:
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_s=10.0)
        async with Keithley2450(transport, time_source=clock.monotonic) as smu:
            yield Station("sim-1", smu)
    finally:
        await server.aclose()
