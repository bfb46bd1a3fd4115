"""The step kinds beyond constant current: CV, CC-CV, EIS, mark, wait; ends on current, dV/dt and
detectors; repeat-until on retention; cycle bookkeeping."""

from __future__ import annotations

import itertools
import math

import pytest

from drivers.base import EisPoint
from labctl.data import Bus, EventKind, Journal
from labctl.engine import Runner, RunState, Station
from labctl.errors import ProtocolError
from labctl.protocol import compile_text

HEADER = """\
labctl: 1
name: t
cell: {area: 1 cm^2}
record: {sample: 1 s, every: 10 s, dv: 1 mV, poll: 10 s}
safety: {voltage: {min: 0 V, max: 5 V}, current: {max: 20 mA}}
"""


async def run(text, pot, clock, tmp_path, **kwargs):
    plan = compile_text(text)
    journal = Journal(tmp_path / "journal.sqlite")
    runner = Runner(plan, Station("t", pot), clock, journal, Bus(), **kwargs)
    return runner, journal, await runner.run()


async def test_cccv_switches_to_voltage_hold_and_ends_when_the_current_tapers(
    clock, fake_potentiostat, tmp_path
):
    # OCV rises 1.2 V per hour, 100 Ω in series: at 1 mA the cell reaches 4.0 V at 2700 s; held at
    # 4.0 V its current tapers linearly and passes 0.1 mA at 2970 s.
    pot = fake_potentiostat(lambda t, i: 3.0 + 1.2 * min(1.0, t / 3600) + 100.0 * i)
    text = (
        HEADER
        + "steps:\n  - cccv: {current: 1 mA, voltage: 4.0 V, until: {current_below: 0.1 mA, time: 10 h}}\n"
    )
    _, journal, outcome = await run(text, pot, clock, tmp_path)
    assert outcome.state is RunState.DONE
    assert [c[0] for c in pot.commands[:3]] == ["current", "voltage", "off"]
    assert pot.commands[1][1] == 4.0
    ended = next(journal.events([EventKind.STEP_ENDED]))
    assert "current below" in ended.data["reason"]
    assert 2970 <= ended.data["duration_s"] <= 2970 + 10  # seen at the next poll (10 s)
    last = list(journal.samples())[-1].values
    assert last["voltage_v"] == pytest.approx(4.0, abs=2e-3) and abs(last["current_a"]) <= 1.05e-4


async def test_voltage_hold_ends_on_time_and_counts_its_charge(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 3.0 + 100.0 * i)  # at 3.1 V: 1 mA
    text = HEADER + "steps:\n  - voltage: {value: 3.1 V, until: {time: 1 h}}\n"
    _, journal, _ = await run(text, pot, clock, tmp_path)
    ended = next(journal.events([EventKind.STEP_ENDED]))
    assert ended.data["charge_c"] == pytest.approx(3.6, rel=1e-3)


async def test_rest_ends_when_dvdt_settles(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 3.0 + 0.1 * math.exp(-t / 600.0))  # relaxing OCV
    text = HEADER + "steps:\n  - rest: {until: [{dvdt_below: 1 mV/h, debounce: 5 min}, {time: 10 h}]}\n"
    _, journal, _ = await run(text, pot, clock, tmp_path)
    ended = next(journal.events([EventKind.STEP_ENDED]))
    assert "dvdt below" in ended.data["reason"]
    # |dV/dt| = 0.1/600·exp(-t/600) V/s falls below 1 mV/h at t ≈ 600·ln(360) ≈ 3530 s
    assert 3300 < ended.data["duration_s"] < 4200


async def test_detector_as_an_end_condition_uses_the_steps_action(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 1e-6 if t > 600 else 50.0 * i)
    text = (
        HEADER.replace("min: 0 V", "min: -1 V")
        + """\
watch:
  short: {type: short_circuit, action: stop}
steps:
  - current: {current: 1 mA, until: [{time: 1 h}, {detector: short, action: {goto: after}}]}
  - rest: {until: {time: 1 min}}
  - mark: {label: after, note: the cell shorted}
"""
    )
    _, journal, outcome = await run(text, pot, clock, tmp_path)
    assert outcome.state is RunState.DONE and outcome.reason == "all steps done"
    started = [e.data["kind"] for e in journal.events([EventKind.STEP_STARTED])]
    assert started == ["current", "mark"]  # the rest was skipped by the goto
    assert next(journal.events([EventKind.MARK])).data["note"] == "the cell shorted"


