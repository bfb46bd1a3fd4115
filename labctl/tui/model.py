"""What the terminal UI shows, as plain data: one `StationView` per station in a `LabModel`.

The model is fed by a connection (labctl.tui.connection) with the payloads of docs/mqtt.md — the
retained status, telemetry samples and events — whether they came over the broker or straight from an
in-process agent. It is cheap to update (10 Hz × 16 stations): appending to bounded deques and a few
dictionary updates per message; `version` moves on every change so the UI redraws only when needed.

Results so far (CCD, short, soft shorts, cycles, the last spectrum) are computed here from the events,
incrementally, with small pure functions (`ccd_from_half_cycles`, `describe_event`); nothing re-runs the
run's analysis (labctl.analysis does that from the journal when the run has ended).

No Textual here: the model is tested on its own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labctl import units

SERIES = ("voltage_v", "current_a", "current_density_a_m2", "pressure_pa", "temperature_k")
"""The plotted series, by the telemetry value name (SI units)."""
SERIES_POINTS = 20_000
"""Points kept per series and station (the oldest go first)."""
EVENTS_KEPT = 2_000
"""Events kept per station (the oldest go first)."""
ALARM_EVENTS = frozenset({"limit", "alarm", "instrument"})
"""Event kinds that always raise an alarm (a short is a `detector` event of type short_circuit)."""
ALARM_STATES = frozenset({"alarm", "failed"})
"""Run states that raise an alarm when a station enters them."""
LIVE_STATES = frozenset({"starting", "running", "paused"})


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (null, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ma_cm2(density_a_m2: Any) -> float | None:
    """|density| in mA/cm², rounded like labctl.analysis.ccd (so levels compare equal)."""
    value = _number(density_a_m2)
    return None if value is None else round(abs(units.to_ma_per_cm2(value)), 9)


def ccd_from_half_cycles(
    half_cycles: Iterable[tuple[float, bool | None]], short_at_ma_cm2: float | None
) -> float | None:
    """The critical current density so far: the highest density whose half-cycles all completed.

    Same rule as labctl.analysis.ccd: a level counts when every half-cycle at it ran to its own end,
    and it is below the density that shorted.

    Args:
        half_cycles: (|density| in mA/cm², completed) per current step started; completed is None
            while the step still runs (the level is not complete yet).
        short_at_ma_cm2: the density at which the cell shorted, if it did.

    Returns:
        The CCD in mA/cm², or None when no level is complete.
    """
    levels: dict[float, bool] = {}
    for density, completed in half_cycles:
        levels[density] = levels.get(density, True) and bool(completed)
    done = [d for d, ok in levels.items() if ok and (short_at_ma_cm2 is None or d < short_at_ma_cm2)]
    return max(done) if done else None


def describe_event(kind: str, data: Mapping[str, Any], step: int | None = None) -> str:
    """One line for the event log, e.g. "step 4 ended: capacity reached" or "cycle 3, CE 99.1 %"."""
    if kind == "step_started":
        return f"step {step}: {data.get('description') or data.get('kind') or ''}".rstrip(": ")
    if kind == "step_ended":
        return f"step {step} ended: {data.get('reason') or data.get('action') or 'done'}"
    if kind == "run_started":
        return "run started"
    if kind == "run_ended":
        reason = data.get("reason")
        return f"run ended {data.get('state', '?')}" + (f": {reason}" if reason else "")
    if kind == "cycle":
        parts = [f"cycle {data.get('cycle', '?')}"]
        discharge = _number(data.get("discharge_c"))
        if discharge is not None:
            parts.append(f"discharge {discharge / 3.6:.4g} mAh")
        efficiency = _number(data.get("efficiency"))
        if efficiency is not None:
            parts.append(f"CE {efficiency * 100:.2f} %")
        return ", ".join(parts)
    if kind == "eis":
        return f"spectrum {data.get('spectrum', '?')}: {data.get('points', '?')} points"
    if kind == "mark":
        return f"mark: {data.get('note', '')}"
    if kind == "instrument":
        return f"instrument: {data.get('message', '')}"
    text = data.get("message") or data.get("reason") or data.get("note")
    return f"{kind}: {text}" if text else kind


@dataclass
class StationView:
    """Everything the UI shows about one station.

    Attributes:
        name: the station's name (an MQTT topic level).
        status: the retained status as published (state, protocol, run, step, step_description,
            elapsed_s, values, alarm, message, agent, steps …; docs/mqtt.md).
        series: per name in SERIES, (run time in s, value) points, run time from the run's start
            (simulated time for a simulated station); bounded to SERIES_POINTS.
        events: newest last: {"t": run time s, "step": int, "kind": str, "message": str, "data": dict}.
        steps: the plan's step descriptions when the status carries them, else [].
        step_context: loop parameters and counters of the current step (e.g. {"j": 10.0, "cycle": 2}).
        results: so far: ccd_mA_cm2, short_at_mA_cm2, soft_shorts, critical_stripping_mA_cm2,
            cycles [{number, charge_mah, discharge_mah, efficiency, retention}], last_spectrum
            {spectrum, points: [(frequency_hz, z_real_ohm, z_imag_ohm)]}.
        alarm: the newest alarm (short detected, safety limit, instrument lost, run failed, agent offline).
        alarm_acknowledged: whether the operator acknowledged `alarm`.
    """

    name: str
    status: dict[str, Any] = field(default_factory=dict)
    series: dict[str, deque[tuple[float, float]]] = field(
        default_factory=lambda: {key: deque(maxlen=SERIES_POINTS) for key in SERIES}
    )
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    steps: list[str] = field(default_factory=list)
    step_context: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    alarm: str | None = None
    alarm_acknowledged: bool = False
    run_start_ns: int | None = None
    """UTC ns of the run's start (status `started_ns`, the run_started event, else the first sample)."""
    last_values: dict[str, float] = field(default_factory=dict)
    """The newest value of each quantity, from telemetry and the status (SI, unit-suffixed names)."""
    _step_density: dict[int, float | None] = field(default_factory=dict, repr=False)
    _half_cycles: dict[int, list[Any]] = field(default_factory=dict, repr=False)
    _short_step: int | None = field(default=None, repr=False)
    _alarms_seen: set[str] = field(default_factory=set, repr=False)

    @property
    def state(self) -> str:
        """idle, starting, running, paused, alarm, done, aborted, failed, offline; "unknown" before any."""
        return str(self.status.get("state") or "unknown")

    @property
    def values(self) -> dict[str, float]:
        """The last values (voltage_v, current_a, power_w, pressure_pa, temperature_k … in SI)."""
        return self.last_values

    @property
    def run(self) -> str | None:
        """The current (or last) run's name."""
        run = self.status.get("run")
        return str(run) if run else None

    @property
    def needs_attention(self) -> bool:
        """An alarm the operator has not acknowledged yet."""
        return self.alarm is not None and not self.alarm_acknowledged

    def window(self, key: str, seconds: float | None) -> tuple[list[float], list[float]]:
        """The last `seconds` of a series (all of it for None): (times in s, values)."""
        points = self.series.get(key)
        if not points:
            return [], []
        if seconds is None:
            chosen = list(points)
        else:
            cutoff = points[-1][0] - seconds
            chosen = []
            for point in reversed(points):
                if point[0] < cutoff:
                    break
                chosen.append(point)
            chosen.reverse()
        return [t for t, _ in chosen], [v for _, v in chosen]

    # --- updates (LabModel calls these) -------------------------------------------------------------

    def _new_run(self) -> None:
        for points in self.series.values():
            points.clear()
        self.results = {}
        self.step_context = {}
        self.run_start_ns = None
        self._step_density.clear()
        self._half_cycles.clear()
        self._short_step = None
        self._alarms_seen.clear()

    def _raise_alarm(self, text: str) -> bool:
        if not text or text in self._alarms_seen:
            return False
        self._alarms_seen.add(text)
        self.alarm = text
        self.alarm_acknowledged = False
        return True

    def _run_time(self, t_ns: Any) -> float:
        if not isinstance(t_ns, int):
            return self._last_time()
        if self.run_start_ns is None:
            self.run_start_ns = t_ns
        return (t_ns - self.run_start_ns) / 1e9

    def _last_time(self) -> float:
        points = self.series["voltage_v"]
        return points[-1][0] if points else 0.0

    def _update_ccd(self) -> None:
        short_at = self.results.get("short_at_mA_cm2")
        halves = [(density, completed) for density, completed in self._half_cycles.values()]
        if halves:
            self.results["ccd_mA_cm2"] = ccd_from_half_cycles(halves, short_at)


