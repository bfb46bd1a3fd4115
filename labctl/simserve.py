"""`labctl sim serve NAME`: a simulated instrument on a TCP port (or a pty), in real time, for any client."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from labctl.errors import ConfigError
from labctl.protocol import Overrides

INSTRUMENTS = ("keithley2450", "emstat4", "rig", "alicat", "eurotherm")


async def serve(
    instrument: str, host: str, port: int, seed: int, overrides: Overrides, pty: bool = False
) -> None:
    """Serve until interrupted; the simulated cell takes the overrides as its conditions."""
    from simulators.base import wall_time_source
    from simulators.cell import CellParameters, SymmetricCell

    defaults = CellParameters()
    try:
        params = CellParameters(
            material=overrides.material or defaults.material,
            area_m2=overrides.area_m2 or defaults.area_m2,
            thickness_m=overrides.thickness_m or defaults.thickness_m,
            pressure_pa=overrides.pressure_pa or defaults.pressure_pa,
            temperature_k=overrides.temperature_k or defaults.temperature_k,
            seed=seed,
        )
    except KeyError as exc:
        raise ConfigError(f"simulated cell: {exc.args[0]}") from None
    cell = SymmetricCell(params)
    if instrument in ("rig", "alicat", "eurotherm"):
        await _serve_bench_instrument(instrument, host, port, cell, params)
        return
    server: Any
    if instrument == "keithley2450":
        from simulators.keithley2450 import Keithley2450Server, Keithley2450Simulator

        server = Keithley2450Server(Keithley2450Simulator(cell, time_source=wall_time_source(), seed=seed))
        address = "VISA: TCPIP0::{host}::{port}::SOCKET, LF terminated"
    else:
        from simulators.emstat import EmStat4PtyServer, EmStat4Server, EmStat4Simulator

        simulator = EmStat4Simulator(cell, wall_time_source(), seed=seed)
        server = EmStat4PtyServer(simulator) if pty else EmStat4Server(simulator)
        address = "serial port {path}" if pty else "pyserial URL socket://{host}:{port}, MethodSCRIPT"
    try:
        bound = await (server.start() if pty else server.start(host=host, port=port))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is the port in use? try --port"
        ) from None
    where = address.format(host=host, port=bound, path=bound)
    place = bound if pty else f"{host}:{bound}"
    print(f"{instrument} simulator listening on {place} ({where}); Ctrl-C stops it", file=sys.stderr)
    try:
        await asyncio.Event().wait()
    finally:
        await server.aclose()


async def _serve_bench_instrument(instrument: str, host: str, port: int, cell: Any, params: Any) -> None:
    """The rig (Mark-10 gauge on PORT, Zaber actuator on PORT+1, one stack), an Alicat, or a Eurotherm."""
    from simulators.base import wall_time_source

    clock = wall_time_source()
    async with contextlib.AsyncExitStack() as stack:
        if instrument == "rig":
            from simulators.mark10 import Mark10Server, Mark10Simulator
            from simulators.mechanics import StackMechanics
            from simulators.zaber import ZaberServer, ZaberSimulator

            mechanics = StackMechanics(area_m2=params.area_m2, cell=cell, t0=clock())
            gauge = Mark10Server(Mark10Simulator(mechanics, clock))
            actuator = ZaberServer(ZaberSimulator(mechanics, clock))
            ports = [await _listen(stack, gauge, host, port), await _listen(stack, actuator, host, port + 1)]
            where = (
                f"Mark-10 gauge on socket://{host}:{ports[0]}, Zaber actuator on socket://{host}:{ports[1]}"
            )
        elif instrument == "alicat":
            from simulators.alicat import AlicatServer, AlicatSimulator

            server = AlicatServer(AlicatSimulator(clock, cell=cell))
            where = f"Alicat on socket://{host}:{await _listen(stack, server, host, port)} (CR framing)"
        else:
            from simulators.eurotherm import Eurotherm3200Simulator, EurothermTcpServer

            modbus = EurothermTcpServer(Eurotherm3200Simulator(clock, cell=cell), host=host, port=port)
            try:
                await stack.enter_async_context(modbus)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); try --port") from None
            where = f"Eurotherm 3200 on Modbus TCP {host}:{modbus.port}"
        print(f"{instrument} simulator listening: {where}; Ctrl-C stops it", file=sys.stderr)
        await asyncio.Event().wait()


async def _listen(stack: contextlib.AsyncExitStack, server: Any, host: str, port: int) -> int:
    """Start a server on the port asked for; it is closed with the stack."""
    try:
        await server.start(host=host, port=port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is the port in use? try --port"
        ) from None
    stack.push_async_callback(server.aclose)
    return server.port
