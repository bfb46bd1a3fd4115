import asyncio
from pathlib import Path

import pytest

from labctl.data import Bus, EventKind, Journal
from labctl.engine import Runner, RunState, Station
from labctl.protocol import compile_text

HEADER = """\
labctl: 1
name: t
cell: {area: 1 cm^2}
record: {sample: 1 s, every: 10 s, dv: 1 mV, poll: 10 s}
safety: {voltage: {min: -1 V, max: 1 V}}
"""

RAMP = (
    HEADER
    + """\
watch:
  short: {type: short_circuit, collapse: 20 %, debounce: 10 s, action: stop}
steps:
  - sweep:
      parameter: j
      values: [0.1 mA/cm^2, 0.2 mA/cm^2, 0.3 mA/cm^2]
      steps:
        - current: {density: '${j}', until: {capacity: 0.1 mAh/cm^2}}
        - current: {density: '-${j}', until: {capacity: 0.1 mAh/cm^2}}
"""
)


async def run(text: str, pot, clock, tmp_path: Path):
    plan = compile_text(text)
    journal = Journal(tmp_path / "journal.sqlite")
    outcome = await Runner(plan, Station("test", pot), clock, journal, Bus()).run()
    return plan, journal, outcome


async def test_capacity_steps_end_exactly_at_their_charge(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 100.0 * i)  # a 100 Ω resistor
    _, journal, outcome = await run(
        RAMP.replace(
            "watch:\n  short: {type: short_circuit, collapse: 20 %, debounce: 10 s, action: stop}\n", ""
        ),
        pot,
        clock,
        tmp_path,
    )
    assert outcome.state is RunState.DONE
    ends = list(journal.events([EventKind.STEP_ENDED]))
    assert len(ends) == 6
    for end in ends:  # 0.1 mAh/cm² on 1 cm² = 0.36 C
        assert abs(end.data["charge_c"]) == pytest.approx(0.36, rel=1e-6)
    # 0.1 mAh at 0.1, 0.2, 0.3 mA: 1 h, 30 min, 20 min per half-cycle
    assert clock.monotonic() == pytest.approx(2 * (3600 + 1800 + 1200), rel=1e-9)
    assert pot.commands[-1] == ("off", 0.0)


async def test_kept_samples_follow_the_recording_rule(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 100.0 * i)
    _, journal, _ = await run(
        HEADER + "steps:\n  - current: {current: 1 mA, until: {time: 100 s}}\n", pot, clock, tmp_path
    )
    times = [s.t_ns for s in journal.samples()]
    # first reading at 1 s, then every 10 s at constant voltage, and the step's last reading at 100 s
    assert [(t - times[0]) / 1e9 for t in times] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]


async def test_voltage_changes_are_kept_even_between_intervals(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 0.1 + 0.0006 * t)  # 0.6 mV per second
    _, journal, _ = await run(
        HEADER + "steps:\n  - current: {current: 1 mA, until: {time: 60 s}}\n", pot, clock, tmp_path
    )
    # 1 mV is crossed every second sample (1.2 mV), well inside the 10 s interval; plus the last one
    assert journal.count_samples() == 31


async def test_debounced_short_ends_the_ramp_at_the_density_where_it_collapsed(
    clock, fake_potentiostat, tmp_path
):
    short_at = {"t": None}

    def cell(t: float, i: float) -> float:
        if abs(i) >= 0.25e-3 and short_at["t"] is None:
            short_at["t"] = t + 120  # shorts two minutes into the 0.3 mA/cm² level
        if short_at["t"] is not None and t >= short_at["t"]:
            return 1e-6 * (1 if i > 0 else -1)
        return 50.0 * i

    pot = fake_potentiostat(cell)
    _, journal, outcome = await run(RAMP, pot, clock, tmp_path)
    assert outcome.state is RunState.DONE
    assert "short circuit" in outcome.reason
    detector = next(journal.events([EventKind.DETECTOR]))
    assert detector.data["density_a_m2"] == pytest.approx(3.0)  # 0.3 mA/cm²
    started = [e for e in journal.events([EventKind.STEP_STARTED])]
    assert len(started) == 5  # the last (plating at 0.3) never ran


async def test_single_noisy_sample_is_not_a_short(clock, fake_potentiostat, tmp_path):
    def cell(t: float, i: float) -> float:
        return 1e-6 if 1000 <= t < 1003 else 50.0 * i  # 3 s collapse, then recovers

    pot = fake_potentiostat(cell)
    _, journal, outcome = await run(RAMP, pot, clock, tmp_path)
    assert outcome.reason == "all steps done"
    soft = list(journal.events([EventKind.SOFT_SHORT]))
    assert len(soft) == 1 and soft[0].data["duration_s"] == pytest.approx(3.0)


