"""The runner: interprets a Plan on a Station, step by step, sample by sample.

Per step it programs the source, then loops: sleep on the clock until the next poll or the
predicted end of the step, collect the instrument's buffered samples, judge each (safety limits,
watches, voltage ends), keep what the recording rule keeps, journal it, publish it. Time and
capacity ends are checked against the clock with the charge extrapolated to *now*, so in simulated
time a step ends exactly when its capacity is reached, not at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from drivers.base import Reading
from drivers.errors import InstrumentError
from labctl.clock import Clock
from labctl.data import Bus, Event, EventKind, Journal, Sample, Status
from labctl.engine.detectors import DETECTORS, Finding
from labctl.engine.state import RunState, check_transition
from labctl.engine.station import Station
from labctl.protocol.plan import Action, Plan, PlanStep

log = logging.getLogger(__name__)

_RELATIVE_TOLERANCE = 1e-9


@dataclass
class RunOutcome:
    """How a run ended."""

    state: RunState
    reason: str
    last_step: int
    unsafe: list[str] = field(default_factory=list)
    """Roles that could not be confirmed safe at the end (the operator must check them)."""


@dataclass
class _StepProgress:
    """What the runner tracks inside one step."""

    step: PlanStep
    t0: float
    charge_c: float = 0.0
    last_t: float | None = None
    last_current: float = 0.0
    kept_t: float | None = None
    kept_v: float = 0.0
    kept_i: float = 0.0
    last_reading: Reading | None = None
    last_kept: bool = False
    voltage_hold_since: dict[int, float] = field(default_factory=dict)

    def charge_now(self, now: float) -> float:
        """Charge passed in this step up to `now`, holding the last measured current."""
        if self.last_t is None:
            return self.step.current_a * (now - self.t0)
        return self.charge_c + self.last_current * max(0.0, now - self.last_t)


@dataclass
class _Decision:
    """Why a step stops and where the run goes next."""

    action: Action
    reason: str


class Runner:
    """Runs one plan on one station.

    Args:
        plan: the compiled protocol.
        station: the instruments, by role.
        clock: real or simulated time.
        journal: where every kept sample and every event goes first.
        bus: live listeners (progress, later TUI/MQTT).
    """

    def __init__(self, plan: Plan, station: Station, clock: Clock, journal: Journal, bus: Bus) -> None:
        self.plan = plan
        self.station = station
        self.clock = clock
        self.journal = journal
        self.bus = bus
        self.state = RunState.IDLE
        self._detectors = [DETECTORS[w.type](w) for w in plan.watches]
        self._watches = {w.name: w for w in plan.watches}
        self._samples: list[Sample] = []
        self._events: list[Event] = []
        self._sample_period = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._abort_reason: str | None = None
        self._previous_step = -1

    def abort(self, reason: str = "aborted by the operator") -> None:
        """End the run now: the station is made safe and `run()` returns an ABORTED outcome.

        Safe to call from a signal handler or another task; a second call does nothing.
        """
        if self._abort_reason is None and self._task is not None and not self._task.done():
            self._abort_reason = reason
            self._task.cancel()

    def _set_state(self, new: RunState) -> None:
        self.state = check_transition(self.state, new)

    async def run(self) -> RunOutcome:
        """Run every step; always ends with the station in its safe state."""
        self._task = asyncio.current_task()
        self._set_state(RunState.RUNNING)
        self._event(-1, EventKind.RUN_STARTED, {"protocol": self.plan.name, "steps": len(self.plan.steps)})
        outcome = RunOutcome(RunState.DONE, "all steps done", -1)
        index = 0
        try:
            while index < len(self.plan.steps):
                step = self.plan.steps[index]
                decision = await self._run_step(step)
                outcome.last_step = index
                action = decision.action
                if action.kind in ("next", "record"):
                    index += 1
                elif action.kind == "goto":
                    assert action.target is not None
                    index = action.target
                elif action.kind == "stop":
                    outcome = RunOutcome(RunState.DONE, decision.reason, index)
                    break
                else:  # alarm
                    outcome = RunOutcome(RunState.ALARM, decision.reason, index)
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
            outcome.unsafe = await self.station.make_safe()
            if outcome.unsafe:
                self._event(outcome.last_step, EventKind.ALARM, {"message": "; ".join(outcome.unsafe)})
            self._set_state(outcome.state)
            self._event(
                outcome.last_step,
                EventKind.RUN_ENDED,
                {"state": outcome.state.value, "reason": outcome.reason},
            )
            await asyncio.shield(self._flush())
        return outcome

    async def _run_step(self, step: PlanStep) -> _Decision:
        pot = self.station.potentiostat
        if step.record.sample_s != self._sample_period:
            await pot.start_acquisition(step.record.sample_s)
            self._sample_period = step.record.sample_s
        await pot.set_current(step.current_a, self.plan.compliance_v)
        progress = _StepProgress(step, self.clock.monotonic())
        for detector in self._detectors:
            detector.begin_step(step, progress.t0)
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
        decision: _Decision | None = None
        while decision is None:
            wait = self._time_to_next_look(progress)
            if wait > 0:
                await self.clock.sleep(wait)
            decision = self._judge(progress, await pot.fetch())
            if decision is None:
                decision = self._clock_end(progress)
            self._publish_status(progress)
            await self._flush()
        if decision.action.kind == "alarm":
            await self.station.make_safe()
        if progress.last_reading is not None and not progress.last_kept:
            self._keep(progress, progress.last_reading)
        for detector in self._detectors:
            detector.end_step()
        self._previous_step = step.index
        self._event(
            step.index,
            EventKind.STEP_ENDED,
            {
                "reason": decision.reason,
                "action": decision.action.describe(),
                "charge_c": progress.charge_now(self.clock.monotonic()),
                "duration_s": self.clock.monotonic() - progress.t0,
            },
        )
        await self._flush()
        return decision

    def _time_to_next_look(self, progress: _StepProgress) -> float:
        now = self.clock.monotonic()
        wait = progress.step.record.poll_s
        for end in progress.step.ends:
            if end.condition == "time":
                wait = min(wait, progress.t0 + end.value - now)
            elif end.condition == "charge":
                current = progress.last_current if progress.last_t is not None else progress.step.current_a
                if current:
                    wait = min(wait, (end.value - abs(progress.charge_now(now))) / abs(current))
        return max(0.0, wait)

    def _clock_end(self, progress: _StepProgress) -> _Decision | None:
        now = self.clock.monotonic()
        for end in progress.step.ends:
            if end.condition == "time" and now - progress.t0 >= end.value * (1 - _RELATIVE_TOLERANCE):
                return _Decision(end.action, f"time {end.value:g} s reached")
            if end.condition == "charge" and abs(progress.charge_now(now)) >= end.value * (
                1 - _RELATIVE_TOLERANCE
            ):
                return _Decision(end.action, f"charge {end.value * 1e3 / 3.6:.4g} mAh reached")
        return None

    def _judge(self, progress: _StepProgress, readings: list[Reading]) -> _Decision | None:
        """Account, check and keep each new reading; the first decisive one wins."""
        decision: _Decision | None = None
        for reading in readings:
            if reading.t <= progress.t0 + 1e-9:  # at t0 the instrument measured before the command
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
                decision = _Decision(Action("alarm"), breach)
                continue
            for detector in self._detectors:
                finding = detector.update(reading.t, reading.voltage_v, reading.current_a)
                if finding is not None:
                    self._keep_now(progress, reading, kept)
                    decision = decision or self._on_finding(progress, finding)
            decision = decision or self._voltage_end(progress, reading)
        return decision

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
        values["pressure_pa"], values["temperature_k"] = self.plan.pressure_pa, self.plan.temperature_k
        return Sample(self._t_ns(reading.t), step, values)

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
        if plan.current_max_a is not None and abs(reading.current_a) > plan.current_max_a:
            limit_ma = plan.current_max_a * 1e3
            return f"current {reading.current_a * 1e3:.4g} mA above the safety limit {limit_ma:.4g} mA"
        return None

    def _on_finding(self, progress: _StepProgress, finding: Finding) -> _Decision | None:
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
        action = self._watches[finding.watch].action
        self._event(step.index, EventKind.DETECTOR, {**data, "action": action.describe()})
        if action.kind == "record":
            return None
        if action.kind == "alarm":
            self._event(step.index, EventKind.ALARM, {"message": finding.message})
        return _Decision(action, finding.message)

    def _voltage_end(self, progress: _StepProgress, reading: Reading) -> _Decision | None:
        for number, end in enumerate(progress.step.ends):
            if not end.condition.startswith("voltage"):
                continue
            beyond = (
                reading.voltage_v >= end.value
                if end.condition == "voltage_above"
                else reading.voltage_v <= end.value
            )
            if not beyond:
                progress.voltage_hold_since.pop(number, None)
                continue
            since = progress.voltage_hold_since.setdefault(number, reading.t)
            if reading.t - since >= end.debounce_s:
                return _Decision(end.action, f"{end.condition.replace('_', ' ')} {end.value:g} V")
        return None

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
                self.clock.monotonic(),
                values,
                dict(progress.step.context),
            )
        )

    async def _flush(self) -> None:
        samples, events = self._samples, self._events
        self._samples, self._events = [], []
        await self.journal.append(samples, events)
