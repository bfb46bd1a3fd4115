"""`labctl agent`: one process per bench PC runs that bench's stations and obeys commands over MQTT.

Per station at most one run at a time. Each run is a `labctl run` in all but its front-end: the same
run directory (under `runs_dir/<station>/`), journal, station and result.json (labctl.session); its
bus feeds the MQTT link (telemetry, events, the retained status) and, through the journal, an
InfluxDB forwarder. The journal is the truth: a broker or time-series server that is down never
stops or slows a run; the forwarder catches up from its durable cursor when the server is back,
also after the run ended and after the agent was restarted.

Commands arrive already validated, authorised and de-duplicated by the link (labctl.data.mqtt);
`Agent.handle` only executes them:

- start: compile the protocol text (errors name line and field; nothing starts), check the station
  can play it and is free, then start the run and reply with the run directory's name;
- pause / resume / abort: the runner's own (the station is made safe on pause and abort);
- mark: an operator's marker (EventKind.MARK) in the journal;
- set_safety: station limits that tighten every later run's safety window (merged into the
  current ones; "none" removes one). Refused while a run is going — a run keeps the limits it was
  started with, and a start whose steps exceed the station's limits is refused.

Errors: a bad bench file raises `labctl.errors.ConfigError` naming the file and key.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labctl import units
from labctl.clock import PacedClock
from labctl.config import StationConfig, load_station_config
from labctl.data import Bus, Event, EventKind
from labctl.data.rundir import new_run_dir
from labctl.errors import ConfigError, LabctlError, UnitError

if TYPE_CHECKING:
    from labctl.data.influx import InfluxSettings
    from labctl.data.mqtt import Command, MqttSettings, Reply
    from labctl.engine import Runner
    from labctl.protocol import Plan

log = logging.getLogger(__name__)

STATION_NAME = r"^[A-Za-z0-9_.-]+$"
"""Station names are MQTT topic levels and directory names: no '/', '+', '#' or spaces."""

SAFETY_KINDS: dict[str, units.Kind] = {
    "voltage_min": "voltage",
    "voltage_max": "voltage",
    "current_max": "current",
    "pressure_min": "pressure",
    "pressure_max": "pressure",
    "temperature_min": "temperature",
    "temperature_max": "temperature",
}
"""The station limits `set_safety` and `[[station]] safety` take, e.g. {current_max = "5 mA"}."""
STATUS_STEPS_MAX = 5000
"""At most this many of the plan's step descriptions go into the status (once per run, for every UI)."""


# --- configuration -------------------------------------------------------------------------------


class AgentSection(BaseModel):
    """`[agent]`: which lab the bench belongs to and where its runs go."""

    model_config = ConfigDict(extra="forbid")
    lab: str = Field(
        default="lab", pattern=STATION_NAME, description="the lab's name in MQTT topics and tags"
    )
    runs_dir: Path = Field(default=Path("runs"), description="runs go to runs_dir/<station>/<time>-<name>/")
    name: str | None = Field(default=None, description="MQTT client id (default labctl-agent-<host>)")
    drain_s: float = Field(default=10.0, ge=0, description="at shutdown, most seconds to catch up InfluxDB")


