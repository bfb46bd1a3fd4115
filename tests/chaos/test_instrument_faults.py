"""Instrument faults (issue 7, item 1), Keithley 2450: a CCD on the simulated clock survives a link
that drops, stalls, garbles, splits frames, refuses connections and an instrument that resets.

Faults are armed at seeded random points of simulated time, inside the runner's own clock sleeps
(`FaultyClock`), so a run is reproducible: each fault fires on the next command or reply after it
is armed, whichever step is running (rest or current). The station is wired as in `labctl run
--sim` (driver → pyvisa-py → TCP → simulator → cell model) with a short VISA timeout, so a stalled
reply costs 0.25 s of wall time and none of simulated time.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.keithley2450 import Keithley2450
from drivers.transports.visa import VisaTransport
from labctl.clock import SimulatedClock
from labctl.data import Bus, EventKind, Journal
from labctl.engine.runner import LinkLossPolicy, Runner
from labctl.engine.state import RunState
from labctl.engine.station import Station
from labctl.protocol import compile_text
from labctl.session import build_result
from labctl.simbench import simulated_cell
from simulators.base import CellHolder
from simulators.keithley2450 import Keithley2450Server, Keithley2450Simulator

SEED = 5
START_NS = 1_800_000_000 * 10**9
VISA_TIMEOUT_S = 0.25
PROTOCOL = """\
labctl: 1
name: ccd-chaos
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
conditions: {pressure: 1 MPa, temperature: 25 degC}
safety: {voltage: {min: -1 V, max: 1 V}, current: {max: 10 mA}}
record: {sample: 1 s, every: 10 s, dv: 1 mV, poll: 10 s}
watch:
  short: {type: short_circuit, collapse: 20 %, debounce: 10 s, action: stop}
steps:
  - rest: {until: {time: 10 min}}
  - sweep:
      parameter: j
      values: {from: 0.05 mA/cm^2, to: 3 mA/cm^2, step: 0.05 mA/cm^2}
      steps:
        - current: {density: "${j}", until: {capacity: 0.1 mAh/cm^2}}
        - current: {density: "-${j}", until: {capacity: 0.1 mAh/cm^2}}
