"""The runner: interprets a Plan on a Station, step by step, sample by sample.

Steps are plain records; a registry maps each step kind to the coroutine that runs it (bluesky's
command registry, STYLE.md rule 13). A source step (rest, current, voltage, CC-CV) programs the
source, then loops: sleep on the clock until the next poll or the predicted end of the step,
collect the instrument's buffered samples, judge each (safety limits, watches, sample ends), keep
what the recording rule keeps, journal it, publish it. Time and capacity ends are checked against
the clock with the charge extrapolated to *now*, so in simulated time a step ends exactly when its
capacity is reached, not at the next poll.

`run()` runs a whole plan. `begin()` / `execute(step)` / `finish()` run steps one at a time for the
Python API (labctl.api), through the same code.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.base import EisPoint, Reading, SupportsEIS
from drivers.errors import InstrumentError, InstrumentReplyError, LinkError
from labctl.clock import Clock
from labctl.data import Bus, Event, EventKind, Journal, Sample, Status
from labctl.engine.checkpoint import CHECKPOINT_KEY, Checkpoint, StepCheckpoint, pack_engine, unpack_engine
from labctl.engine.cycles import Cycle, CycleTracker
from labctl.engine.detectors import DETECTORS, Finding
from labctl.engine.pressure import RELEASED_PA, PressureFault, StackPressureLoop, ramp_to, run_loop
from labctl.engine.state import RunState, check_transition
from labctl.engine.station import Station
from labctl.protocol.plan import Action, End, Plan, PlanStep

log = logging.getLogger(__name__)

_RELATIVE_TOLERANCE = 1e-9
_SOURCE_KINDS = ("rest", "current", "voltage", "cccv")
DEFAULT_SETTLE_RATE_PA_S = 0.01e6 / 60  # 0.01 MPa/min
DEFAULT_SETTLE_HOLD_S = 60.0
DEFAULT_TEMPERATURE_RATE_K_S = 0.1 / 60  # 0.1 K/min
TEMPERATURE_TOLERANCE_K = 0.5
TEMPERATURE_POLL_S = 10.0
_LINK_IN_DOUBT = (LinkError, InstrumentReplyError)
"""Potentiostat errors a reconnect can cure: a lost link, a timeout, a garbled or unparsable reply."""


@dataclass(frozen=True)
class LinkLossPolicy:
    """What a source step does when the potentiostat's link is lost (docs/reliability.md).

    The station is made safe (best effort: the link may be gone), the run pauses, and the driver
    reconnects with back-off for up to `retry_for_s` on the run's clock; then the step's source is
    programmed again and the step goes on. Not back in time: the run ends FAILED.

    Attributes:
        retry_for_s: how long to try reconnecting before giving up (seconds on the run's clock).
    """

    retry_for_s: float = 120.0


@dataclass
class RunOutcome:
    """How a run ended."""

    state: RunState
    reason: str
    last_step: int
    unsafe: list[str] = field(default_factory=list)
    """Roles that could not be confirmed safe at the end (the operator must check them)."""


@dataclass
class StepResult:
    """How one step ended (what the Python API returns).

    Attributes:
        action: what the plan does next (next, stop, alarm, goto, record).
        reason: why the step ended, in words.
        charge_c: charge passed in the step (signed, C).
        duration_s: how long it ran.
        fired: names of the watches that fired during the step.
        spectrum: the impedance spectrum of an EIS step.
    """

    action: Action
    reason: str
    charge_c: float = 0.0
    duration_s: float = 0.0
    fired: list[str] = field(default_factory=list)
    spectrum: list[EisPoint] = field(default_factory=list)


@dataclass
class _StepProgress:
    """What the runner tracks inside one source step."""

    step: PlanStep
    t0: float
    current_a: float
    phase: str = "cc"
    charge_c: float = 0.0
    last_t: float | None = None
    last_current: float = 0.0
    kept_t: float | None = None
    kept_v: float = 0.0
    kept_i: float = 0.0
    last_reading: Reading | None = None
    last_kept: bool = False
    hold_since: dict[int, float] = field(default_factory=dict)
    window: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    fired: list[str] = field(default_factory=list)
    resumed_at: float = -math.inf
    """Readings up to here were taken while paused (output off): journaled, not judged."""

    def charge_now(self, now: float) -> float:
        """Charge passed in this step up to `now`, holding the last measured current."""
        if self.last_t is None:
            return self.current_a * (now - self.t0)
        return self.charge_c + self.last_current * max(0.0, now - self.last_t)


class Runner:
    """Runs one plan on one station.

    Args:
        plan: the compiled protocol.
        station: the instruments, by role.
        clock: real or simulated time.
        journal: where every kept sample and every event goes first.
        bus: live listeners (progress, later TUI/MQTT).
        auto_resume: `wait` steps continue at once (simulated runs with nobody to press a key);
            otherwise they wait for `resume()` or their timeout.
        pause_on_alarm: after an alarm (a safety limit, a watch's `alarm`) the station is made safe
            and the run pauses until `resume()` (the step then starts again) or `abort()`; without
            it (nobody to ask) the run ends as an alarm.
        seed: the run's seed, kept in each checkpoint.
        on_checkpoint: called with each checkpoint's number just before it is committed (the
            simulated bench saves its physics there, docs/reliability.md "Crash and resume").
        link_loss: how long a source step tries to get a lost potentiostat link back.
    """

    def __init__(
        self,
        plan: Plan,
        station: Station,
        clock: Clock,
        journal: Journal,
        bus: Bus,
        *,
        auto_resume: bool = False,
        pause_on_alarm: bool = False,
        seed: int | None = None,
        on_checkpoint: Callable[[int], None] | None = None,
        link_loss: LinkLossPolicy | None = None,
    ) -> None:
        self.plan = plan
        self.station = station
        self.clock = clock
        self.journal = journal
        self.bus = bus
        self.auto_resume = auto_resume
        self.pause_on_alarm = pause_on_alarm
        self.seed = seed
        self.on_checkpoint = on_checkpoint
        self.link_loss = link_loss or LinkLossPolicy()
        self.link_outages: list[tuple[float, float]] = []
        """Each recovered outage of the potentiostat link: (lost, resumed) on the run's clock."""
        self.state = RunState.IDLE
        self._detectors = [DETECTORS[w.type](w) for w in plan.watches]
        self._watches = {w.name: w for w in plan.watches}
        retention = [w for w in plan.watches if w.type == "capacity_retention"]
        self.cycles = CycleTracker(int(retention[0].params["reference_cycle"]) if retention else 1)
        self._samples: list[Sample] = []
        self._events: list[Event] = []
        self._sample_period = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._abort_reason: str | None = None
        self._previous_step = -1
        self._spectra = 0
        self._temperature = plan.temperature_k
        self._temperature_target: float | None = None
        """The heater's set-point once a `set` gave one (the temperature-drift watch judges against it)."""
        self._pressure_task: asyncio.Task[None] | None = None
        self._pressure_stop = asyncio.Event()
        self._participant: Any = None
        self._fired_since_check: set[str] = set()
        self._resume = asyncio.Event()
        self._pause_reason: str | None = None
        self._started_at = 0.0
        self._checkpoints = 0
        self._position: tuple[int, bool] = (0, False)
        """(step, started): the step in progress, or the next one to run; what a checkpoint records."""
        self._end: dict[str, Any] | None = None
        self._progress: _StepProgress | None = None
        self._restored: Checkpoint | None = None
        self._restored_step: StepCheckpoint | None = None
        self._resumed_progress: _StepProgress | None = None
        self._handlers: dict[str, Callable[[PlanStep], Awaitable[StepResult]]] = {
            **dict.fromkeys(_SOURCE_KINDS, self._run_source_step),
            "eis": self._run_eis,
            "mark": self._run_mark,
            "wait": self._run_wait,
            "set": self._run_set,
            "check": self._run_check,
        }

    # --- control ----------------------------------------------------------------------------------

    def abort(self, reason: str = "aborted by the operator") -> None:
        """End the run now: the station is made safe and `run()` returns an ABORTED outcome.

        Safe to call from a signal handler or another task; a second call does nothing.
        """
        if self._abort_reason is None and self._task is not None and not self._task.done():
            self._abort_reason = reason
            self._task.cancel()

    def resume(self) -> None:
        """Let a paused run continue: a `wait` step, an alarm pause or an operator's `pause()`."""
        self._resume.set()

    def pause(self, reason: str = "paused by the operator") -> None:
        """Pause at the next poll of a source step: station safe, then the step goes on after `resume()`.

        The step keeps what it has done: its time ends do not count the pause, its charge counts
        only what flowed. Outside source steps the pause waits for the next one.
        """
        if self._pause_reason is None:
            self._pause_reason = reason
            self._resume.clear()

    def mark(self, note: str, step: int = -1) -> None:
        """Journal an operator's marker (EventKind.MARK) now, e.g. "glovebox opened"; `step`: its step.

        The event is on the bus at once and in the journal with the run's next write.
        """
        self._event(step, EventKind.MARK, {"note": note, "operator": True})

    def _set_state(self, new: RunState) -> None:
        self.state = check_transition(self.state, new)

    # --- whole plan -------------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        """Run every step; always ends with the station in its safe state."""
        await self.begin()
        outcome = RunOutcome(RunState.DONE, "all steps done", -1)
        index, resumed = 0, False
        if self._restored is not None:  # labctl resume: where the checkpoint says
            index, resumed = self._restored.step, self._restored.started
            outcome.last_step = self._restored.previous_step
            if self._restored.end is not None:  # the run had decided to end: only finish it
                end = self._restored.end
                outcome = RunOutcome(RunState(end["state"]), end["reason"], end["last_step"])
                index = len(self.plan.steps)
        try:
            while index < len(self.plan.steps):
                result = await self.execute(self.plan.steps[index], resumed=resumed)
                resumed = False
                outcome.last_step = index
                action = result.action
                if action.kind in ("next", "record"):
                    index += 1
                elif action.kind == "goto":
                    assert action.target is not None
                    index = action.target
                elif action.kind == "stop":
                    outcome = RunOutcome(RunState.DONE, result.reason, index)
                    break
                elif self.pause_on_alarm:  # alarm, and someone to ask: the same step again
                    await self._pause_for_operator(index, result.reason)
                else:  # alarm
                    outcome = RunOutcome(RunState.ALARM, result.reason, index)
                    break
        except asyncio.CancelledError:
            outcome = RunOutcome(RunState.ABORTED, self._abort_reason or "cancelled", outcome.last_step)
            if self._abort_reason is None:
                raise  # cancelled from outside: clean up (finally), then let it propagate
            assert self._task is not None
            self._task.uncancel()  # our own abort: finish cleanly and report the outcome
        except InstrumentError as exc:
            outcome = RunOutcome(RunState.FAILED, str(exc), outcome.last_step)
            self._event(outcome.last_step, EventKind.INSTRUMENT, {"message": str(exc)})
        finally:
            await self.finish(outcome)
        return outcome

    async def begin(self) -> None:
        """Start a run: state, first event (or, after `restore`, the targets back and a `resumed` event)."""
        self._task = asyncio.current_task()
        self._started_at = self.clock.monotonic()
        restored = self._restored
        if restored is not None:
            if restored.pressure_target_pa is not None and self.station.pressure is not None:
                await self.station.pressure.set_target(restored.pressure_target_pa)
            if restored.temperature_target_k is not None and self.station.thermostat is not None:
                await self.station.thermostat.set_temperature(restored.temperature_target_k)
        participant = getattr(self.clock, "participant", None)
        if participant is not None and self.station.pressure is not None:
            # Two tasks wait on a simulated clock (this one and the pressure loop): both count.
            self._participant = participant()
        if self.station.pressure is not None and self.station.pressure.target_pa is not None:
            self._start_pressure_loop()  # the bench was assembled at a pressure: keep holding it
        self._set_state(RunState.RUNNING)
        if restored is None:
            started = {"protocol": self.plan.name, "steps": len(self.plan.steps)}
            self._event(-1, EventKind.RUN_STARTED, started)
            return
        progress = restored.progress if restored.started else None
        self._event(
            restored.step,
            EventKind.RESUMED,
            {
                "reason": "resumed after a crash (labctl resume)",
                "from_step": restored.step,
                "step_started": restored.started,
                "checkpoint": restored.number,
                "checkpoint_t_ns": restored.t_ns,
                "down_s": (self.clock.time_ns() - restored.t_ns) / 1e9,
                "step_elapsed_s": progress.elapsed_s if progress else None,
                "step_charge_c": progress.charge_c if progress else None,
                "ending": restored.end,
            },
        )

    async def finish(self, outcome: RunOutcome) -> None:
        """End a run: close the open cycle, make every role safe, record how it ended."""
        self._close_cycle()
        try:
            await self._stop_pressure_loop()
        except InstrumentError as exc:
            self._event(outcome.last_step, EventKind.INSTRUMENT, {"message": str(exc)})
        if self._participant is not None:
            self._participant.__exit__(None, None, None)
            self._participant = None
        outcome.unsafe = await self.station.make_safe()
        if outcome.unsafe:
            self._event(outcome.last_step, EventKind.ALARM, {"message": "; ".join(outcome.unsafe)})
        if self.state is RunState.PAUSED and outcome.state is RunState.DONE:
            self._set_state(RunState.RUNNING)
        self._set_state(outcome.state)
        self._event(
            outcome.last_step, EventKind.RUN_ENDED, {"state": outcome.state.value, "reason": outcome.reason}
        )
        await asyncio.shield(self._flush())

    async def execute(self, step: PlanStep, *, resumed: bool = False) -> StepResult:
        """Run one step to its end; returns what the plan should do next.

        `resumed`: the step had started before a crash (its start is journaled, the cycle counted);
        a source step continues from the checkpoint, any other kind runs again from its start.
        """
        self._position = (step.index, True)
        closed = None if resumed or step.kind == "check" else self.cycles.step_started(step.context)
        cycle_finding = self._on_cycle(closed, step.index) if closed else None
        if not resumed:
            self._step_started_event(step)
        if cycle_finding is not None and cycle_finding.action.kind not in ("next", "record"):
            result = StepResult(cycle_finding.action, cycle_finding.reason)
        else:
            result = await self._handlers[step.kind](step)
        self._progress = None
        self.cycles.add(result.charge_c)
        self._previous_step = step.index
        self._event(
            step.index,
            EventKind.STEP_ENDED,
            {
                "reason": result.reason,
                "action": result.action.describe(),
                "charge_c": result.charge_c,
                "duration_s": result.duration_s,
            },
        )
        self._position, self._end = self._after(step.index, result)
        await self._flush()
        return result

    def _after(self, index: int, result: StepResult) -> tuple[tuple[int, bool], dict[str, Any] | None]:
        """Where the run goes after a step (for the checkpoint): the next step, or how it ends."""
        kind = result.action.kind
        if kind in ("next", "record"):
            return (index + 1, False), None
        if kind == "goto" and result.action.target is not None:
            return (result.action.target, False), None
        if kind == "alarm" and self.pause_on_alarm:
            return (index, False), None
        state = RunState.DONE if kind == "stop" else RunState.ALARM
        return (index, False), {"state": state.value, "reason": result.reason, "last_step": index}

    def _step_started_event(self, step: PlanStep) -> None:
        self._event(
            step.index,
            EventKind.STEP_STARTED,
            {
                "kind": step.kind,
                "description": step.description,
                "label": step.label,
                "line": step.line,
                "current_a": step.current_a,
                "density_a_m2": step.density_a_m2,
                "context": step.context,
            },
        )

    # --- source steps -----------------------------------------------------------------------------

    async def _program(self, step: PlanStep, progress: _StepProgress | None) -> None:
        pot = self.station.potentiostat
        if step.record.sample_s != self._sample_period:
            await pot.start_acquisition(step.record.sample_s)
            self._sample_period = step.record.sample_s
        if step.kind == "voltage" or (progress is not None and progress.phase == "cv"):
            assert step.voltage_v is not None and step.current_limit_a is not None
            await pot.set_voltage(step.voltage_v, step.current_limit_a)
        else:
            await pot.set_current(step.current_a, self.plan.compliance_v)

    async def _run_source_step(self, step: PlanStep) -> StepResult:
        progress = self._open_progress(step)
        decision: tuple[Action, str] | None = None
        try:
            await self._program(step, None)
        except _LINK_IN_DOUBT as exc:
            decision = await self._recover_link(progress, exc)
        for detector in () if progress is self._resumed_progress else self._detectors:  # restored: armed
            detector.begin_step(step, progress.t0)
        while decision is None:
            wait = self._time_to_next_look(progress)
            if wait > 0:
                await self.clock.sleep(wait)
            if self.station.thermostat is not None:  # logged with the samples of this poll
                self._temperature = await self.station.thermostat.read_temperature()
            if self.station.pressure is not None and self._pressure_task is None:
                await self.station.pressure.read_pressure()  # at a fixed gap nobody else measures it
            try:
                readings = await self.station.potentiostat.fetch()
            except _LINK_IN_DOUBT as exc:
                decision = await self._recover_link(progress, exc)
            else:
                decision = self._judge(progress, readings)
                if decision is None and self._pause_reason is not None:
                    await self._pause_in_step(progress)
                    continue
                if decision is None:
                    decision = self._clock_end(progress)
            if decision is not None and decision[0].kind == "cv":  # CC-CV: the CC phase is over
                progress.phase, decision = "cv", None
                progress.hold_since.clear()
                try:
                    await self._program(step, progress)
                except _LINK_IN_DOUBT as exc:
                    decision = await self._recover_link(progress, exc)
            self._publish_status(progress)
            await self._flush()
        action, reason = decision
        if action.kind == "alarm":
            await self.station.make_safe()
        if progress.last_reading is not None and not progress.last_kept:
            self._keep(progress, progress.last_reading)
        for detector in self._detectors:
            detector.end_step()
        now = self.clock.monotonic()
        return StepResult(action, reason, progress.charge_now(now), now - progress.t0, progress.fired)

    def _time_to_next_look(self, progress: _StepProgress) -> float:
        now = self.clock.monotonic()
        wait = progress.step.record.poll_s
        for end in progress.step.ends:
            if end.condition.startswith("voltage"):
                # Look again before the voltage can reach the end: the cell must not run past a
                # cut-off for a whole poll (the instrument does not know the protocol's ends).
                wait = min(wait, self._time_to_threshold(progress, end.value))
            elif end.condition == "time":
                wait = min(wait, progress.t0 + end.value - now)
            elif end.condition == "charge":
                current = progress.last_current if progress.last_t is not None else progress.current_a
                if current:
                    wait = min(wait, (end.value - abs(progress.charge_now(now))) / abs(current))
        return max(0.0, wait)

    @staticmethod
    def _time_to_threshold(progress: _StepProgress, threshold: float) -> float:
        """Half the time the recent voltage slope needs to reach `threshold` (≥ one sample)."""
        sample = progress.step.record.sample_s
        window = progress.window
        if len(window) < 2:
            return sample
        (t0, v0), (t1, v1) = window[max(0, len(window) - 6)], window[-1]
        slope = (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0
        if slope == 0.0 or (threshold - v1) / slope < 0:
            return math.inf
        return max(sample, 0.5 * (threshold - v1) / slope)

    def _clock_end(self, progress: _StepProgress) -> tuple[Action, str] | None:
        now = self.clock.monotonic()
        for end in progress.step.ends:
            if end.condition == "time" and now - progress.t0 >= end.value * (1 - _RELATIVE_TOLERANCE):
                return end.action, f"time {end.value:g} s reached"
            if end.condition == "charge" and abs(progress.charge_now(now)) >= end.value * (
                1 - _RELATIVE_TOLERANCE
            ):
                return end.action, f"charge {end.value / 3.6:.4g} mAh reached"
        return None

    def _judge(self, progress: _StepProgress, readings: list[Reading]) -> tuple[Action, str] | None:
        """Account, check and keep each new reading; the first decisive one wins."""
        decision: tuple[Action, str] | None = None
        for reading in readings:
            # at t0 the instrument measured before the command; during a pause the output was off
            if reading.t <= progress.t0 + 1e-9 or reading.t <= progress.resumed_at:
                self._keep_late(reading)
                continue
            self._account(progress, reading)
            kept = self._keep_if_due(progress, reading)
            if decision is not None:
                continue  # after the decision, only record what was measured
            breach = self._safety_breach(reading)
            if breach:
                self._keep_now(progress, reading, kept)
                self._event(
                    progress.step.index,
                    EventKind.LIMIT,
                    {"message": breach, "voltage_v": reading.voltage_v, "current_a": reading.current_a},
                )
                decision = Action("alarm"), breach
                continue
            measured = {"pressure": self._pressure_now(), "temperature": self._temperature}
            targets = {
                "pressure": self.station.pressure.target_pa if self.station.pressure is not None else None,
                "temperature": self._temperature_target,
            }
            for detector in self._detectors:
                finding = detector.update(reading.t, reading.voltage_v, reading.current_a)
                judge = getattr(detector, "conditions", None)
                if finding is None and judge is not None:
                    finding = judge(reading.t, measured, targets)
                if finding is not None:
                    self._keep_now(progress, reading, kept)
                    decision = decision or self._on_finding(progress, finding)
            decision = decision or self._sample_end(progress, reading)
        return decision

    def _sample_end(self, progress: _StepProgress, reading: Reading) -> tuple[Action, str] | None:
        """Ends judged on each sample: voltage, current, dV/dt (each held for its debounce)."""
        step = progress.step
        if step.kind == "cccv" and progress.phase == "cc":
            assert step.voltage_v is not None
            reached = (
                reading.voltage_v >= step.voltage_v
                if step.current_a > 0
                else reading.voltage_v <= step.voltage_v
            )
            return (Action("cv"), "CC phase reached the CV voltage") if reached else None  # type: ignore[arg-type]
        progress.window.append((reading.t, reading.voltage_v))
        for number, end in enumerate(step.ends):
            beyond = _beyond(end, reading, progress)
            if beyond is None:
                continue
            if not beyond:
                progress.hold_since.pop(number, None)
                continue
            since = progress.hold_since.setdefault(number, reading.t)
            if reading.t - since >= (0.0 if end.condition.startswith("dvdt") else end.debounce_s):
                return end.action, f"{end.condition.replace('_', ' ')} {end.value:g}"
        return None

    def _account(self, progress: _StepProgress, reading: Reading) -> None:
        if progress.last_t is None:
            progress.charge_c += reading.current_a * (reading.t - progress.t0)
        else:
            progress.charge_c += (
                0.5 * (reading.current_a + progress.last_current) * (reading.t - progress.last_t)
            )
        progress.last_t, progress.last_current = reading.t, reading.current_a
        progress.last_reading, progress.last_kept = reading, False

    def _keep_if_due(self, progress: _StepProgress, reading: Reading) -> bool:
        rule = progress.step.record
        due = (
            progress.kept_t is None
            or reading.t - progress.kept_t >= rule.every_s - 1e-9
            or abs(reading.voltage_v - progress.kept_v) >= rule.dv_v
            or (rule.di_a is not None and abs(reading.current_a - progress.kept_i) >= rule.di_a)
        )
        if due:
            self._keep(progress, reading)
        return due

    def _keep_now(self, progress: _StepProgress, reading: Reading, already: bool) -> None:
        if not already:
            self._keep(progress, reading)

    def _keep(self, progress: _StepProgress, reading: Reading) -> None:
        progress.kept_t, progress.kept_v, progress.kept_i = reading.t, reading.voltage_v, reading.current_a
        progress.last_kept = reading is progress.last_reading
        self._record(self._sample(reading, progress.step.index, {"charge_c": progress.charge_c}))

    def _keep_late(self, reading: Reading) -> None:
        """Journal a reading taken before this step's set-point with the step it belongs to.

        In real time a reading can land between a step's last fetch and the next step's command;
        it is the previous step's, and is kept there (never dropped, never judged again).
        """
        self._record(self._sample(reading, max(self._previous_step, 0), {}))

    def _sample(self, reading: Reading, step: int, extra: dict[str, float]) -> Sample:
        values = {"voltage_v": reading.voltage_v, "current_a": reading.current_a, **extra}
        values["pressure_pa"], values["temperature_k"] = self._pressure_now(), self._temperature
        return Sample(self._t_ns(reading.t), step, values)

    def _pressure_now(self) -> float:
        """The last measured stack pressure (each step starts with one), or the stated condition."""
        controller = self.station.pressure
        return controller.pressure_pa if controller is not None else self.plan.pressure_pa

    def _record(self, sample: Sample) -> None:
        self._samples.append(sample)
        self.bus.publish(sample)

    def _safety_breach(self, reading: Reading) -> str | None:
        plan = self.plan
        if reading.in_compliance:
            return f"the instrument hit its {plan.compliance_v:g} V compliance"
        if not plan.voltage_min_v <= reading.voltage_v <= plan.voltage_max_v:
            return (
                f"voltage {reading.voltage_v:.4g} V left the safety window "
                f"{plan.voltage_min_v:g}..{plan.voltage_max_v:g} V"
            )
        for name, value, window, unit, scale in (
            ("stack pressure", self._pressure_now(), plan.pressure_window_pa, "MPa", 1e-6),
            ("temperature", self._temperature, plan.temperature_window_k, "K", 1.0),
        ):  # the set conditions until a rig and a heater report measured values
            if window is not None and not window[0] <= value <= window[1]:
                return f"{name} {value * scale:g} {unit} outside the safety window"
        if plan.current_max_a is not None and abs(reading.current_a) > plan.current_max_a * 1.01:
            limit_ma = plan.current_max_a * 1e3
            return f"current {reading.current_a * 1e3:.4g} mA above the safety limit {limit_ma:.4g} mA"
        return None

    # --- watches and cycles -------------------------------------------------------------------------

    def _on_finding(self, progress: _StepProgress, finding: Finding) -> tuple[Action, str] | None:
        step = progress.step
        data = {
            "watch": finding.watch,
            "type": self._watches[finding.watch].type,
            "message": finding.message,
            "density_a_m2": step.density_a_m2,
            "current_a": step.current_a,
            "context": step.context,
            "t_ns": self._t_ns(finding.t),
            **finding.data,
        }
        if not finding.fired:
            self._event(step.index, EventKind.SOFT_SHORT, data)
            return None
        progress.fired.append(finding.watch)
        self._fired_since_check.add(finding.watch)
        ends = [end for end in step.ends if end.condition == "detector" and end.value == finding.watch]
        action = ends[0].action if ends else self._watches[finding.watch].action
        self._event(step.index, EventKind.DETECTOR, {**data, "action": action.describe()})
        if action.kind == "alarm":
            self._event(step.index, EventKind.ALARM, {"message": finding.message})
        if action.kind == "record":
            return None
        return action, finding.message

    def _on_cycle(self, cycle: Cycle, step_index: int) -> StepResult | None:
        """Record a finished cycle and let the cycle watches judge it."""
        self._event(step_index, EventKind.CYCLE, cycle.as_data())
        decision: StepResult | None = None
        for detector in self._detectors:
            judge = getattr(detector, "cycle_ended", None)
            finding = judge(cycle, self.clock.monotonic()) if judge else None
            if finding is None:
                continue
            self._fired_since_check.add(finding.watch)
            action = self._watches[finding.watch].action
            self._event(
                step_index,
                EventKind.DETECTOR,
                {
                    "watch": finding.watch,
                    "type": self._watches[finding.watch].type,
                    "message": finding.message,
                    "action": action.describe(),
                    **finding.data,
                },
            )
            if action.kind == "alarm":
                self._event(step_index, EventKind.ALARM, {"message": finding.message})
            if decision is None and action.kind != "record":
                decision = StepResult(action, finding.message)
        return decision

    def _close_cycle(self, step_index: int | None = None) -> StepResult | None:
        closed = self.cycles.close()
        if closed is None:
            return None
        return self._on_cycle(closed, self._previous_step if step_index is None else step_index)

    # --- other steps ------------------------------------------------------------------------------

    async def _run_check(self, step: PlanStep) -> StepResult:
        """The end of a `repeat until` iteration: close the cycle, test the condition."""
        assert step.check is not None
        decision = self._close_cycle(step.index)
        if decision is not None and decision.action.kind != "next":
            return decision
        check = step.check
        last = self.cycles.finished[-1] if self.cycles.finished else None
        holds = False
        if check.condition == "detector":
            holds = check.value in self._fired_since_check
        elif last is not None:
            measured = last.retention if check.condition == "retention_below" else last.efficiency
            holds = measured is not None and measured < check.value
        self._fired_since_check.clear()
        if holds:
            return StepResult(Action("goto", check.target), f"loop ends: {check.condition} {check.value}")
        return StepResult(Action("next"), f"loop goes on: {check.condition} {check.value} not met")

    async def _run_eis(self, step: PlanStep) -> StepResult:
        spec = step.eis
        assert spec is not None
        pot = self.station.potentiostat
        if not isinstance(pot, SupportsEIS):
            raise InstrumentError(f"{type(pot).__name__} cannot measure impedance; use an EIS potentiostat")
        t0 = self.clock.monotonic()
        dc = spec.dc
        if spec.dc_is_ocv:
            dc += await self._open_circuit_voltage(step)
        await pot.stop_acquisition()
        self._sample_period = 0.0  # the next source step restarts acquisition
        points = await pot.impedance_spectrum(
            mode=spec.mode,
            f_start_hz=spec.f_start_hz,
            f_end_hz=spec.f_end_hz,
            points_per_decade=spec.points_per_decade,
            amplitude=spec.amplitude,
            dc_level=dc,
        )
        self._spectra += 1
        for point in points:
            t = point.time_s if math.isfinite(point.time_s) else self.clock.monotonic()
            values = {
                "frequency_hz": point.frequency_hz,
                "z_real_ohm": point.z_real_ohm,
                "z_imag_ohm": point.z_imag_ohm,
                "e_dc_v": point.e_dc_v,
                "i_dc_a": point.i_dc_a,
                "spectrum": float(self._spectra),
                "pressure_pa": self._pressure_now(),
                "temperature_k": self._temperature,
            }
            self._record(Sample(self._t_ns(t), step.index, values, kind="eis"))
        self._event(
            step.index, EventKind.EIS, {"spectrum": self._spectra, "points": len(points), "mode": spec.mode}
        )
        now = self.clock.monotonic()
        return StepResult(
            Action("next"), f"spectrum {self._spectra}: {len(points)} points", 0.0, now - t0, spectrum=points
        )

    async def _open_circuit_voltage(self, step: PlanStep) -> float:
        """Zero current for one sample period, on the clock: the last reading is the OCV."""
        pot = self.station.potentiostat
        period = step.record.sample_s
        if self._sample_period != period:
            await pot.start_acquisition(period)
            self._sample_period = period
        await pot.set_current(0.0, self.plan.compliance_v)
        await self.clock.sleep(period)
        readings = await pot.fetch()
        for reading in readings:
            self._record(self._sample(reading, step.index, {}))
        if not readings:
            raise InstrumentError(f"no reading within one sample period ({period:g} s) to measure the OCV")
        return readings[-1].voltage_v

    async def _run_mark(self, step: PlanStep) -> StepResult:
        self._event(step.index, EventKind.MARK, {"note": step.note})
        return StepResult(Action("next"), f"marked: {step.note}")

    async def _run_wait(self, step: PlanStep) -> StepResult:
        """Make the station safe and pause until resumed, or until the step's timeout."""
        t0 = self.clock.monotonic()
        self._resume.clear()  # before PAUSED is visible, so an early resume() is never lost
        await self.station.make_safe()
        self._sample_period = 0.0
        self._set_state(RunState.PAUSED)
        self._event(
            step.index,
            EventKind.PAUSED,
            {"message": step.note, "timeout_s": step.timeout_s, "new_cell": step.new_cell},
        )
        await self._flush()
        if step.new_cell:
            # A fresh cell: the watches start over (a short detector's healthy reference is the old cell's).
            self._detectors = [DETECTORS[w.type](w) for w in self.plan.watches]
            if self.station.replace_cell is not None:
                self.station.replace_cell()
        if self.auto_resume:
            reason = "resumed automatically (nobody to ask in a simulated run)"
        elif step.timeout_s is not None:
            reason = await self._wait_or_timeout(step.timeout_s)
        else:
            await self._resume.wait()
            reason = "resumed by the operator"
        self._set_state(RunState.RUNNING)
        self._event(step.index, EventKind.RESUMED, {"reason": reason})
        return StepResult(Action("next"), reason, 0.0, self.clock.monotonic() - t0)

    async def _pause_in_step(self, progress: _StepProgress) -> None:
        """An operator's pause inside a source step: safe, wait, then the same step where it was."""
        step, reason = progress.step, self._pause_reason or "paused"
        held_pa = self.station.pressure.target_pa if self.station.pressure is not None else None
        paused_at = self.clock.monotonic()
        await self.station.make_safe()
        self._sample_period = 0.0
        self._set_state(RunState.PAUSED)
        self._event(step.index, EventKind.PAUSED, {"message": reason, "operator": True})
        await self._flush()
        await self._resume.wait()
        self._pause_reason = None
        now = self.clock.monotonic()
        if held_pa is not None and self.station.pressure is not None:
            await self.station.pressure.set_target(held_pa)  # the safe state stopped regulating
        progress.t0 += now - paused_at  # time ends do not count the pause
        progress.last_t = progress.resumed_at = now  # nor does the charge
        progress.window.clear()
        progress.hold_since.clear()
        self._set_state(RunState.RUNNING)
        self._event(step.index, EventKind.RESUMED, {"reason": f"resumed after {now - paused_at:.0f} s"})
        await self._program(step, progress)

    async def _recover_link(
        self, progress: _StepProgress, error: InstrumentError
    ) -> tuple[Action, str] | None:
        """The potentiostat's link was lost in a source step: safe, paused, reconnect, restore.

        Readings the instrument stored before the loss are judged as usual (one may end the step:
        that decision is returned); those taken during the outage are journaled, not judged, and
        their charge is not counted. Time ends do not count the outage. Raises LinkError (the run
        then ends FAILED) when the link is not back within the policy's `retry_for_s`.
        """
        step, pot = progress.step, self.station.potentiostat
        lost_at = self.clock.monotonic()
        held_pa = self.station.pressure.target_pa if self.station.pressure is not None else None
        lost = {"message": f"link lost: {error}", "role": "potentiostat"}
        self._event(step.index, EventKind.INSTRUMENT, lost)
        unsafe = await self.station.make_safe()  # best effort, bounded: the link may be gone
        self._sample_period = 0.0
        self._set_state(RunState.PAUSED)
        self._event(step.index, EventKind.PAUSED, {"message": f"link lost: {error}", "link": True})
        await self._flush()
        reconnect = getattr(pot, "reconnect", None)
        if reconnect is None:
            raise error
        deadline = lost_at + self.link_loss.retry_for_s
        while True:
            try:
                found = await reconnect(
                    retry_for_s=max(0.0, deadline - self.clock.monotonic()),
                    sleep=self.clock.sleep,
                    time_source=self.clock.monotonic,
                )
            except LinkError as exc:
                raise LinkError(
                    f"potentiostat link lost and not back within {self.link_loss.retry_for_s:g} s: {exc}"
                ) from exc
            attempts = getattr(pot, "reconnect_attempts", 1)
            described = found.describe() if hasattr(found, "describe") else str(found)
            back = f"link back after {attempts} attempt(s), output off; found {described}"
            self._event(
                step.index,
                EventKind.INSTRUMENT,
                {"message": back, "role": "potentiostat", "safe_before": not unsafe},
            )
            salvaged = await pot.fetch()  # what the instrument stored and nobody fetched: judged as usual
            decision = self._judge(progress, [r for r in salvaged if r.t <= lost_at])
            for reading in salvaged:  # taken while the link was lost: journaled, not judged
                if reading.t > lost_at:
                    self._record(self._sample(reading, step.index, {"charge_c": progress.charge_c}))
            if decision is not None:
                self._set_state(RunState.RUNNING)
                self._event(step.index, EventKind.RESUMED, {"reason": "link back; the step had ended before"})
                self.link_outages.append((lost_at, self.clock.monotonic()))
                return decision
            now = self.clock.monotonic()
            if held_pa is not None and self.station.pressure is not None:
                await self.station.pressure.set_target(held_pa)  # the safe state stopped regulating
            progress.t0 += now - lost_at  # time ends do not count the outage
            progress.last_t = progress.resumed_at = now  # nor does the charge
            progress.window.clear()
            progress.hold_since.clear()
            try:
                await self._program(step, progress)
            except _LINK_IN_DOUBT as exc:  # lost again while restoring: same deadline
                self._event(step.index, EventKind.INSTRUMENT, {"message": f"link lost again: {exc}"})
                lost_at = now
                continue
            self._set_state(RunState.RUNNING)
            now = self.clock.monotonic()
            self.link_outages.append((lost_at, now))
            reason = f"link back, source restored after {now - lost_at:.3g} s"
            self._event(step.index, EventKind.RESUMED, {"reason": reason, "link": True})
            return None

    async def _pause_for_operator(self, step_index: int, reason: str) -> None:
        """Station safe, state PAUSED with the alarm, until the operator resumes (or aborts)."""
        self._resume.clear()
        await self.station.make_safe()
        self._sample_period = 0.0
        self._set_state(RunState.PAUSED)
        self._event(step_index, EventKind.PAUSED, {"message": reason, "alarm": True})
        await self._flush()
        await self._resume.wait()
        self._set_state(RunState.RUNNING)
        self._event(step_index, EventKind.RESUMED, {"reason": "resumed by the operator after the alarm"})

    async def _wait_or_timeout(self, timeout_s: float) -> str:
        resumed = asyncio.ensure_future(self._resume.wait())
        timer = asyncio.ensure_future(self.clock.sleep(timeout_s))
        try:
            done, _ = await asyncio.wait({resumed, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (resumed, timer):
                task.cancel()
            await asyncio.gather(resumed, timer, return_exceptions=True)
        return "resumed by the operator" if resumed in done else f"timeout {timeout_s:g} s"

    async def _run_set(self, step: PlanStep) -> StepResult:
        """Drive the stack pressure to its set-point and wait until it settles.

        The loop then keeps holding it (against Li creep) in the background while the next steps run.
        """
        if "temperature_k" in step.setpoints:
            return await self._set_temperature(step)
        controller = self.station.pressure
        if controller is None:
            raise InstrumentError(
                f"this station has no pressure rig: step at line {step.line} cannot run here"
            )
        t0 = self.clock.monotonic()
        await self._stop_pressure_loop()
        await self.station.potentiostat.set_current(0.0, self.plan.compliance_v)  # open circuit meanwhile
        target = step.setpoints["pressure_pa"]
        if target == 0.0:
            return await self._release_pressure(controller, step, t0)
        if "ramp_rate" in step.setpoints:
            await ramp_to(controller, target, step.setpoints["ramp_rate"])
        pressure = await controller.settle(
            target,
            rate_below=step.setpoints.get("settle_rate", DEFAULT_SETTLE_RATE_PA_S),
            hold_s=step.setpoints.get("settle_hold_s", DEFAULT_SETTLE_HOLD_S),
            timeout_s=step.timeout_s or 3600.0,
        )
        if step.setpoints.get("fixed_gap"):
            await controller.hold()  # constant displacement from here: the pressure is only measured
            reason = f"settled at {pressure / 1e6:.3g} MPa, gap fixed"
        else:
            self._start_pressure_loop()
            reason = f"settled at {pressure / 1e6:.3g} MPa"
        return StepResult(Action("next"), reason, 0.0, self.clock.monotonic() - t0)

    async def _release_pressure(self, controller: StackPressureLoop, step: PlanStep, t0: float) -> StepResult:
        """`set: {pressure: 0 MPa}`: take the pressure off (screw backed off, cylinder vented)."""
        await controller.release()
        timeout = step.timeout_s or 3600.0
        while (pressure := await controller.read_pressure()) > RELEASED_PA:
            if self.clock.monotonic() - t0 > timeout:
                raise PressureFault(
                    f"stack pressure still {pressure / 1e6:.3g} MPa {timeout:g} s after the release; "
                    "check the rig is free to open"
                )
            await self.clock.sleep(controller.settings.period_s)
        return StepResult(
            Action("next"), f"released: {pressure / 1e6:.3g} MPa", 0.0, self.clock.monotonic() - t0
        )

    async def _set_temperature(self, step: PlanStep) -> StepResult:
        """Send the heater its set-point and wait until the temperature settles near it."""
        thermostat = self.station.thermostat
        if thermostat is None:
            raise InstrumentError(f"this station has no heater: step at line {step.line} cannot run here")
        t0 = self.clock.monotonic()
        target = step.setpoints["temperature_k"]
        rate_below = step.setpoints.get("settle_rate", DEFAULT_TEMPERATURE_RATE_K_S)
        hold = step.setpoints.get("settle_hold_s", DEFAULT_SETTLE_HOLD_S)
        timeout = step.timeout_s or 3600.0
        if "ramp_rate" in step.setpoints:  # set-points along the ramp, one per poll
            start = await thermostat.read_temperature()
            rate = step.setpoints["ramp_rate"] if target >= start else -step.setpoints["ramp_rate"]
            while (left := target - start - rate * (self.clock.monotonic() - t0)) * rate > 0:
                await thermostat.set_temperature(target - left)
                self._temperature = await thermostat.read_temperature()
                await self.clock.sleep(TEMPERATURE_POLL_S)
        await thermostat.set_temperature(target)
        self._temperature_target = target
        history: collections.deque[tuple[float, float]] = collections.deque()
        calm_since: float | None = None
        while True:
            now = self.clock.monotonic()
            self._temperature = await thermostat.read_temperature()
            history.append((now, self._temperature))
            while now - history[0][0] > hold:
                history.popleft()
            span = now - history[0][0]
            rate = abs(self._temperature - history[0][1]) / span if span >= 0.9 * hold else math.inf
            calm = rate < rate_below and abs(self._temperature - target) < TEMPERATURE_TOLERANCE_K
            calm_since = (calm_since if calm_since is not None else now) if calm else None
            if calm_since is not None and now - calm_since >= hold:
                return StepResult(
                    Action("next"), f"settled at {self._temperature - 273.15:.1f} °C", 0.0, now - t0
                )
            if now - t0 > timeout:
                raise InstrumentError(
                    f"temperature not settled at {target - 273.15:g} °C within {timeout:g} s "
                    f"(now {self._temperature - 273.15:.1f} °C); check the heater"
                )
            await self.clock.sleep(TEMPERATURE_POLL_S)

    def _start_pressure_loop(self) -> None:
        controller = self.station.pressure
        assert controller is not None
        participant = getattr(self.clock, "participant", None)
        token = participant() if participant is not None else None  # registered before it sleeps
        self._pressure_stop = asyncio.Event()

        self._pressure_task = asyncio.create_task(
            run_loop(controller, self._pressure_stop), name="stack-pressure loop"
        )
        if token is not None:  # leave the clock when the task ends, even if it never got to run
            self._pressure_task.add_done_callback(lambda _: token.__exit__(None, None, None))

    async def _stop_pressure_loop(self) -> None:
        task, self._pressure_task = self._pressure_task, None
        if task is None:
            return
        self._pressure_stop.set()
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        if isinstance(results[0], InstrumentError):
            raise results[0]

    # --- records ----------------------------------------------------------------------------------

    def _t_ns(self, t: float) -> int:
        return self.clock.time_ns() - round((self.clock.monotonic() - t) * 1e9)

    def _event(self, step: int, kind: EventKind, data: dict[str, Any]) -> None:
        event = Event(self.clock.time_ns(), step, kind, data)
        self._events.append(event)
        self.bus.publish(event)

    def _publish_status(self, progress: _StepProgress) -> None:
        reading = progress.last_reading
        values = {"voltage_v": reading.voltage_v, "current_a": reading.current_a} if reading else {}
        self.bus.publish(
            Status(
                self.state.value,
                progress.step.index,
                progress.step.description,
                self.clock.monotonic() - self._started_at,
                values,
                dict(progress.step.context),
            )
        )

    async def _flush(self) -> None:
        samples, events = self._samples, self._events
        self._samples, self._events = [], []
        meta = None
        if self.state is not RunState.IDLE:  # a checkpoint rides in every batch of a running run
            checkpoint = self._checkpoint()
            if self.on_checkpoint is not None:
                self.on_checkpoint(checkpoint.number)
            meta = {CHECKPOINT_KEY: checkpoint.to_json()}
        await self.journal.append(samples, events, meta)

    # --- checkpoints ------------------------------------------------------------------------------

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue a crashed run from its last checkpoint: call before `run()` (labctl resume).

        The detectors, the cycle tracker and the targets come back as they were; `run()` starts at
        the checkpoint's step, and a source step cut in the middle continues for what was left of
        its time and charge.
        """
        self._restored = checkpoint
        self._detectors, self.cycles = unpack_engine(checkpoint.engine)
        self._checkpoints = checkpoint.number
        self._position = (checkpoint.step, checkpoint.started)
        self._end = checkpoint.end
        self._previous_step = checkpoint.previous_step
        self._spectra = checkpoint.spectra
        if checkpoint.temperature_k is not None:
            self._temperature = checkpoint.temperature_k
        self._temperature_target = checkpoint.temperature_target_k
        self._fired_since_check = set(checkpoint.fired_since_check)
        self._restored_step = checkpoint.progress if checkpoint.started else None

    def _checkpoint(self) -> Checkpoint:
        self._checkpoints += 1
        now = self.clock.monotonic()
        step, started = self._position
        pressure = self.station.pressure
        return Checkpoint(
            number=self._checkpoints,
            clock_s=now,
            t_ns=self.clock.time_ns(),
            step=step,
            started=started,
            seed=self.seed,
            end=self._end,
            progress=None if self._progress is None else _step_checkpoint(self._progress, now),
            previous_step=self._previous_step,
            spectra=self._spectra,
            temperature_k=self._temperature,
            temperature_target_k=self._temperature_target,
            pressure_target_pa=pressure.target_pa if pressure is not None else None,
            fired_since_check=sorted(self._fired_since_check),
            engine=pack_engine((self._detectors, self.cycles)),
        )

    def _open_progress(self, step: PlanStep) -> _StepProgress:
        """A source step's progress: new, or (the first step after `restore`) as checkpointed.

        A restored step's times are placed before *now* as they were before the checkpoint, so
        its time ends count only what had run; readings up to now are not judged (`resumed_at`).
        """
        now = self.clock.monotonic()
        saved, self._restored_step = self._restored_step, None
        if saved is None:
            self._progress = _StepProgress(step, now, step.current_a)
            return self._progress
        progress = _StepProgress(step, now - saved.elapsed_s, step.current_a, phase=saved.phase)
        progress.charge_c = saved.charge_c
        progress.last_t = None if saved.last_ago_s is None else now - saved.last_ago_s
        progress.last_current = saved.last_current_a
        progress.kept_t = None if saved.kept_ago_s is None else now - saved.kept_ago_s
        progress.kept_v, progress.kept_i = saved.kept_v, saved.kept_i
        progress.window.extend((now - ago, v) for ago, v in saved.window)
        progress.hold_since.update({n: now - ago for n, ago in saved.hold_ago_s.items()})
        progress.fired = list(saved.fired)
        progress.resumed_at = now
        self._resumed_progress = progress
        assert self._restored is not None
        if abs(now - self._restored.clock_s) > 1.0:  # another clock (a real station): re-arm in place
            for detector in self._detectors:
                detector.begin_step(step, progress.t0)
        self._progress = progress
        return progress


def _step_checkpoint(progress: _StepProgress, now: float) -> StepCheckpoint:
    """A source step's progress relative to `now`; the voltage window trimmed to what ends use."""
    window = list(progress.window)
    if not any(end.condition.startswith("dvdt") for end in progress.step.ends):
        window = window[-6:]  # only the recent slope (the look-ahead to a voltage end)
    return StepCheckpoint(
        elapsed_s=now - progress.t0,
        charge_c=progress.charge_c,
        phase=progress.phase,
        last_ago_s=None if progress.last_t is None else now - progress.last_t,
        last_current_a=progress.last_current,
        kept_ago_s=None if progress.kept_t is None else now - progress.kept_t,
        kept_v=progress.kept_v,
        kept_i=progress.kept_i,
        window=[(now - t, v) for t, v in window],
        hold_ago_s={n: now - t for n, t in progress.hold_since.items()},
        fired=list(progress.fired),
    )


def _beyond(end: End, reading: Reading, progress: _StepProgress) -> bool | None:
    """Whether a sample is past an end's threshold; None for ends not judged on samples."""
    condition = end.condition
    if condition == "voltage_above":
        return reading.voltage_v >= end.value
    if condition == "voltage_below":
        return reading.voltage_v <= end.value
    if condition.startswith("current"):
        if progress.step.kind == "cccv" and progress.phase == "cc":
            return None
        magnitude = abs(reading.current_a)
        return magnitude >= end.value if condition == "current_above" else magnitude <= end.value
    if condition.startswith("dvdt"):
        window = progress.window
        while window and reading.t - window[0][0] > end.debounce_s:
            window.popleft()
        if not window or reading.t - window[0][0] < 0.9 * end.debounce_s:
            return False  # not a full window yet
        rate = abs(reading.voltage_v - window[0][1]) / (reading.t - window[0][0])
        return rate >= end.value if condition == "dvdt_above" else rate <= end.value
    return None
