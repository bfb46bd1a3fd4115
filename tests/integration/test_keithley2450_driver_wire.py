"""The real driver against the simulator over real TCP via pyvisa-py: what the lab will see."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import pytest

from drivers.errors import InstrumentStateError, LinkError
from drivers.keithley2450 import Keithley2450
from drivers.transports.visa import VisaTransport
from labctl.cli import main
from simulators.base import ResistorLoad
from simulators.keithley2450 import Keithley2450Server, Keithley2450Simulator


class ManualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def served(language: str = "SCPI", load=None):
    time = ManualTime()
    simulator = Keithley2450Simulator(
        load or ResistorLoad(100.0), time_source=time, seed=3, language=language
    )
    async with Keithley2450Server(simulator) as server:
        yield server, time


async def test_driver_sources_and_collects_buffered_readings_over_tcp():
    async with served() as (server, time):
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=5)
        async with Keithley2450(transport, time_source=time) as smu:
            assert "MODEL 2450" in smu.identity
            await smu.start_acquisition(0.5)
            await smu.set_current(1e-3, 2.0)
            time.now = 10.0
            readings = await smu.fetch()
            assert len(readings) == 20  # 0.5 s period: readings at 0.5 … 10.0 s
            assert [r.t for r in readings[:3]] == pytest.approx([0.5, 1.0, 1.5])
            for reading in readings:
                assert reading.voltage_v == pytest.approx(0.1, abs=1e-4)  # 1 mA through 100 Ω
                assert reading.current_a == pytest.approx(1e-3, rel=1e-3)
            time.now = 12.0
            assert len(await smu.fetch()) == 4  # only the new ones
            one = await smu.read()
            assert one.voltage_v == pytest.approx(0.1, abs=1e-4)


async def test_compliance_is_reported_on_the_reading():
    async with served() as (server, time):
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=5)
        async with Keithley2450(transport, time_source=time) as smu:
            await smu.start_acquisition(1.0)
            await smu.set_current(0.1, 2.0)  # 0.1 A through 100 Ω would need 10 V
            time.now = 3.0
            readings = await smu.fetch()
            assert readings[-1].in_compliance
            assert readings[-1].voltage_v == pytest.approx(2.0, abs=1e-3)


async def test_safe_state_switches_the_output_off_on_exit():
    load = ResistorLoad(100.0)
    async with served(load=load) as (server, time):
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=5)
        async with Keithley2450(transport, time_source=time) as smu:
            await smu.set_current(1e-3, 2.0)
            time.now = 5.0
        charge = load.charge_c
        time.now = 100.0
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=5)
        await transport.open()
        assert (await transport.query(":OUTP?")).strip() == "0"
        await transport.aclose()
        assert load.charge_c == pytest.approx(charge)  # nothing flowed after the driver left


async def test_wrong_command_language_is_refused_with_instructions():
    async with served(language="TSP") as (server, time):
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=2)
        with pytest.raises(InstrumentStateError, match=r"uses the TSP command set.*power-cycle"):
            async with Keithley2450(transport, time_source=time):
                pass


async def test_dropped_link_is_a_link_error():
    async with served() as (server, time):
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=1)
        async with Keithley2450(transport, time_source=time) as smu:
            server.faults.drop_next_command = True
            with pytest.raises(LinkError):
                await smu.read()
            with pytest.raises(LinkError):  # the output state is unknown: say so, don't pretend
                await smu.safe_state()


async def test_reply_slower_than_the_timeout_is_a_timeout_not_a_hang():
    async with served() as (server, time):
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=0.3)
        async with Keithley2450(transport, time_source=time) as smu:
            server.faults.reply_delay_s = 1.0
            with pytest.raises(LinkError, match="no reply"):
                await smu.read()
            server.faults.clear()


def test_sim_serve_answers_any_scpi_client_and_reports_a_busy_port(unused_tcp_port, capsys):
    process = subprocess.Popen(
        [sys.executable, "-m", "labctl", "sim", "serve", "keithley2450", "--port", str(unused_tcp_port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()  # readiness: the server says it listens
        assert f"listening on 127.0.0.1:{unused_tcp_port}" in banner
        with socket.create_connection(("127.0.0.1", unused_tcp_port), timeout=5) as client:
            client.sendall(b"*IDN?\n:SOUR:BOGUS 1\n:SYST:ERR?\n")
            reply = b""
            while reply.count(b"\n") < 2:
                reply += client.recv(4096)
        assert reply.decode().splitlines() == [
            "KEITHLEY INSTRUMENTS,MODEL 2450,04455231,1.7.12b",
            '-113,"Undefined header"',
        ]
        assert main(["sim", "serve", "keithley2450", "--port", str(unused_tcp_port)]) == 1
        assert "is the port in use?" in capsys.readouterr().err
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


async def test_switching_from_current_to_voltage_source_keeps_the_output_on():
    load = ResistorLoad(100.0, ocv_v=3.6)
    async with served(load=load) as (server, time):
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=5)
        async with Keithley2450(transport, time_source=time) as smu:
            await smu.start_acquisition(1.0)
            await smu.set_current(1e-3, 5.0)
            time.now = 3.0
            await smu.fetch()
            await smu.set_voltage(3.65, 2e-3)  # CC → CV, as a CC-CV charge does
            time.now = 6.0
            readings = await smu.fetch()
            assert readings[-1].voltage_v == pytest.approx(3.65, abs=1e-3)
            assert readings[-1].current_a == pytest.approx(0.5e-3, rel=1e-2)


async def test_closing_one_instrument_leaves_another_of_the_same_process_connected():
    """pyvisa shares one resource manager per process: one station ending must not cut off another."""
    async with served() as (first, time), served(load=ResistorLoad(200.0)) as (second, _):
        a = Keithley2450(
            VisaTransport(f"TCPIP0::127.0.0.1::{first.port}::SOCKET", timeout_s=5), time_source=time
        )
        b = Keithley2450(
            VisaTransport(f"TCPIP0::127.0.0.1::{second.port}::SOCKET", timeout_s=5), time_source=time
        )
        async with b:
            async with a:
                assert "MODEL 2450" in a.identity
            await b.set_current(1e-3, 2.0)  # a is closed; b still answers
            assert (await b.read()).voltage_v == pytest.approx(0.2, abs=1e-4)
