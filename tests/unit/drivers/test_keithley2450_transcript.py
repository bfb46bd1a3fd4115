"""Transcript tests: the exact commands the driver sends, with scripted replies (PyMeasure style)."""

from __future__ import annotations

import pytest

from drivers.errors import InstrumentRejectedError, InstrumentReplyError, InstrumentStateError
from drivers.keithley2450 import Keithley2450


class ScriptedTransport:
    """Replays a transcript of (command, reply-or-None) pairs and checks every pair was used."""

    resource = "SCRIPTED::2450"

    def __init__(self, transcript: list[tuple[str, str | None]]) -> None:
        self.transcript = list(transcript)
        self.position = 0

    def _next(self, command: str, expect_reply: bool) -> str | None:
        assert self.position < len(self.transcript), f"unexpected extra command {command!r}"
        expected, reply = self.transcript[self.position]
        self.position += 1
        assert command == expected, f"command #{self.position}: sent {command!r}, expected {expected!r}"
        assert (reply is not None) == expect_reply, f"{command!r}: write/query mismatch"
        return reply

    async def write(self, command: str) -> None:
        self._next(command, False)

    async def query(self, command: str) -> str:
        reply = self._next(command, True)
        assert reply is not None
        return reply

    def assert_all_used(self) -> None:
        assert self.position == len(self.transcript), f"unused: {self.transcript[self.position :]}"


CONNECT = [
    ("*IDN?", "KEITHLEY INSTRUMENTS,MODEL 2450,04455231,1.7.12b"),
    ("*LANG?", "SCPI"),
    ("*CLS;:ABOR;:OUTP:CURR:SMOD HIMP;:OUTP:VOLT:SMOD HIMP;:OUTP OFF", None),
    (":SYST:LFR?", "50"),
    (
        ':SOUR:FUNC CURR;:SOUR:CURR:RANG:AUTO 1;:SOUR:CURR:READ:BACK ON;:SOUR:CURR 0;:SENS:FUNC "VOLT";'
        ":SENS:VOLT:RANG:AUTO 1;:SENS:VOLT:NPLC 1;:SENS:VOLT:RSEN ON",
        None,
    ),
    (":SYST:ERR?", '0,"No error"'),
]
SAFE = [(":ABOR;:OUTP OFF", None), (":OUTP?", "0")]
START_ONE_HZ = [  # 1 s period: 1 PLC at 50 Hz = 20 ms aperture, 0.98 s delay
    (
        ':TRAC:CLE "defbuffer1";:TRAC:POIN 100000, "defbuffer1";'
        ':TRIG:LOAD "SimpleLoop", 100000, 0.98, "defbuffer1"',
        None,
    ),
    (":SYST:ERR?", '0,"No error"'),
    (":INIT", None),
]


async def test_connect_configures_native_scpi_and_checks_errors():
    transport = ScriptedTransport(CONNECT + SAFE)
    async with Keithley2450(transport) as smu:
        assert smu.identity.startswith("KEITHLEY")
        assert smu.line_frequency_hz == 50
    transport.assert_all_used()


async def test_wrong_language_is_refused_with_what_to_do():
    transport = ScriptedTransport([CONNECT[0], ("*LANG?", "TSP")])
    with pytest.raises(InstrumentStateError, match=r"TSP command set.*Command Set > SCPI.*power-cycle"):
        async with Keithley2450(transport):
            pass
    transport.assert_all_used()


async def test_set_current_batches_limit_level_and_output_then_drains_errors():
    transport = ScriptedTransport(
        CONNECT
        + [(":SOUR:CURR:VLIM 1;:SOUR:CURR 7.85e-05;:OUTP ON", None), (":SYST:ERR?", '0,"No error"')]
        + [(":SOUR:CURR -7.85e-05", None), (":SYST:ERR?", '0,"No error"')]
        + SAFE
    )
    async with Keithley2450(transport) as smu:
        await smu.set_current(7.85e-5, 1.0)
        await smu.set_current(-7.85e-5, 1.0)  # same limit, output already on: one command
    transport.assert_all_used()


async def test_instrument_errors_after_configuration_raise_with_the_queue_contents():
    transport = ScriptedTransport(
        CONNECT
        + [(":SOUR:CURR:VLIM 1;:SOUR:CURR 0.001;:OUTP ON", None)]
        + [(":SYST:ERR?", '-222,"Data out of range"'), (":SYST:ERR?", '0,"No error"')]
        + SAFE
    )
    async with Keithley2450(transport) as smu:
        with pytest.raises(InstrumentRejectedError, match="-222 Data out of range"):
            await smu.set_current(1e-3, 1.0)
    transport.assert_all_used()


async def test_out_of_range_current_is_refused_before_anything_is_sent():
    transport = ScriptedTransport(CONNECT + SAFE)
    async with Keithley2450(transport) as smu:
        with pytest.raises(ValueError, match=r"source_current: 2 is outside"):
            await smu.set_current(2.0, 1.0)
    transport.assert_all_used()


async def test_buffered_acquisition_reads_only_new_readings_in_one_request():
    t = [100.0]
    transport = ScriptedTransport(
        CONNECT
        + START_ONE_HZ
        + [
            (':TRAC:ACT? "defbuffer1"', "2"),
            (
                ':TRAC:DATA? 1, 2, "defbuffer1", READ, SOUR, REL',
                "1.000000E-02,1.000000E-04,0.000000E+00,1.100000E-02,1.000000E-04,1.000000E+00",
            ),
            (':TRAC:ACT? "defbuffer1"', "2"),
            (':TRAC:ACT? "defbuffer1"', "3"),
            (':TRAC:DATA? 3, 3, "defbuffer1", READ, SOUR, REL', "1.200000E-02,1.000000E-04,2.000000E+00"),
        ]
        + SAFE
    )
    async with Keithley2450(transport, time_source=lambda: t[0]) as smu:
        await smu.start_acquisition(1.0)  # 1 PLC at 50 Hz = 20 ms aperture, 0.98 s delay
        first = await smu.fetch()
        assert [(r.t, r.voltage_v) for r in first] == [(101.0, 0.01), (102.0, 0.011)]
        assert await smu.fetch() == []
        third = await smu.fetch()
        assert third[0].t == 103.0 and third[0].current_a == pytest.approx(1e-4)
    transport.assert_all_used()


async def test_garbled_buffer_reply_is_a_driver_error_not_a_crash():
    transport = ScriptedTransport(
        CONNECT
        + START_ONE_HZ
        + [
            (':TRAC:ACT? "defbuffer1"', "1"),
            (':TRAC:DATA? 1, 1, "defbuffer1", READ, SOUR, REL', "1.0E-02,#garbage"),
        ]
        + SAFE
    )
    async with Keithley2450(transport) as smu:
        await smu.start_acquisition(1.0)
        with pytest.raises(InstrumentReplyError, match="expected numbers"):
            await smu.fetch()
    transport.assert_all_used()


async def test_safe_state_is_confirmed_by_asking_and_refused_if_the_output_stays_on():
    transport = ScriptedTransport(CONNECT + [(":ABOR;:OUTP OFF", None), (":OUTP?", "1")] + SAFE)
    smu = Keithley2450(transport)
    await smu.__aenter__()
    with pytest.raises(InstrumentStateError, match="still on"):
        await smu.safe_state()
    await smu.__aexit__(None, None, None)
    transport.assert_all_used()
