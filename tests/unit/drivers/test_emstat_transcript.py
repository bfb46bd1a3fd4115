"""Transcript tests: the exact bytes the EmStat4 driver sends, and how it decodes streamed replies."""

from __future__ import annotations

import asyncio
import collections
import math

import pytest

from drivers.base import Potentiostat, SupportsEIS
from drivers.emstat import EmStat4
from drivers.errors import (
    InstrumentRejectedError,
    InstrumentReplyError,
    InstrumentStateError,
    InstrumentTimeout,
    LinkError,
)
from drivers.methodscript import (
    cell_off_script,
    chronoamperometry_script,
    chronopotentiometry_script,
    encode_variable,
    geis_script,
    ocp_script,
    peis_script,
)


class ScriptedLink:
    """Replays a MethodSCRIPT transcript: each expected write releases its reply lines.

    Lines a test pushes with `feed` stand for data the instrument streams on its own. Every
    transcript entry must be used (`assert_all_used`).
    """

    resource = "SCRIPTED::EmStat4"

    def __init__(self, transcript: list[tuple[str, list[str]]]) -> None:
        self.transcript = list(transcript)
        self.position = 0
        self.lines: collections.deque[str] = collections.deque()
        self.arrived = asyncio.Event()
        self.broken = False
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def aclose(self) -> None:
        self.closed = True

    async def write(self, text: str) -> None:
        if self.broken:
            raise LinkError(f"{self.resource}: link lost while writing")
        assert self.position < len(self.transcript), f"unexpected extra write {text!r}"
        expected, replies = self.transcript[self.position]
        self.position += 1
        assert text == expected, f"write #{self.position}: sent {text!r}, expected {expected!r}"
        self.feed(*replies)

    def feed(self, *lines: str) -> None:
        self.lines.extend(lines)
        self.arrived.set()

    async def read_line(self, timeout_s: float | None = None) -> str:
        while not self.lines:
            if self.broken:
                raise LinkError(f"{self.resource}: link lost while reading")
            self.arrived.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self.arrived.wait()
            except TimeoutError:
                raise InstrumentTimeout(f"{self.resource}: no reply") from None
        return self.lines.popleft()

    def discard_input(self) -> bytes:
        dropped = "".join(line + "\n" for line in self.lines).encode()
        self.lines.clear()
        return dropped

    def unplug(self) -> None:
        self.broken = True
        self.arrived.set()

    def assert_all_used(self) -> None:
        assert self.position == len(self.transcript), f"unused: {self.transcript[self.position :]}"


class ManualTime:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pkg(*variables: tuple[str, float]) -> str:
    return "P" + ";".join(encode_variable(type_id, value) for type_id, value in variables)


def cp_point(voltage: float, current: float = 1e-3) -> str:
    return pkg(("ab", voltage), ("ba", current))


CELL_OFF = cell_off_script().text
FIRMWARE_ES4_LR = ["tes4_lr1.3#Mar  3 2023 14:12:33", "R*"]  # [mem] layout; prefix and '*' end are [src]
IDLE_SYNC = [("\n", []), ("Z\n", ["Z!0006"])]
CONNECT = [*IDLE_SYNC, ("t\n", FIRMWARE_ES4_LR), ("v\n", ["v1.8"]), (CELL_OFF, ["e", ""])]
SAFE_IDLE = [*IDLE_SYNC, (CELL_OFF, ["e", ""])]
SAFE_RUNNING = [("Z\n", ["Z", "*", ""]), (CELL_OFF, ["e", ""])]
STARTED = ["e", "M0000"]


def cp(current_a: float, limit_v: float = 2.0, interval_s: float = 1.0, current_range_a: float = 1e-3) -> str:
    return chronopotentiometry_script(
        current_a=current_a,
        interval_s=interval_s,
        run_time_s=1e6,
        potential_range_v=limit_v,
        voltage_limit_v=limit_v,
        current_range_a=current_range_a,
    ).text


def driver(link: ScriptedLink, time: ManualTime | None = None, **options) -> EmStat4:
    options = {"error_pause_s": 0, "poll_s": 0.05, **options}
    return EmStat4(link, time_source=time or ManualTime(), **options)


# --------------------------------------------------------------------------------------------
# connect, resync, refusal


async def test_connect_resyncs_identifies_and_switches_the_cell_off():
    link = ScriptedLink(CONNECT + SAFE_IDLE)
    async with driver(link) as pot:
        assert isinstance(pot, Potentiostat) and isinstance(pot, SupportsEIS)
        assert pot.model is not None and pot.model.name == "EmStat4 LR"
        assert pot.identity == "es4_lr1.3#Mar  3 2023 14:12:33 R"
        assert pot.mscript_version == "1.8"
    assert link.opened and link.closed
    link.assert_all_used()