async def test_repeat_until_retention_stops_the_loop_after_the_fading_cycle(
    clock, fake_potentiostat, tmp_path
):
    class FadingCell:
        """Discharge ends at 3.0 V; usable capacity shrinks 5 % per cycle."""

        def __init__(self) -> None:
            self.charge = 0.0
            self.t = 0.0
            self.capacity = 3.6
            self.last_sign = 0

        def __call__(self, t: float, i: float) -> float:
            self.charge += i * (t - self.t)
            self.t = t
            sign = (i > 0) - (i < 0)
            if sign > 0 and self.last_sign < 0:
                self.capacity *= 0.95
                self.charge = 0.0
            self.last_sign = sign or self.last_sign
            return 3.0 + 1.0 * self.charge / self.capacity + 10.0 * i

    pot = fake_potentiostat(FadingCell())
    text = (
        HEADER
        + """\
steps:
  - repeat:
      until: {retention_below: 85 %}
      max: 20
      steps:
        - current: {current: 1 mA, until: [{voltage_above: 4.0 V}, {time: 3 h}]}
        - current: {current: -1 mA, until: [{voltage_below: 2.99 V}, {time: 3 h}]}
  - mark: {note: done}
"""
    )
    _, journal, _outcome = await run(text, pot, clock, tmp_path)
    cycles = [e.data for e in journal.events([EventKind.CYCLE])]
    retentions = [c["retention"] for c in cycles]
    assert retentions[0] == pytest.approx(1.0)
    assert all(b < a for a, b in itertools.pairwise(retentions))
    assert retentions[-1] < 0.85 <= retentions[-2]  # stopped right after the first cycle below 85 %
    assert len(cycles) < 20
    assert next(journal.events([EventKind.MARK])).data["note"] == "done"
    assert cycles[1]["efficiency"] == pytest.approx(cycles[1]["discharge_c"] / cycles[1]["charge_c"])


async def test_capacity_retention_watch_stops_a_fixed_cycle_count(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 3.5)
    text = (
        HEADER
        + """\
watch:
  fade: {type: capacity_retention, below: 80 %, action: stop}
steps:
  - repeat:
      times: 3
      steps:
        - current: {current: 1 mA, until: {time: 1 h}}
        - current: {current: -1 mA, until: {time: 1 h}}
"""
    )
    _, journal, outcome = await run(text, pot, clock, tmp_path)
    assert outcome.reason == "all steps done"  # no fade: the watch never fires
    assert len(list(journal.events([EventKind.CYCLE]))) == 3


async def test_wait_pauses_safely_and_resumes_on_timeout(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 3.5)
    text = (
        HEADER
        + """\
steps:
  - current: {current: 1 mA, until: {time: 10 min}}
  - wait: {message: take the X-ray scan, timeout: 30 min}
  - current: {current: 1 mA, until: {time: 10 min}}
"""
    )
    _runner, journal, outcome = await run(text, pot, clock, tmp_path)
    assert outcome.state is RunState.DONE
    kinds = [e.kind for e in journal.events()]
    assert EventKind.PAUSED in kinds and EventKind.RESUMED in kinds
    assert ("off", 0.0) in pot.commands[: pot.commands.index(("current", 1e-3), 1)]  # safe during the wait
    assert clock.monotonic() == pytest.approx(50 * 60)