class StationEntry(BaseModel):
    """`[[station]]`: one bench station, simulated (`sim = true`) or real (`station = "bench.toml"`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=STATION_NAME)
    sim: bool = False
    station: Path | None = None
    allowed_users: list[str] = Field(default_factory=list)
    """Broker users whose commands this station executes (empty: nobody's). ["*"]: anyone the broker
    lets publish on the station's cmd topic (its ACL alone decides); then on every station."""
    seed: int = 1
    """Seed of a simulated bench (a `start` command may give its own)."""
    rig: Literal["screw", "pneumatic"] = "screw"
    """The simulated bench's stack-pressure rig."""
    speed: float | None = Field(default=None, gt=0)
    """A simulated bench's time: None runs as fast as it can; a number runs that many simulated
    seconds per wall second (e.g. 600: watchable in the terminal UI, pausable by hand)."""
    safety: dict[str, str] = Field(default_factory=dict)
    """Station limits, e.g. {current_max = "5 mA", voltage_max = "1 V"}; see SAFETY_KINDS."""

    @model_validator(mode="after")
    def _one_kind(self) -> StationEntry:
        if self.sim == (self.station is not None):
            raise ValueError('give either sim = true or station = "bench.toml" (a station file)')
        return self


class AgentConfig(BaseModel):
    """A bench file: `[agent]`, `[mqtt]`, optional `[influx]`, and one `[[station]]` per station.

    Secrets never live here: the broker password comes from LABCTL_MQTT_PASSWORD or
    `[mqtt] password_file`, the InfluxDB token from LABCTL_INFLUX_TOKEN.
    """

    model_config = ConfigDict(extra="forbid")
    agent: AgentSection = Field(default_factory=AgentSection)
    mqtt: dict[str, Any] = Field(default_factory=dict)
    influx: dict[str, Any] | None = None
    station: list[StationEntry] = Field(min_length=1)
    path: Path | None = Field(default=None, exclude=True)
    """The file this came from (relative paths in it are relative to its folder)."""

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        names = [s.name for s in self.station]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"station names must be unique; repeated: {', '.join(dupes)}")
        anyone = ["*" in s.allowed_users for s in self.station]
        if any(anyone) and not all(anyone):
            raise ValueError(
                'allowed_users = ["*"] (anyone the broker allows) must be on every station or none'
            )
        return self

    def allowed_users(self) -> dict[str, list[str]] | None:
        """Per station, who may command it; None: anyone the broker's ACL lets through."""
        if all("*" in s.allowed_users for s in self.station):
            return None
        return {s.name: s.allowed_users for s in self.station}

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read and validate a bench file; every error is one line naming the file and the key."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such bench file; see docs/agents.md for an example") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        for section, key, where in (
            ("mqtt", "password", "LABCTL_MQTT_PASSWORD or [mqtt] password_file"),
            ("influx", "token", "LABCTL_INFLUX_TOKEN"),
        ):
            if isinstance(data.get(section), dict) and key in data[section]:
                raise ConfigError(
                    f"{path}: {section}.{key}: secrets do not go in the bench file; use {where}"
                )
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            if (
                first["loc"][:1] == ("station",)
                and len(first["loc"]) > 1
                and isinstance(first["loc"][1], int)
            ):
                where = f"station[{first['loc'][1]}]" + "".join(f".{p}" for p in first["loc"][2:])
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{path}: {where}: {message}") from None
        config.path = path
        base = path.parent
        config.agent.runs_dir = base / config.agent.runs_dir
        for entry in config.station:
            if entry.station is not None:
                entry.station = base / entry.station
            try:
                parse_safety(entry.safety)
            except UnitError as exc:
                raise ConfigError(f"{path}: station {entry.name}: safety: {exc}") from None
        return config

    def mqtt_settings(self, environ: Mapping[str, str] | None = None) -> MqttSettings:
        """Broker settings: LABCTL_MQTT_* from the environment, then `[mqtt]` (the file wins)."""
        from labctl.data.mqtt import MqttSettings

        overrides = dict(self.mqtt)
        overrides.setdefault("lab", self.agent.lab)
        pw_file = overrides.get("password_file")
        if pw_file is not None and self.path is not None:
            overrides["password_file"] = self.path.parent / pw_file
        return MqttSettings.from_env(environ, **overrides)

    def influx_settings(self, environ: Mapping[str, str] | None = None) -> InfluxSettings | None:
        """InfluxDB settings from `[influx]` plus LABCTL_INFLUX_* (the token); None: no forwarding."""
        if self.influx is None:
            return None
        from labctl.data.influx import InfluxSettings

        overrides = dict(self.influx)
        overrides.setdefault("lab", self.agent.lab)
        return InfluxSettings.from_env(environ, **overrides)


def parse_safety(limits: Mapping[str, str]) -> dict[str, float]:
    """Station limits in SI from strings ("5 mA"); raises UnitError naming the key."""
    parsed: dict[str, float] = {}
    for key, text in limits.items():
        kind = SAFETY_KINDS.get(key)
        if kind is None:
            raise UnitError(f"{key}: not a safety limit (use {', '.join(SAFETY_KINDS)})")
        try:
            parsed[key] = units.parse(text, kind)
        except UnitError as exc:
            raise UnitError(f"{key}: {exc}") from None
    for low, high in (("voltage_min", "voltage_max"), ("pressure_min", "pressure_max")):
        if low in parsed and high in parsed and parsed[low] >= parsed[high]:
            raise UnitError(f"{low} must be below {high}")
    return parsed