async def test_connect_aborts_a_script_left_running_and_drains_its_output():
    stale = [cp_point(0.5), cp_point(0.51)]
    link = ScriptedLink(
        [
            ("\n", stale),  # output of a script a previous session left running, still arriving
            ("Z\n", ["Z", cp_point(0.52), "*", ""]),
            ("t\n", FIRMWARE_ES4_LR),
            ("v\n", ["v1.8"]),
            (CELL_OFF, ["e", ""]),
            *SAFE_IDLE,
        ]
    )
    link.feed(cp_point(0.49))  # already buffered before connecting: discarded
    async with driver(link):
        pass
    link.assert_all_used()


async def test_an_emstat_pico_is_refused_for_galvanostatic_work_with_what_to_do():
    link = ScriptedLink([*IDLE_SYNC, ("t\n", ["tespico1.2#Jan 10 2022", "*"])])
    with pytest.raises(InstrumentStateError, match=r"EmStat Pico: it has no galvanostat.*EmStat4 or a Nexus"):
        async with driver(link):
            pass
    assert link.closed
    link.assert_all_used()


async def test_a_pico_may_do_potentiostatic_eis_but_never_sources_current():
    link = ScriptedLink(
        [*IDLE_SYNC, ("t\n", ["tespico1.2*"]), ("v\n", ["v1.8"]), (CELL_OFF, ["e", ""]), *SAFE_IDLE]
    )
    async with driver(link, require_galvanostat=False) as pot:
        with pytest.raises(InstrumentStateError, match="constant-current"):
            await pot.set_current(1e-3, 1.0)
    link.assert_all_used()


@pytest.mark.parametrize(
    ("firmware", "message"),
    [(["tespbl1.0*"], "bootloader.*power-cycle"), (["tkeithley*"], "not a MethodSCRIPT potentiostat")],
)
async def test_bootloader_and_unknown_devices_are_refused(firmware, message):
    link = ScriptedLink([*IDLE_SYNC, ("t\n", firmware)])
    with pytest.raises(InstrumentStateError, match=message):
        async with driver(link):
            pass
    link.assert_all_used()


async def test_a_silent_port_is_a_timeout_that_names_the_baud_rate():
    link = ScriptedLink([("\n", []), ("Z\n", [])])
    with pytest.raises(InstrumentTimeout, match="921600"):
        async with driver(link, timeout_s=0.05, abort_timeout_s=0.2):
            pass
    assert link.closed


# --------------------------------------------------------------------------------------------
# sourcing and streamed readings


async def test_set_current_streams_readings_timed_by_sample_index():
    time = ManualTime(100.0)
    link = ScriptedLink(
        CONNECT
        + [(cp(1e-3, interval_s=0.5), STARTED)]
        + [("Z\n", ["Z", cp_point(0.2, -1e-3), "*", ""]), (cp(-1e-3, interval_s=0.5), STARTED)]
        + SAFE_RUNNING
    )
    async with driver(link, time) as pot:
        await pot.start_acquisition(0.5)
        await pot.set_current(1e-3, 2.0)
        link.feed("Pab8030D40u;ba80F4240n", cp_point(0.201))  # 0.2 V, 1 mA; then 0.201 V
        time.now = 101.0
        readings = await pot.fetch()
        assert [r.t for r in readings] == [100.5, 101.0]
        assert readings[0].voltage_v == pytest.approx(0.2) and readings[0].current_a == pytest.approx(1e-3)
        assert readings[1].voltage_v == pytest.approx(0.201)
        assert not any(r.in_compliance for r in readings)
        assert await pot.fetch() == []
        time.now = 105.0
        await pot.set_current(-1e-3, 2.0)  # aborts the first script: its last package is kept
        link.feed(cp_point(0.19, -1e-3))
        time.now = 105.5
        readings = await pot.fetch()
        assert [r.t for r in readings] == [101.5, 105.5]
        assert readings[-1].current_a == pytest.approx(-1e-3)
    link.assert_all_used()