class LabModel:
    """Every station of a lab (or of one local agent) and the state of the connection to it.

    Attributes:
        stations: by name; `sorted_stations()` lists them in name order.
        connected: whether the connection to the lab is up.
        connection_message: what the header says, e.g. "connected to mqtt://host:1883" or
            "broker unreachable (…): reconnecting in 4 s".
        version: +1 on every change; the UI redraws when it moved.
    """

    def __init__(self) -> None:
        self.stations: dict[str, StationView] = {}
        self.connected = False
        self.connection_message = "not connected yet"
        self.version = 0
        self._agents: dict[str, dict[str, Any]] = {}

    def station(self, name: str) -> StationView:
        """The view of `name`, created empty when first seen."""
        view = self.stations.get(name)
        if view is None:
            view = self.stations[name] = StationView(name)
            self.stations = dict(sorted(self.stations.items()))
        return view

    def sorted_stations(self) -> list[StationView]:
        """The stations in name order."""
        return [self.stations[name] for name in sorted(self.stations)]

    @property
    def alarms(self) -> list[StationView]:
        """Stations with an unacknowledged alarm, in name order."""
        return [view for view in self.sorted_stations() if view.needs_attention]

    def set_connection(self, connected: bool, message: str) -> None:
        """Record the connection's state and what the header should say about it."""
        if (connected, message) != (self.connected, self.connection_message):
            self.connected, self.connection_message = connected, message
            self.version += 1

    def apply_status(self, station: str, status: Mapping[str, Any]) -> None:
        """A station's retained status (the whole payload; it replaces the previous one)."""
        view = self.station(station)
        before_state, before_run = view.status.get("state"), view.status.get("run")
        status = dict(status)
        if not status:  # a cleared retained status: the station was removed from the lab
            view.status = {}
            self.version += 1
            return
        agent = self._agents.get(str(status.get("agent")))
        if agent is not None and agent.get("state") == "offline" and status.get("state") != "offline":
            status["last_state"] = status.get("state")
            status["state"] = "offline"
        run = status.get("run")
        if run and run != before_run:
            view._new_run()
        view.status = status
        if isinstance(status.get("started_ns"), int) and view.run_start_ns is None and run:
            view.run_start_ns = status["started_ns"]
        if "steps" in status and isinstance(status["steps"], list):
            if len(status["steps"]) != len(view.steps) or (run and run != before_run):
                view.steps = [str(s) for s in status["steps"]]
        elif run and run != before_run:
            view.steps = []
        for key, value in (status.get("values") or {}).items():
            number = _number(value)
            if number is not None:
                view.last_values[key] = number
        state = status.get("state")
        if state != before_state:
            if state in ALARM_STATES:
                reason = status.get("alarm") or status.get("message") or state
                view._raise_alarm(f"run {state}: {reason}" if state == "failed" else str(reason))
            elif state == "offline" and before_state not in (None, "offline", "idle", "done", "aborted"):
                view._raise_alarm(f"agent {status.get('agent', '?')} offline while {before_state}")
        if status.get("alarm") and state not in ALARM_STATES:
            view._raise_alarm(str(status["alarm"]))
        self.version += 1

    def apply_agent(self, agent: str, payload: Mapping[str, Any]) -> None:
        """An agent's liveness ({"state": "online"|"offline", "stations": [...]}); its will says offline."""
        self._agents[agent] = dict(payload)
        if payload.get("state") != "offline":
            for view in self.stations.values():  # back: the states its will had hidden
                if view.status.get("agent") == agent and view.status.get("last_state"):
                    status = dict(view.status)
                    status["state"] = status.pop("last_state")
                    view.status = status
                    self.version += 1
            return
        names = {str(s) for s in payload.get("stations") or []}
        for view in self.stations.values():
            if view.status.get("agent") != agent and view.name not in names:
                continue
            state = view.status.get("state")
            if state in (None, "offline"):
                continue
            view.status = {**view.status, "last_state": state, "state": "offline"}
            view._raise_alarm(f"agent {agent} offline (station was {state})")
            self.version += 1

    def apply_telemetry(self, station: str, payload: Mapping[str, Any]) -> None:
        """One telemetry sample: {"t_ns", "step", "kind": "dc"|"eis", "values": {…}}."""
        view = self.station(station)
        values = payload.get("values") or {}
        if payload.get("kind", "dc") == "eis":
            self._eis_point(view, values)
            self.version += 1
            return
        t = view._run_time(payload.get("t_ns"))
        for key in SERIES:
            number = _number(values.get(key))
            if number is not None:
                view.series[key].append((t, number))
                view.last_values[key] = number
        if "current_density_a_m2" not in values:
            step = payload.get("step")
            if isinstance(step, int) and step in view._step_density:
                view.series["current_density_a_m2"].append((t, view._step_density[step] or 0.0))
        for key, value in values.items():
            if key not in SERIES:
                number = _number(value)
                if number is not None:
                    view.last_values[key] = number
        self.version += 1

    @staticmethod
    def _eis_point(view: StationView, values: Mapping[str, Any]) -> None:
        spectrum = values.get("spectrum")
        last = view.results.get("last_spectrum")
        if last is None or last.get("spectrum") != spectrum:
            last = view.results["last_spectrum"] = {"spectrum": spectrum, "points": []}
        point = tuple(_number(values.get(k)) for k in ("frequency_hz", "z_real_ohm", "z_imag_ohm"))
        if None not in point:
            last["points"].append(point)

    def apply_event(self, station: str, payload: Mapping[str, Any]) -> None:
        """One event: {"t_ns", "step", "kind", "data": {…}} (kinds as labctl.data.records.EventKind)."""
        view = self.station(station)
        kind = str(payload.get("kind") or "event")
        data = payload.get("data") or {}
        step = payload.get("step") if isinstance(payload.get("step"), int) else None
        if kind == "run_started" and isinstance(payload.get("t_ns"), int):
            view.run_start_ns = payload["t_ns"]
        t = view._run_time(payload.get("t_ns"))
        message = describe_event(kind, data, step)
        view.events.append({"t": t, "step": step, "kind": kind, "message": message, "data": data})
        results = view.results
        if kind == "step_started" and step is not None:
            density = _number(data.get("density_a_m2"))
            view._step_density[step] = density if data.get("kind") in ("current", "rest") else None
            if data.get("kind") == "rest":
                view._step_density[step] = 0.0
            if isinstance(data.get("context"), dict):
                view.step_context = dict(data["context"])
            if data.get("kind") == "current" and density:
                view._half_cycles[step] = [_ma_cm2(density), None]
                view._update_ccd()
        elif kind == "step_ended" and step is not None and step in view._half_cycles:
            reason = str(data.get("reason") or "")
            view._half_cycles[step][1] = step != view._short_step and not reason.startswith("short")
            view._update_ccd()
        elif kind == "detector":
            self._detector(view, step, data)
        elif kind == "soft_short":
            results["soft_shorts"] = results.get("soft_shorts", 0) + 1
        elif kind == "cycle":
            results.setdefault("cycles", []).append(
                {
                    "number": data.get("cycle"),
                    "charge_mah": None if _number(data.get("charge_c")) is None else data["charge_c"] / 3.6,
                    "discharge_mah": (
                        None if _number(data.get("discharge_c")) is None else data["discharge_c"] / 3.6
                    ),
                    "efficiency": _number(data.get("efficiency")),
                    "retention": _number(data.get("retention")),
                }
            )
        elif kind == "eis":
            last = results.get("last_spectrum")
            if last is None or last.get("spectrum") != data.get("spectrum"):
                results["last_spectrum"] = {"spectrum": data.get("spectrum"), "points": []}
            results["last_spectrum"]["expected_points"] = data.get("points")
        elif kind in ALARM_EVENTS:
            message = str(data.get("message") or data.get("reason") or kind)
            view._raise_alarm(f"instrument: {message}" if kind == "instrument" else message)
        elif kind == "run_ended" and data.get("state") in ALARM_STATES:
            view._raise_alarm(str(data.get("reason") or f"run {data.get('state')}"))
        self.version += 1

    @staticmethod
    def _detector(view: StationView, step: int | None, data: Mapping[str, Any]) -> None:
        kind = data.get("type")
        if kind == "short_circuit":
            if view._short_step is None:
                view._short_step = step
                density = _ma_cm2(data.get("density_a_m2"))
                if density is None and step is not None:
                    density = _ma_cm2(view._step_density.get(step))
                view.results["short_at_mA_cm2"] = density
                if step in view._half_cycles:
                    view._half_cycles[step][1] = False
                view._update_ccd()
            short_at = view.results.get("short_at_mA_cm2")
            where = f" at {short_at:g} mA/cm²" if short_at else ""
            view._raise_alarm(f"short detected{where}: {data.get('message', '')}".rstrip(": "))
        elif kind == "stripping_polarization":
            density = _ma_cm2(data.get("density_a_m2"))
            if density:
                known = view.results.get("critical_stripping_mA_cm2")
                view.results["critical_stripping_mA_cm2"] = density if known is None else min(known, density)

    def acknowledge(self, station: str) -> None:
        """The operator saw the station's alarm: it stays shown, no longer demanding attention."""
        view = self.stations.get(station)
        if view is not None and view.alarm is not None and not view.alarm_acknowledged:
            view.alarm_acknowledged = True
            self.version += 1
