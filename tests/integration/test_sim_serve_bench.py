"""`labctl sim serve rig|alicat|eurotherm`: bench simulators on TCP ports for any client, in real time."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

from drivers.alicat import AlicatPressureController
from drivers.eurotherm import Eurotherm3200
from drivers.mark10 import Mark10Gauge
from drivers.transports.serial import SerialTransport
from drivers.zaber import ZaberActuator


@contextmanager
def served(instrument: str, port: int):
    process = subprocess.Popen(
        [sys.executable, "-m", "labctl", "sim", "serve", instrument, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()  # readiness: it says where it listens
        assert "listening" in banner, banner
        yield banner
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


async def test_rig_gauge_and_actuator_answer_their_drivers(unused_tcp_port):
    with served("rig", unused_tcp_port):
        async with (
            Mark10Gauge(Mark10Gauge.transport_for(f"socket://127.0.0.1:{unused_tcp_port}")) as gauge,
            ZaberActuator(
                ZaberActuator.transport_for(f"socket://127.0.0.1:{unused_tcp_port + 1}")
            ) as actuator,
        ):
            assert abs(await gauge.read_force()) < 5.0  # not touching the stack yet
            assert await actuator.position() > 0


async def test_alicat_and_eurotherm_answer_their_drivers(unused_tcp_port_factory):
    alicat_port, eurotherm_port = unused_tcp_port_factory(), unused_tcp_port_factory()
    with served("alicat", alicat_port), served("eurotherm", eurotherm_port):
        transport = SerialTransport(f"socket://127.0.0.1:{alicat_port}", baudrate=19200, eol=b"\r")
        async with AlicatPressureController(transport) as alicat:
            assert await alicat.read_pressure() >= 0
        async with Eurotherm3200(f"tcp://127.0.0.1:{eurotherm_port}") as heater:
            assert abs(await heater.read_temperature() - 298.15) < 2.0