async def test_fetch_waits_for_packages_already_due_and_keeps_later_ones():
    time = ManualTime(0.0)
    link = ScriptedLink(CONNECT + [(cp(1e-3), STARTED)] + SAFE_RUNNING)
    async with driver(link, time) as pot:
        await pot.start_acquisition(1.0)
        await pot.set_current(1e-3, 2.0)
        time.now = 2.0
        fetching = asyncio.create_task(pot.fetch())
        await asyncio.sleep(0)
        link.feed(cp_point(0.1), cp_point(0.1), cp_point(0.1))  # the third (t = 3 s) is not due yet
        assert [r.t for r in await fetching] == [1.0, 2.0]
        time.now = 3.0
        assert [r.t for r in await pot.fetch()] == [3.0]
    link.assert_all_used()


async def test_readings_are_not_buffered_without_acquisition_but_read_returns_the_latest():
    link = ScriptedLink(CONNECT + [(cp(1e-3), STARTED)] + SAFE_RUNNING)
    async with driver(link) as pot:
        await pot.set_current(1e-3, 2.0)
        reading = asyncio.create_task(pot.read())
        await asyncio.sleep(0)
        link.feed(cp_point(0.3))
        assert (await reading).voltage_v == pytest.approx(0.3)
        link.feed(cp_point(0.31))
        await asyncio.sleep(0.01)
        assert (await pot.read()).voltage_v == pytest.approx(0.31)
        assert await pot.fetch() == []
    link.assert_all_used()


async def test_read_with_the_cell_off_takes_an_open_circuit_sample():
    time = ManualTime(7.0)
    sample = ocp_script(interval_s=0.1, run_time_s=0.2).text
    link = ScriptedLink(
        CONNECT + [(sample, ["e", "M0000", pkg(("ab", 3.91)), pkg(("ab", 3.912)), "*", ""])] + SAFE_IDLE
    )
    async with driver(link, time) as pot:
        reading = await pot.read()
        assert (reading.t, reading.current_a) == (7.0, 0.0)
        assert reading.voltage_v == pytest.approx(3.912)
    link.assert_all_used()


async def test_passing_the_voltage_limit_stops_the_script_and_flags_compliance():
    time = ManualTime(0.0)
    link = ScriptedLink(CONNECT + [(cp(1e-3), STARTED)] + SAFE_IDLE)
    async with driver(link, time) as pot:
        await pot.start_acquisition(1.0)
        await pot.set_current(1e-3, 2.0)
        link.feed(cp_point(1.9), cp_point(2.05), "*", "")  # the script's own limit check ended it
        time.now = 2.0
        readings = await pot.fetch()
        assert [r.in_compliance for r in readings] == [False, True]
        assert await pot.fetch() == []  # a stop at the limit is reported by the reading, not raised
    link.assert_all_used()


async def test_a_script_that_ends_by_itself_is_reported_after_its_readings():
    time = ManualTime(0.0)
    link = ScriptedLink(CONNECT + [(cp(1e-3), STARTED)] + SAFE_IDLE)
    async with driver(link, time) as pot:
        await pot.start_acquisition(1.0)
        await pot.set_current(1e-3, 2.0)
        link.feed(cp_point(0.1), "*", "")
        time.now = 5.0
        assert len(await pot.fetch()) == 1  # readings first
        with pytest.raises(InstrumentStateError, match=r"ended by itself after 1 samples.*cell is off"):
            await pot.fetch()
    link.assert_all_used()


async def test_an_abort_that_crosses_the_scripts_own_end_waits_for_the_z_reply():
    link = ScriptedLink(
        CONNECT
        + [(cp(1e-3), STARTED)]
        + [("Z\n", ["*", "", "Z!0006"])]  # the script ended just before Z arrived
        + [(cp(2e-3, current_range_a=1e-2), STARTED)]
        + SAFE_RUNNING
    )
    async with driver(link) as pot:
        await pot.set_current(1e-3, 2.0)
        await pot.set_current(2e-3, 2.0)
    link.assert_all_used()


async def test_set_voltage_runs_a_chronoamperometry_script():
    script = chronoamperometry_script(
        potential_v=3.6,
        interval_s=1.0,
        run_time_s=1e6,
        current_range_a=1e-2,
        lowest_current_range_a=1e-9,
        current_limit_a=5e-3,
    ).text
    time = ManualTime(0.0)
    link = ScriptedLink(CONNECT + [(script, STARTED)] + SAFE_RUNNING)
    async with driver(link, time) as pot:
        await pot.start_acquisition(1.0)
        await pot.set_voltage(3.6, 5e-3)
        link.feed(pkg(("da", 3.6), ("ba", 2e-3)), pkg(("da", 3.6), ("ba", 6e-3)))
        time.now = 2.0
        readings = await pot.fetch()
        assert [r.current_a for r in readings] == pytest.approx([2e-3, 6e-3])
        assert [r.in_compliance for r in readings] == [False, True]
    link.assert_all_used()