results: [ccd]
"""
KINDS = ("drop", "unplug", "delay", "garble", "split", "reset", "refuse")
"""drop: the next command is lost with its connection; unplug: every connection closed now;
delay: replies late beyond the VISA timeout until the next sleep; garble: the next reply is
corrupted; split: replies in 3-byte fragments for a while; reset: power cycle (state lost, links
dropped); refuse: links dropped and new ones refused for a few simulated seconds."""


@dataclass
class FaultyClock(SimulatedClock):
    """A simulated clock that arms the scheduled faults when the runner wakes past their time."""

    server: Keithley2450Server | None = None
    schedule: list[tuple[float, str]] = field(default_factory=list)
    injected: list[tuple[float, str]] = field(default_factory=list)
    heal_at: float = float("inf")

    def __post_init__(self) -> None:
        super().__init__(start_ns=START_NS)

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        assert self.server is not None
        faults, now = self.server.faults, self.monotonic()
        if now >= self.heal_at or faults.reply_delay_s:  # a stall lasts until the next sleep
            faults.clear()
            self.heal_at = float("inf")
        while self.schedule and self.schedule[0][0] <= now:
            _, kind = self.schedule.pop(0)
            self.injected.append((now, kind))
            if kind == "drop":
                faults.drop_next_command = True
            elif kind == "unplug":
                await self.server.drop_connections()
            elif kind == "delay":
                faults.reply_delay_s = 2 * VISA_TIMEOUT_S
            elif kind == "garble":
                faults.garble_next_reply = True
            elif kind == "split":
                faults.fragment_size, faults.fragment_gap_s = 3, 0.0
                self.heal_at = now + 60.0
            elif kind == "reset":
                await self.server.power_cycle()
            elif kind == "refuse":
                faults.refuse_connections = True
                await self.server.drop_connections()
                self.heal_at = now + 1.5


async def _run(
    tmp_path: Path,
    name: str,
    schedule: list[tuple[float, str]],
    retry_for_s: float = 120.0,
    clock_type: type[FaultyClock] = FaultyClock,
):
    plan = compile_text(PROTOCOL)
    clock = clock_type(schedule=sorted(schedule))
    cell = CellHolder(simulated_cell(plan, SEED), lambda n: simulated_cell(plan, SEED + n))
    simulator = Keithley2450Simulator(cell, time_source=clock.monotonic, seed=SEED)
    (tmp_path / name).mkdir()
    journal = Journal(tmp_path / name / "journal.sqlite")
    async with Keithley2450Server(simulator) as server:
        clock.server = server
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", timeout_s=VISA_TIMEOUT_S)
        async with Keithley2450(transport, time_source=clock.monotonic) as smu:
            runner = Runner(
                plan, Station("chaos", smu), clock, journal, Bus(), link_loss=LinkLossPolicy(retry_for_s)
            )
            outcome = await runner.run()
            result = build_result(plan, journal, outcome, SEED, True)
            samples = list(journal.samples())
            events = list(journal.events())
    journal.close()
    return plan, clock, runner, outcome, result, samples, events


def _schedule(count: int, span_s: float, rng: random.Random) -> list[tuple[float, str]]:
    return [(rng.uniform(30.0, span_s), rng.choice(KINDS)) for _ in range(count)]


def _assert_journal_sound(plan, runner, samples, events, resets=()) -> None:
    """No sample twice; no gap longer than the kept-sample cadence, one poll and the outage window.

    A reset loses what the instrument stored since the last poll: one poll per reset in the gap.
    """
    times = [s.t_ns for s in samples]
    assert len(times) == len(set(times)), "a sample was journaled twice"
    record = plan.steps[0].record
    seconds = sorted((t - START_NS) / 1e9 for t in times)
    for before, after in itertools.pairwise(seconds):
        outage = sum(back - lost for lost, back in runner.link_outages if before <= back and lost <= after)
        lost_polls = max(1, sum(1 for t in resets if before <= t <= after + record.poll_s))
        allowed = record.every_s + lost_polls * record.poll_s + record.sample_s + outage
        assert after - before <= allowed + 1e-6, (before, after)
    lost = [e for e in events if e.kind is EventKind.INSTRUMENT and e.data["message"].startswith("link lost")]
    back = [e for e in events if e.kind is EventKind.RESUMED and e.data.get("link")]
    assert len(back) == len(runner.link_outages) <= len(lost)  # every outage is bracketed in the journal


async def test_a_ccd_survives_faults_at_random_points_and_reports_the_same_ccd(tmp_path, request):
    wall = time.monotonic()
    *_, clean, _, _ = await _run(tmp_path, "clean", [])
    assert clean["state"] == "done" and clean["ccd_mA_cm2"] is not None
    span = 12_000.0  # the clean CCD lasts longer than this: faults land in rest and current steps
    schedule = _schedule(100, span, random.Random(SEED))
    plan, clock, runner, outcome, result, samples, events = await _run(tmp_path, "faulty", schedule)

    injected = len(clock.injected)
    assert outcome.state is RunState.DONE, outcome.reason
    assert not outcome.unsafe
    recovered = injected  # the run went on to its end after every one of them
    durations = [back - lost for lost, back in runner.link_outages]
    resets = [t for t, kind in clock.injected if kind == "reset"]
    _assert_journal_sound(plan, runner, samples, events, resets)
    # A stall, a garbled reply, a dropped command or a reset come back at the first attempt, in no
    # simulated time; refused connections take the back-off (0.25 + 0.5 + 1 s) to come back.
    assert max(durations) <= 2.0
    # The same CCD as the uninterrupted run: the outages take no simulated time, the source is
    # restored at once. The journals differ (acquisition restarts on a new time grid, so the noise
    # draws differ; a reset loses up to one poll of unfetched readings), the CCD does not.
    assert result["ccd_mA_cm2"] == pytest.approx(clean["ccd_mA_cm2"])
    assert result["short_at_mA_cm2"] == pytest.approx(clean["short_at_mA_cm2"])
    kinds = {kind: sum(1 for _, k in clock.injected if k == kind) for kind in KINDS}
    _report(request, injected=injected, recovered=recovered, safely_stopped=0, outages=len(durations))
    print(
        f"\nfaults injected {injected}, recovered {recovered}, safely stopped 0 "
        f"({', '.join(f'{k} {n}' for k, n in kinds.items())}; {len(durations)} outages, "
        f"longest {max(durations):.3g} s simulated; {time.monotonic() - wall:.1f} s wall)"
    )


async def test_a_link_that_stays_down_ends_the_run_failed_with_the_station_safe(tmp_path, request):
    """Connections refused for longer than the policy allows: FAILED, with a reason that says so."""

    class NeverHeals(FaultyClock):
        """Refuses connections from the fault on, for good."""

        async def sleep(self, seconds: float) -> None:
            await super().sleep(seconds)
            if self.injected:
                assert self.server is not None
                self.heal_at = float("inf")
                self.server.faults.refuse_connections = True

    *_, outcome, _, _, events = await _run(tmp_path, "down", [(300.0, "refuse")], 20.0, NeverHeals)
    assert outcome.state is RunState.FAILED
    assert "not back within 20 s" in outcome.reason
    paused = [e for e in events if e.kind is EventKind.PAUSED and e.data.get("link")]
    assert len(paused) == 1
    ended = [e for e in events if e.kind is EventKind.RUN_ENDED]
    assert ended[-1].t_ns - paused[0].t_ns <= 21e9  # stopped within the policy (and its last back-off)
    _report(request, injected=1, recovered=0, safely_stopped=1)
    print("\nfaults injected 1, recovered 0, safely stopped 1 (link down beyond the 20 s policy)")


def _report(request, **figures: float) -> None:
    """Add to the chaos suite's figures when its registry is there (tests/chaos/conftest.py)."""
    try:
        record = request.getfixturevalue("chaos_figures")
    except pytest.FixtureLookupError:
        return
    record("instrument faults (Keithley 2450)", **figures)