async def test_safety_breach_makes_the_station_safe_and_ends_in_alarm(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 1.5 if t > 30 else 0.1)
    _, journal, outcome = await run(
        HEADER + "steps:\n  - current: {current: 1 mA, until: {time: 1 h}}\n  - rest: {until: {time: 1 h}}\n",
        pot,
        clock,
        tmp_path,
    )
    assert outcome.state is RunState.ALARM
    assert "left the safety window" in outcome.reason
    assert pot.commands[1] == ("off", 0.0)  # made safe right after the breach, before anything else
    assert clock.monotonic() < 45  # within one poll of the breach
    assert list(journal.events([EventKind.LIMIT]))


ONE_HOUR_AT_1_MA = HEADER + "steps:\n  - current: {current: 1 mA, until: {time: 1 h}}\n"


def one_hour_runner(pot, clock, tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    return Runner(compile_text(ONE_HOUR_AT_1_MA), Station("t", pot), clock, journal, Bus()), journal


async def test_cancelled_run_leaves_the_output_off(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 0.1)
    runner, journal = one_hour_runner(pot, clock, tmp_path)
    original_fetch = pot.fetch

    async def fetch_then_cancel():
        readings = await original_fetch()
        if clock.monotonic() > 100:
            asyncio.current_task().cancel()
        return readings

    pot.fetch = fetch_then_cancel
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    assert pot.output is False and pot.safe_calls >= 1
    assert runner.state is RunState.ABORTED
    ended = list(journal.events([EventKind.RUN_ENDED]))
    assert ended[0].data["state"] == "aborted"


async def test_lost_link_fails_the_run_and_says_the_cell_may_be_live(clock, fake_potentiostat, tmp_path):
    from drivers.errors import LinkError

    pot = fake_potentiostat(lambda t, i: 0.1)
    original_fetch = pot.fetch

    async def fetch():
        if clock.monotonic() > 60:
            raise LinkError("bench: link lost during ':TRAC:ACT?'")
        return await original_fetch()

    async def safe_state():
        raise LinkError("bench: link lost during ':ABOR;:OUTP OFF'")

    pot.fetch, pot.safe_state = fetch, safe_state
    _, journal, outcome = await run(ONE_HOUR_AT_1_MA, pot, clock, tmp_path)
    assert outcome.state is RunState.FAILED and "link lost" in outcome.reason
    assert outcome.unsafe and "switch its output off by hand" in outcome.unsafe[0]
    kinds = [e.kind for e in journal.events()]
    assert EventKind.INSTRUMENT in kinds and EventKind.ALARM in kinds and kinds[-1] is EventKind.RUN_ENDED
    assert journal.count_samples() > 0  # what was measured before the loss is kept


async def test_abort_makes_safe_and_returns_an_aborted_outcome(clock, fake_potentiostat, tmp_path):
    pot = fake_potentiostat(lambda t, i: 0.1)
    runner, journal = one_hour_runner(pot, clock, tmp_path)
    original_fetch = pot.fetch

    async def fetch():
        if clock.monotonic() > 100:
            runner.abort("operator pressed Ctrl-C")
            runner.abort("twice")  # a second request changes nothing
        return await original_fetch()

    pot.fetch = fetch
    outcome = await runner.run()
    assert outcome.state is RunState.ABORTED and outcome.reason == "operator pressed Ctrl-C"
    assert pot.output is False and not outcome.unsafe
    assert not asyncio.current_task().cancelling()
    assert next(journal.events([EventKind.RUN_ENDED])).data["state"] == "aborted"


async def test_readings_that_arrive_after_their_step_ended_are_journaled_with_that_step(
    clock, fake_potentiostat, tmp_path
):
    pot = fake_potentiostat(lambda t, i: 100.0 * i)
    lagging: list = []
    original_fetch = pot.fetch

    async def fetch_with_lag():  # the instrument stores each reading 1.5 s after it was taken
        lagging.extend(await original_fetch())
        ready = [r for r in lagging if r.t <= clock.monotonic() - 1.5]
        del lagging[: len(ready)]
        return ready

    pot.fetch = fetch_with_lag
    text = HEADER.replace("every: 10 s", "every: 1 s") + (
        "steps:\n  - current: {current: 1 mA, until: {time: 20 s}}\n"
        "  - current: {current: 2 mA, until: {time: 20 s}}\n"
    )
    _, journal, _ = await run(text, pot, clock, tmp_path)
    by_step: dict[int, list[float]] = {}
    for sample in journal.samples():
        by_step.setdefault(sample.step, []).append(sample.values["current_a"])
    assert by_step[0] == [1e-3] * 20  # all 20 readings of step 0, including the 2 that came late
    assert by_step[1] == [2e-3] * 18  # step 1's last 2 never arrived before the run ended