async def test_a_new_sample_period_restarts_the_running_source():
    link = ScriptedLink(
        CONNECT
        + [(cp(1e-3, interval_s=1.0), STARTED), ("Z\n", ["Z", "*", ""]), (cp(1e-3, interval_s=0.2), STARTED)]
        + SAFE_RUNNING
    )
    async with driver(link) as pot:
        await pot.set_current(1e-3, 2.0)
        await pot.start_acquisition(0.2)
    link.assert_all_used()


async def test_output_off_aborts_and_confirms_cell_off():
    link = ScriptedLink(CONNECT + [(cp(1e-3), STARTED), *SAFE_RUNNING] + SAFE_IDLE)
    async with driver(link) as pot:
        await pot.set_current(1e-3, 2.0)
        await pot.output_off()
    link.assert_all_used()


async def test_out_of_range_requests_are_refused_before_anything_is_sent():
    link = ScriptedLink(CONNECT + SAFE_IDLE)
    async with driver(link) as pot:
        with pytest.raises(ValueError, match=r"outside ±0.03 A of the EmStat4 LR"):
            await pot.set_current(0.1, 2.0)
        with pytest.raises(ValueError, match="voltage limit"):
            await pot.set_current(1e-3, 0)
        with pytest.raises(ValueError, match="sample period"):
            await pot.start_acquisition(0)
    link.assert_all_used()


# --------------------------------------------------------------------------------------------
# errors


async def test_a_refused_script_raises_the_code_and_details_then_resyncs():
    link = ScriptedLink(CONNECT + [(cp(1e-3), ["e", "!4027: Line 18, Col 1"])] + SAFE_IDLE)
    async with driver(link) as pot:
        with pytest.raises(InstrumentRejectedError, match=r"CP script refused: error 0x4027.*Line 18, Col 1"):
            await pot.set_current(1e-3, 2.0)
    link.assert_all_used()


async def test_a_garbled_line_is_a_reply_error_and_the_next_command_resyncs():
    time = ManualTime(0.0)
    link = ScriptedLink(
        CONNECT
        + [(cp(1e-3), STARTED)]
        + [("\n", [cp_point(0.1)]), ("Z\n", ["Z", "*", ""]), (CELL_OFF, ["e", ""])]
    )
    async with driver(link, time) as pot:
        await pot.start_acquisition(1.0)
        await pot.set_current(1e-3, 2.0)
        link.feed(cp_point(0.1), "P\xe1\xb2garbage")
        time.now = 3.0
        assert len(await pot.fetch()) == 1
        with pytest.raises(InstrumentReplyError, match="MethodSCRIPT variable"):
            await pot.fetch()
    link.assert_all_used()


async def test_a_package_that_does_not_match_the_script_is_a_reply_error():
    time = ManualTime(0.0)
    link = ScriptedLink(
        CONNECT + [(cp(1e-3), STARTED), ("\n", []), ("Z\n", ["Z", "*", ""]), (CELL_OFF, ["e", ""])]
    )
    async with driver(link, time) as pot:
        await pot.start_acquisition(1.0)
        await pot.set_current(1e-3, 2.0)
        link.feed(pkg(("dc", 100.0), ("ba", 1e-3)))  # a frequency where a potential belongs
        time.now = 1.0
        with pytest.raises(InstrumentReplyError, match="expected a value in V"):
            await pot.fetch()
    link.assert_all_used()


async def test_a_lost_link_surfaces_from_fetch_and_safe_state():
    link = ScriptedLink(CONNECT + [(cp(1e-3), STARTED)])
    pot = driver(link)
    await pot.__aenter__()
    await pot.start_acquisition(1.0)
    await pot.set_current(1e-3, 2.0)
    link.unplug()
    await asyncio.sleep(0.01)
    with pytest.raises(LinkError, match="link lost"):
        await pot.fetch()
    with pytest.raises(LinkError):  # the cell state is unknown: say so, don't pretend
        await pot.safe_state()
    await pot.__aexit__(None, None, None)  # logs, closes, leaves no task behind
    assert link.closed
    link.assert_all_used()


