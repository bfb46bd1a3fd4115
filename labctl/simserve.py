"""`labctl sim serve NAME`: a simulated instrument on a TCP port, in real time, for any client."""

from __future__ import annotations

import asyncio
import sys

from labctl.protocol import Overrides


async def serve(instrument: str, host: str, port: int, seed: int, overrides: Overrides) -> None:
    """Serve until interrupted; the cell takes the overrides as its conditions."""
    from simulators.base import wall_time_source
    from simulators.cell import CellParameters, SymmetricCell
    from simulators.keithley2450 import Keithley2450Server, Keithley2450Simulator

    defaults = CellParameters()
    params = CellParameters(
        material=overrides.material or defaults.material,
        area_m2=overrides.area_m2 or defaults.area_m2,
        thickness_m=overrides.thickness_m or defaults.thickness_m,
        pressure_pa=overrides.pressure_pa or defaults.pressure_pa,
        temperature_k=overrides.temperature_k or defaults.temperature_k,
        seed=seed,
    )
    simulator = Keithley2450Simulator(SymmetricCell(params), time_source=wall_time_source(), seed=seed)
    server = Keithley2450Server(simulator)
    try:
        bound = await server.start(host=host, port=port)
    except OSError as exc:
        from labctl.errors import ConfigError

        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is the port in use? try --port"
        ) from None
    print(
        f"{instrument} simulator listening on {host}:{bound} "
        f"(VISA: TCPIP0::{host}::{bound}::SOCKET, LF terminated); Ctrl-C stops it",
        file=sys.stderr,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await server.aclose()