async def test_wait_without_timeout_needs_resume(clock, fake_potentiostat, tmp_path):
    import asyncio

    pot = fake_potentiostat(lambda t, i: 3.5)
    plan = compile_text(HEADER + "steps:\n  - wait: {message: press go}\n")
    runner = Runner(plan, Station("t", pot), clock, Journal(tmp_path / "j.sqlite"), Bus())
    task = asyncio.create_task(runner.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert runner.state is RunState.PAUSED and not task.done()
    runner.resume()
    outcome = await task
    assert outcome.state is RunState.DONE


class FakeEisPotentiostat:
    """Adds SupportsEIS to the fake: a Randles cell 10 Ω + (100 Ω ∥ 1 µF)."""

    def __init__(self, base) -> None:
        self.base = base
        self.requests = []

    def __getattr__(self, name):
        return getattr(self.base, name)

    async def impedance_spectrum(self, *, mode, f_start_hz, f_end_hz, points_per_decade, amplitude, dc_level):
        self.requests.append((mode, f_start_hz, f_end_hz, points_per_decade, amplitude, dc_level))
        decades = math.log10(f_start_hz / f_end_hz)
        count = round(decades * points_per_decade) + 1
        points = []
        for k in range(count):
            f = f_start_hz * 10 ** (-k / points_per_decade)
            z = 10 + 100 / (1 + 2j * math.pi * f * 100 * 1e-6)
            points.append(EisPoint(f, z.real, z.imag, dc_level, 0.0, self.base.clock.monotonic()))
        return points


async def test_eis_step_journals_a_spectrum_around_the_open_circuit_voltage(
    clock, fake_potentiostat, tmp_path
):
    pot = FakeEisPotentiostat(fake_potentiostat(lambda t, i: 3.7))
    text = HEADER + "steps:\n  - eis: {from: 100 kHz, to: 1 Hz, per_decade: 5, amplitude: 10 mV}\n"
    _, journal, _ = await run(text, pot, clock, tmp_path)
    assert pot.requests == [("potentiostatic", 1e5, 1.0, 5, 0.01, pytest.approx(3.7))]
    points = list(journal.samples(kind="eis"))
    assert len(points) == 26
    assert all(p.values["z_imag_ohm"] <= 0 for p in points)  # capacitive: negative, math convention
    assert points[0].values["z_real_ohm"] == pytest.approx(10, abs=0.1)
    assert points[-1].values["z_real_ohm"] == pytest.approx(110, abs=0.1)
    assert {p.values["spectrum"] for p in points} == {1.0}


async def test_eis_on_an_instrument_without_it_fails_cleanly(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 3.7)
    text = HEADER + "steps:\n  - eis: {from: 100 kHz, to: 1 Hz}\n"
    _, _, outcome = await run(text, pot, clock, tmp_path)
    assert outcome.state is RunState.FAILED and "cannot measure impedance" in outcome.reason
    assert pot.output is False


async def test_an_alarm_pauses_safely_when_someone_can_resume_and_the_step_runs_again(
    clock, fake_potentiostat, tmp_path
):
    import asyncio

    breaches = {"left": 1}

    def cell(t: float, i: float) -> float:
        if breaches["left"] and 100 < t < 200:
            return 9.0  # one excursion above the 5 V safety limit
        return 3.5

    pot = fake_potentiostat(cell)
    plan = compile_text(HEADER + "steps:\n  - current: {current: 1 mA, until: {time: 10 min}}\n")
    runner = Runner(
        plan, Station("t", pot), clock, Journal(tmp_path / "j.sqlite"), Bus(), pause_on_alarm=True
    )
    task = asyncio.create_task(runner.run())
    for _ in range(200):
        await asyncio.sleep(0.005)
        if runner.state is RunState.PAUSED:
            break
    assert runner.state is RunState.PAUSED and pot.output is False
    breaches["left"] = 0
    runner.resume()
    outcome = await task
    assert outcome.state is RunState.DONE
    kinds = [e.kind for e in runner.journal.events()]
    assert kinds.count(EventKind.STEP_STARTED) == 2  # the interrupted step ran again, whole
    assert EventKind.LIMIT in kinds and EventKind.PAUSED in kinds and EventKind.RESUMED in kinds


async def test_conditions_outside_the_pressure_window_are_an_alarm(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 3.5)
    text = HEADER.replace("current: {max: 20 mA}}", "current: {max: 20 mA}, pressure: {max: 3 MPa}}") + (
        "conditions: {pressure: 5 MPa}\nsteps:\n  - rest: {until: {time: 1 min}}\n"
    )
    _, _, outcome = await run(text, pot, clock, tmp_path)
    assert outcome.state is RunState.ALARM and "stack pressure 5 MPa outside" in outcome.reason


async def test_a_ramp_per_new_cell_ends_at_each_cells_short(clock, fake_potentiostat, tmp_path):
    """A CCD campaign: each `new_cell` wait swaps the cell; a short ends only that cell's ramp."""
    from labctl.analysis.ccd import ccd_per_cell

    cell = {"n": 1}
    shorts_at_ma = {2: 2.0, 3: 3.0}  # the cells put in at the two waits; the second is tougher

    def volts(t, i):
        return 1e-6 if abs(i) >= shorts_at_ma[cell["n"]] * 1e-3 - 1e-9 else 20.0 * i

    def swap() -> None:
        cell["n"] += 1

    pot = fake_potentiostat(volts)
    text = (
        HEADER.replace("min: 0 V", "min: -1 V")
        + """\
watch:
  short: {type: short_circuit, action: next}
steps:
  - sweep:
      parameter: level
      values: [1, 2]
      steps:
        - wait: {message: put a fresh cell in, new_cell: true}
        - sweep:
            parameter: j
            values: [1 mA/cm^2, 2 mA/cm^2, 3 mA/cm^2, 4 mA/cm^2]
            until: {detector: short}
            steps:
              - current: {density: "${j}", until: {time: 5 min}}
              - current: {density: "-${j}", until: {time: 5 min}}
"""
    )
    plan = compile_text(text)
    journal = Journal(tmp_path / "journal.sqlite")
    station = Station("t", pot, replace_cell=swap)
    outcome = await Runner(plan, station, clock, journal, Bus(), auto_resume=True).run()
    assert outcome.state is RunState.DONE
    assert cell["n"] == 3  # swapped at both waits
    cells = ccd_per_cell(journal)
    assert [(c.result.ccd_ma_cm2, c.result.short_at_ma_cm2) for c in cells] == [(1.0, 2.0), (2.0, 3.0)]
    started = [
        e.data["density_a_m2"]
        for e in journal.events([EventKind.STEP_STARTED])
        if e.data["kind"] == "current"
    ]
    assert max(abs(d) for d in started) == pytest.approx(30.0)  # 3 mA/cm²: no cell ramped to 4


class _LeakingRig:
    """A pressure loop that holds its target until t = 20 min, then loses 1 MPa (a leak)."""

    def __init__(self, clock):
        self.clock = clock
        self.target_pa = None
        self.pressure_pa = 0.0
        self.fault = None
        self.settings = type("S", (), {"period_s": 1.0, "hold_period_s": 10.0})()
        self.t0 = clock.monotonic()

    async def read_pressure(self):
        held = self.target_pa if self.target_pa is not None else self.pressure_pa
        leak = 1e6 if self.clock.monotonic() - self.t0 > 1200 else 0.0
        self.pressure_pa = held - leak
        return self.pressure_pa

    async def step(self):
        return await self.read_pressure()

    async def settle(self, target_pa, *, rate_below, hold_s, timeout_s):
        self.target_pa = target_pa
        return await self.read_pressure()

    async def hold(self):
        self.target_pa = None

    async def set_target(self, target_pa):
        self.target_pa = target_pa

    async def release(self):
        self.target_pa = None


async def test_a_pressure_drift_watch_raises_the_alarm_when_the_rig_cannot_hold(
    clock, fake_potentiostat, tmp_path
):
    pot = fake_potentiostat(lambda t, i: 0.0)
    text = (
        HEADER.replace("min: 0 V", "min: -1 V")
        + """\
watch:
  rig: {type: pressure_drift, band: 0.2 MPa, debounce: 1 min}
steps:
  - set: {pressure: 5 MPa}
  - rest: {until: {time: 1 h}}
"""
    )
    plan = compile_text(text)
    journal = Journal(tmp_path / "journal.sqlite")
    rig = _LeakingRig(clock)
    station = Station("t", pot, pressure=rig)
    outcome = await Runner(plan, station, clock, journal, Bus()).run()
    assert outcome.state is RunState.ALARM
    finding = next(journal.events([EventKind.DETECTOR]))
    assert finding.data["watch"] == "rig" and "off its set-point" in finding.data["message"]
    assert finding.data["measured"] == pytest.approx(4e6)
    assert finding.data["since_t"] - rig.t0 == pytest.approx(1200, abs=11)  # off from the leak on
    assert clock.monotonic() - rig.t0 < 1200 + 60 + 30  # the alarm came one debounce later, not at 1 h


def test_a_temperature_band_must_be_a_difference():
    text = (
        HEADER
        + "watch:\n  heat: {type: temperature_drift, band: 2 degC}\n"
        + "steps:\n  - rest: {until: {time: 1 min}}\n"
    )
    with pytest.raises(ProtocolError, match="temperature difference"):
        compile_text(text)


async def test_an_operators_pause_makes_the_station_safe_and_the_step_goes_on_where_it_was(
    clock, fake_potentiostat, tmp_path
):
    import asyncio

    pot = fake_potentiostat(lambda t, i: 3.5 + 10 * i)
    text = HEADER + "steps:\n  - current: {current: 1 mA, until: {time: 1 h}}\n"
    plan = compile_text(text)
    journal = Journal(tmp_path / "journal.sqlite")
    runner = Runner(plan, Station("t", pot), clock, journal, Bus())
    t_start = clock.monotonic()

    async def until(condition) -> None:  # not on the clock: the runner's sleeps move time
        for _ in range(100_000):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError("never happened")

    async def operator() -> None:
        await until(lambda: clock.monotonic() - t_start >= 600)
        runner.pause()
        await until(lambda: runner.state is RunState.PAUSED)
        assert pot.output is False  # safe while paused
        await clock.sleep(1800)  # the paused runner waits for resume(), not for the clock
        runner.resume()

    operator_task = asyncio.create_task(operator())
    outcome = await runner.run()
    await operator_task
    assert outcome.state is RunState.DONE
    ended = next(journal.events([EventKind.STEP_ENDED]))
    assert ended.data["duration_s"] == pytest.approx(3600, abs=11)  # the pause is not counted
    assert ended.data["charge_c"] == pytest.approx(3.6, rel=0.01)  # 1 mA × 1 h: nothing while off
    assert clock.monotonic() - t_start == pytest.approx(3600 + 1800, abs=30)
    kinds = [e.kind for e in journal.events()]
    assert kinds.count(EventKind.PAUSED) == 1 and kinds.count(EventKind.RESUMED) == 1