async def test_a_silent_stream_is_declared_dead_by_the_watchdog():
    time = ManualTime(0.0)
    link = ScriptedLink(
        CONNECT
        + [(cp(1e-3, interval_s=0.01), STARTED)]
        + [("\n", []), ("Z\n", ["Z", "*", ""]), (CELL_OFF, ["e", ""])]
    )
    async with driver(link, time, timeout_s=0.05, poll_s=0.01) as pot:
        await pot.start_acquisition(0.01)
        await pot.set_current(1e-3, 2.0)
        await asyncio.sleep(0.2)  # wall time: the watchdog allows 3 intervals + the timeout
        with pytest.raises(InstrumentTimeout, match="no output from the running CP script"):
            await pot.fetch()
    link.assert_all_used()


async def test_safe_state_refuses_to_pretend_when_cell_off_fails():
    link = ScriptedLink(CONNECT + [*IDLE_SYNC, (CELL_OFF, ["e", "!0001"])] + SAFE_IDLE)
    async with driver(link) as pot:
        with pytest.raises(InstrumentRejectedError, match="0x0001"):
            await pot.safe_state()
    link.assert_all_used()


# --------------------------------------------------------------------------------------------
# impedance spectra


def eis_point(frequency: float, z_real: float, z_imag: float) -> str:
    return pkg(("dc", frequency), ("cc", z_real), ("cd", z_imag))


async def test_potentiostatic_spectrum_keeps_the_math_sign_of_z_imag():
    time = ManualTime(50.0)
    script = peis_script(
        amplitude_v=0.01,
        f_start_hz=1e3,
        f_end_hz=10,
        n_points=3,
        e_dc_v=0.0,
        current_range_a=1e-2,
        lowest_current_range_a=1e-9,
        potential_range_v=4.0,
    ).text
    replies = [
        "e",
        "M0000",
        eis_point(1000.0, 120.0, -5.0),
        "Pdc8A1B2C3m;cc896D904m;cd82DB1A8u",  # §2.5 values: Z' 9885.956 Ω, Z'' +2.9946 Ω
        eis_point(10.0, 400.0, -250.0),
        "*",
        "",
    ]
    link = ScriptedLink(CONNECT + [(script, replies)] + SAFE_IDLE)
    async with driver(link, time) as pot:
        points = await pot.impedance_spectrum(
            mode="potentiostatic",
            f_start_hz=1e3,
            f_end_hz=10,
            points_per_decade=1,
            amplitude=0.01,
            dc_level=0.0,
        )
    assert [p.frequency_hz for p in points][::2] == pytest.approx([1000.0, 10.0])
    assert points[1].z_real_ohm == pytest.approx(9885.956) and points[1].z_imag_ohm == pytest.approx(2.9946)
    capacitive = points[2]
    assert capacitive.z_imag_ohm < 0 and capacitive.z_phase_deg < 0  # canonical: negative = capacitive
    assert capacitive.e_dc_v == 0.0 and math.isnan(capacitive.i_dc_a) and capacitive.time_s == 50.0
    link.assert_all_used()


async def test_galvanostatic_spectrum_on_an_emstat4():
    script = geis_script(
        amplitude_a=1e-4,
        f_start_hz=1e5,
        f_end_hz=1e4,
        n_points=2,
        i_dc_a=1e-3,
        current_range_a=1e-2,
        potential_range_v=4.0,
    ).text
    replies = ["e", "M0000", eis_point(1e5, 20.0, -1.0), eis_point(1e4, 21.0, -3.0), "*", ""]
    link = ScriptedLink(CONNECT + [(script, replies)] + SAFE_IDLE)
    async with driver(link) as pot:
        points = await pot.impedance_spectrum(
            mode="galvanostatic",
            f_start_hz=1e5,
            f_end_hz=1e4,
            points_per_decade=1,
            amplitude=1e-4,
            dc_level=1e-3,
        )
    assert [p.i_dc_a for p in points] == [1e-3, 1e-3] and all(math.isnan(p.e_dc_v) for p in points)
    link.assert_all_used()


async def test_a_cancelled_spectrum_aborts_its_script():
    script = peis_script(
        amplitude_v=0.01,
        f_start_hz=1e3,
        f_end_hz=1,
        n_points=4,
        e_dc_v=0.0,
        current_range_a=1e-2,
        lowest_current_range_a=1e-9,
    ).text
    link = ScriptedLink(CONNECT + [(script, ["e", "M0000"]), ("Z\n", ["Z", "*", ""])] + SAFE_IDLE)
    async with driver(link) as pot:
        spectrum = asyncio.create_task(
            pot.impedance_spectrum(
                mode="potentiostatic",
                f_start_hz=1e3,
                f_end_hz=1,
                points_per_decade=1,
                amplitude=0.01,
                dc_level=0,
            )
        )
        await asyncio.sleep(0.01)
        spectrum.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spectrum
    link.assert_all_used()