def apply_safety(plan: Plan, limits: Mapping[str, float]) -> Plan:
    """The plan with its safety window narrowed to the station's limits.

    Raises:
        ConfigError: a step would need more than the station allows (nothing is started).
    """
    vmin = max(plan.voltage_min_v, limits.get("voltage_min", -math.inf))
    vmax = min(plan.voltage_max_v, limits.get("voltage_max", math.inf))
    if vmin >= vmax:
        raise ConfigError(
            f"the protocol's voltage window does not overlap the station's ({vmin:g}..{vmax:g} V)"
        )
    imax = plan.current_max_a
    if "current_max" in limits:
        imax = limits["current_max"] if imax is None else min(imax, limits["current_max"])
    for step in plan.steps:
        if imax is not None and abs(step.current_a) > imax:
            raise ConfigError(
                f"{plan.source}:{step.line}: sources {step.current_a * 1e3:.4g} mA, above this station's "
                f"current limit of {imax * 1e3:.4g} mA"
            )
        if step.voltage_v is not None and not vmin <= step.voltage_v <= vmax:
            raise ConfigError(
                f"{plan.source}:{step.line}: holds {step.voltage_v:g} V, outside this station's "
                f"window {vmin:g}..{vmax:g} V"
            )
    return replace(
        plan,
        voltage_min_v=vmin,
        voltage_max_v=vmax,
        current_max_a=imax,
        pressure_window_pa=_narrow(plan.pressure_window_pa, limits, "pressure"),
        temperature_window_k=_narrow(plan.temperature_window_k, limits, "temperature"),
    )


def _narrow(window: tuple[float, float] | None, limits: Mapping[str, float], name: str) -> Any:
    low, high = limits.get(f"{name}_min"), limits.get(f"{name}_max")
    if low is None and high is None:
        return window
    old_low, old_high = window or (-math.inf, math.inf)
    return max(old_low, -math.inf if low is None else low), min(old_high, math.inf if high is None else high)


# --- the agent -----------------------------------------------------------------------------------


class StatusLink:
    """What the agent needs of the MQTT link (labctl.data.mqtt.MqttLink; a fake in unit tests)."""

    def publisher(self, station: str) -> Callable[[object], None]:  # pragma: no cover - interface
        """A bus listener that publishes a station's records."""
        raise NotImplementedError

    def set_status(self, station: str, status: Mapping[str, Any]) -> None:  # pragma: no cover
        """Merge into the station's retained status."""
        raise NotImplementedError


@dataclass
class _ActiveRun:
    """A run in progress on one station."""

    run_dir: Path
    protocol: str
    task: asyncio.Task[None] | None = None
    runner: Runner | None = None
    step: int = -1
    t0: float | None = None
    """The run's clock when it started (for the elapsed time in the status)."""
    pending: list[tuple[str, str]] = field(default_factory=list)
    """Commands (action, note) that came before the runner existed; applied when it does."""


@dataclass
class _StationState:
    entry: StationEntry
    config: StationConfig | None
    safety: dict[str, float]
    safety_text: dict[str, str]
    active: _ActiveRun | None = None


class Agent:
    """Runs every station of one bench PC; `handle` executes commands, `run` serves until stopped.

    Args:
        config: the bench file.
        environ: where secrets come from (default os.environ).
    """

    def __init__(self, config: AgentConfig, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.environ = os.environ if environ is None else environ
        self.influx = config.influx_settings(self.environ)
        self.stations: dict[str, _StationState] = {}
        for entry in config.station:
            station_config = load_station_config(entry.station) if entry.station is not None else None
            self.stations[entry.name] = _StationState(
                entry, station_config, parse_safety(entry.safety), dict(entry.safety)
            )
        self.link: StatusLink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._forwarders: set[asyncio.Task[Any]] = set()

    @property
    def runs_dir(self) -> Path:
        """Where the runs go (one folder per station)."""
        return self.config.agent.runs_dir

    # --- lifetime ---------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Connect to the broker and obey commands until `stop` is set; then shut down cleanly."""
        from labctl.data.mqtt import MqttLink

        settings = self.config.mqtt_settings(self.environ)
        client_id = self.config.agent.name or f"labctl-agent-{_hostname()}-{os.getpid()}"
        link = MqttLink(
            settings,
            client_id=client_id,
            stations=list(self.stations),
            allowed_users=self.config.allowed_users(),
            handler=self.handle,
        )
        async with link:
            await self.run(link, stop)

    async def run(self, link: StatusLink, stop: asyncio.Event) -> None:
        """Serve on an open link until `stop`: abort what runs (station safe), flush, catch up, return."""
        self.link = link
        for name in self.stations:
            link.set_status(name, {"state": "idle", "simulated": self.stations[name].entry.sim})
        self._catch_up_earlier_runs()
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self, reason: str = "the agent was stopped") -> None:
        """Abort every run (each ends safe, with its result), then drain the forwarders for a while."""
        for state in self.stations.values():
            if state.active is not None and state.active.runner is not None:
                state.active.runner.abort(reason)
            elif state.active is not None and state.active.task is not None:
                state.active.task.cancel()  # not yet connected: nothing to make safe
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._forwarders:
            _, pending = await asyncio.wait(self._forwarders, timeout=self.config.agent.drain_s)
            if pending:
                log.warning(
                    "InfluxDB not caught up after %g s for %d run(s); the journals keep the rest, the next "
                    "agent (or `labctl forward RUN_DIR`) sends it",
                    self.config.agent.drain_s,
                    len(pending),
                )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- commands ---------------------------------------------------------------------------------

    async def handle(self, station: str, command: Command) -> Reply:
        """Execute one valid, allowed, first-time command for a station; never raises."""
        from labctl.data.mqtt import Reply

        state = self.stations.get(station)
        if state is None:
            return Reply(id=command.id, ok=False, message=f"no station {station!r} on this agent")
        try:
            action = getattr(self, f"_{command.action}")
            return await action(station, state, command)
        except LabctlError as exc:
            return Reply(id=command.id, ok=False, message=str(exc))
        except Exception as exc:  # a bug: say so, keep serving the other stations
            log.exception("command %s on %s failed", command.action, station)
            return Reply(id=command.id, ok=False, message=f"internal error: {type(exc).__name__}: {exc}")

    async def _start(self, station: str, state: _StationState, command: Command) -> Reply:
        from labctl.data.mqtt import Reply
        from labctl.protocol import compile_text
        from labctl.session import _check_station_abilities

        if state.active is not None:
            return Reply(
                id=command.id,
                ok=False,
                message=f"station {station} is busy with {state.active.run_dir.name}; "
                "wait for it to end or abort it",
            )
        if not command.protocol:
            return Reply(id=command.id, ok=False, message="start needs the protocol file's contents")
        plan = compile_text(command.protocol, "<submitted>")  # ProtocolError: file:line messages
        plan = apply_safety(plan, state.safety)
        _check_station_abilities(plan, state.entry.sim, state.config)
        seed = command.seed if command.seed is not None else state.entry.seed
        run_dir = new_run_dir(plan.name, None, root=self.runs_dir / station)
        active = _ActiveRun(run_dir, plan.name)
        state.active = active
        self._status(
            station,
            state="starting",
            protocol=plan.name,
            run=run_dir.name,
            step=None,
            step_description="",
            alarm=None,
            message="connecting the station",
            elapsed_s=0.0,
            steps=[step.description for step in plan.steps[:STATUS_STEPS_MAX]],
            steps_total=len(plan.steps),
        )
        active.task = self._spawn(self._run(station, state, active, plan, command.protocol, seed))
        return Reply(
            id=command.id,
            ok=True,
            message=f"started {plan.name} on {station}: {run_dir.name}",
            data={"run": run_dir.name, "protocol": plan.name, "steps": len(plan.steps), "seed": seed},
        )

    async def _pause(self, station: str, state: _StationState, command: Command) -> Reply:
        return self._control(station, state, command, "pause", "pausing at the next poll (station made safe)")

    async def _resume(self, station: str, state: _StationState, command: Command) -> Reply:
        return self._control(station, state, command, "resume", "resuming")

    async def _abort(self, station: str, state: _StationState, command: Command) -> Reply:
        return self._control(station, state, command, "abort", "aborting (station made safe)")

    async def _mark(self, station: str, state: _StationState, command: Command) -> Reply:
        return self._control(station, state, command, "mark", f"marked: {command.note or ''}")

    def _control(self, station: str, state: _StationState, command: Command, what: str, done: str) -> Reply:
        from labctl.data.mqtt import Reply

        active = state.active
        if active is None:
            return Reply(id=command.id, ok=False, message=f"nothing is running on {station}")
        if what == "mark" and not command.note:
            return Reply(id=command.id, ok=False, message="mark needs a note")
        note = command.note or f"{what} by the operator"
        if active.runner is None:
            active.pending.append((what, note))  # still connecting: applied once the runner exists
        else:
            self._apply(active, what, note)
        return Reply(id=command.id, ok=True, message=f"{station}: {done}", data={"run": active.run_dir.name})

    @staticmethod
    def _apply(active: _ActiveRun, what: str, note: str) -> None:
        runner = active.runner
        assert runner is not None
        if what == "pause":
            runner.pause(note)
        elif what == "resume":
            runner.resume()
        elif what == "abort":
            runner.abort(note)
        else:
            runner.mark(note, active.step)

    async def _set_safety(self, station: str, state: _StationState, command: Command) -> Reply:
        from labctl.data.mqtt import Reply

        if state.active is not None:
            return Reply(
                id=command.id,
                ok=False,
                message=f"{station} is running {state.active.run_dir.name}: safety limits change between "
                "runs only (a run keeps the limits it started with)",
            )
        given = command.safety or {}
        cleared = {k for k, v in given.items() if v.strip().lower() == "none"}
        if unknown := sorted(cleared - set(SAFETY_KINDS)):
            raise UnitError(f"{unknown[0]}: not a safety limit (use {', '.join(SAFETY_KINDS)})")
        merged = {**state.safety_text, **{k: v for k, v in given.items() if k not in cleared}}
        merged = {k: v for k, v in merged.items() if k not in cleared}
        limits = parse_safety(merged)  # UnitError: nothing changes
        state.safety, state.safety_text = limits, merged
        self._status(station, safety=merged)
        text = ", ".join(f"{k} {v}" for k, v in merged.items()) or "none (each protocol's own apply)"
        return Reply(
            id=command.id,
            ok=True,
            message=f"{station}: safety limits for the next runs: {text}",
            data={"safety": merged, "safety_si": limits},
        )

    # --- runs -------------------------------------------------------------------------------------

    async def _run(
        self, station: str, state: _StationState, active: _ActiveRun, plan: Plan, text: str, seed: int
    ) -> None:
        """One run, start to end; whatever happens, the station ends idle for the next one."""
        from labctl.session import open_run

        bus = Bus()
        assert self.link is not None
        bus.subscribe(self.link.publisher(station))
        bus.subscribe(self._status_listener(station, active))
        run_ended = asyncio.Event()
        started = time.monotonic()
        try:
            async with open_run(
                plan,
                text,
                simulate=state.entry.sim,
                station_config=state.config,
                seed=seed,
                out=active.run_dir,
                rig=state.entry.rig,
                clock=PacedClock(state.entry.speed) if state.entry.sim and state.entry.speed else None,
            ) as run:
                run.journal.set_meta("station", _station_meta(station, state))
                run.journal.set_meta("lab", self.config.agent.lab)
                if self.influx is not None:
                    self._forward(run.journal.path, run_ended)
                runner = run.runner(bus)  # an operator can resume waits; an alarm ends the run (safe)
                outcome_task = asyncio.ensure_future(runner.run())
                await asyncio.sleep(0)  # run() has begun (abort() needs its task): commands go to it now
                active.runner = runner
                for what, note in active.pending:
                    self._apply(active, what, note)
                active.pending.clear()
                outcome = await outcome_task
                report = await asyncio.to_thread(run.conclude, outcome)
            self._status(
                station,
                state=outcome.state.value,
                message=outcome.reason,
                alarm=outcome.reason if outcome.state.value in ("alarm", "failed") else None,
                unsafe=outcome.unsafe or None,
                samples=report.samples,
                elapsed_s=round(report.simulated_s, 3),
            )
            log.info(
                "%s: %s ended %s: %s (%.1f s wall)",
                station,
                active.run_dir.name,
                outcome.state.value,
                outcome.reason,
                time.monotonic() - started,
            )
        except asyncio.CancelledError:
            self._status(station, state="aborted", message="stopped before the run began")
            raise
        except Exception as exc:
            message = str(exc) if isinstance(exc, LabctlError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, LabctlError):
                log.exception("%s: run %s failed", station, active.run_dir.name)
            self._status(station, state="failed", alarm=message, message=message)
        finally:
            run_ended.set()
            state.active = None

    def _status_listener(self, station: str, active: _ActiveRun) -> Callable[[object], None]:
        """Bus listener: the run's state, step and alarms into the status (the link adds the last values)."""

        def on_record(record: object) -> None:
            if isinstance(record, Event):
                self._on_event(station, active, record)

        return on_record

    def _on_event(self, station: str, active: _ActiveRun, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.RUN_STARTED:
            active.t0 = self._clock_now(active)
            self._status(station, state="running", message="", started_ns=event.t_ns)
        elif kind is EventKind.STEP_STARTED:
            active.step = event.step
            self._status(
                station,
                step=event.step,
                step_description=event.data.get("description", ""),
                elapsed_s=self._elapsed(active),
            )
        elif kind is EventKind.PAUSED:
            self._status(station, state="paused", message=str(event.data.get("message") or ""))
        elif kind is EventKind.RESUMED:
            self._status(station, state="running", message=str(event.data.get("reason") or ""))
        elif kind in (EventKind.LIMIT, EventKind.ALARM):
            self._status(station, alarm=str(event.data.get("message") or event.data.get("reason") or kind))

    @staticmethod
    def _clock_now(active: _ActiveRun) -> float | None:
        return active.runner.clock.monotonic() if active.runner is not None else None

    def _elapsed(self, active: _ActiveRun) -> float | None:
        now = self._clock_now(active)
        return None if now is None or active.t0 is None else round(now - active.t0, 3)

    def _status(self, station: str, **fields: Any) -> None:
        if self.link is not None:
            self.link.set_status(station, fields)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- InfluxDB ---------------------------------------------------------------------------------

    def _forward(self, journal: Path, run_ended: asyncio.Event | None) -> None:
        """Forward a journal: follow it while its run runs, then until caught up (however long)."""
        task = asyncio.ensure_future(self._forward_journal(journal, run_ended))
        self._forwarders.add(task)
        task.add_done_callback(self._forwarders.discard)

    async def _forward_journal(self, journal: Path, run_ended: asyncio.Event | None) -> None:
        from labctl.data.influx import InfluxForwarder

        assert self.influx is not None
        try:
            async with InfluxForwarder(journal, self.influx) as forwarder:
                if run_ended is not None:
                    await forwarder.run(run_ended)
                lines = await forwarder.forward_until_caught_up()
                log.info(
                    "%s: InfluxDB caught up (%d lines now, %d in all)",
                    journal.parent.name,
                    lines,
                    forwarder.forwarded_lines,
                )
        except LabctlError as exc:
            log.error("not forwarding %s: %s", journal.parent, exc)

    def _catch_up_earlier_runs(self) -> None:
        """Runs of earlier agent lives whose forwarding was not finished: catch them up, one at a time."""
        if self.influx is None:
            return
        journals = sorted(self.runs_dir.glob("*/*/journal.sqlite"))
        if journals:
            task = asyncio.ensure_future(self._catch_up_sequentially(journals))
            self._forwarders.add(task)
            task.add_done_callback(self._forwarders.discard)

    async def _catch_up_sequentially(self, journals: list[Path]) -> None:
        for journal in journals:
            await self._forward_journal(journal, None)


def _station_meta(station: str, state: _StationState) -> dict[str, Any]:
    """The journal's `station` fact: the agent's name for it (the `station` tag in InfluxDB)."""
    if state.config is not None:
        return {**state.config.model_dump(mode="json"), "name": station}
    return {"name": station, "simulated": True, "rig": state.entry.rig}


def _hostname() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", os.uname().nodename) or "host"
