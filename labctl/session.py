"""One run from start to finish: run directory, station, runner, analysis, result.json.

The CLI (and later the agent) call `run_protocol`; it owns every resource of the run and releases
them — instruments safe and closed, journal committed — however the run ends.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl import units
from labctl.analysis.ccd import analyse_ccd, ccd_per_cell
from labctl.analysis.shorts import short_watch
from labctl.clock import Clock, RealClock, SimulatedClock
from labctl.config import StationConfig, connect_station
from labctl.data import Bus, EventKind, Journal
from labctl.data.rundir import JOURNAL, PROTOCOL, RESULT, SETTINGS, new_run_dir, write_json
from labctl.engine import Runner, RunOutcome, Station
from labctl.engine.checkpoint import CHECKPOINT_KEY, Checkpoint
from labctl.errors import ConfigError, RunDirError
from labctl.protocol.plan import Plan


@dataclass
class RunReport:
    """What the CLI prints at the end."""

    run_dir: Path
    outcome: RunOutcome
    result: dict[str, Any]
    simulated_s: float
    samples: int


def describe_conditions(plan: Plan) -> dict[str, Any]:
    """The test conditions stored with every result (DOMAIN.md §5)."""
    cell: dict[str, Any] = {
        "kind": plan.cell.kind,
        "material": plan.cell.material,
        "area_cm2": round(plan.cell.area_m2 * 1e4, 6),
        "thickness_mm": round(plan.cell.thickness_m * 1e3, 6),
    }
    if plan.cell.kind == "full":
        cell.update(cathode=plan.cell.cathode, anode=plan.cell.anode)
    if plan.cell.loading_kg_m2 is not None:
        cell["loading_mg_cm2"] = round(plan.cell.loading_kg_m2 * 100, 6)
        cell["active_mass_mg"] = round((plan.cell.active_mass_kg or 0.0) * 1e6, 6)
    if plan.cell.capacity_c_m2 is not None:
        cell["capacity_mAh_cm2"] = round(units.to_mah_per_cm2(plan.cell.capacity_c_m2), 6)
    return {
        "cell": cell,
        "pressure_MPa": round(plan.pressure_pa / 1e6, 6),
        "temperature_C": round(units.kelvin_to_celsius(plan.temperature_k), 4),
    }


@dataclass
class RunContext:
    """Everything a run owns while it runs: its directory, journal, station and clock."""

    plan: Plan
    run_dir: Path
    journal: Journal
    station: Station
    clock: Clock
    settings: dict[str, Any]
    seed: int
    simulated: bool
    start_s: float
    on_checkpoint: Callable[[int], None] | None = None
    """The simulated bench saves its physics at each checkpoint (None on a real station)."""

    def runner(self, bus: Bus, **options: Any) -> Runner:
        """A runner for this run's plan, station and journal, checkpointing as it goes."""
        return Runner(
            self.plan,
            self.station,
            self.clock,
            self.journal,
            bus,
            seed=self.seed,
            on_checkpoint=self.on_checkpoint,
            **options,
        )

    def conclude(self, outcome: RunOutcome) -> RunReport:
        """Analyse the journal and write result.json."""
        result = build_result(self.plan, self.journal, outcome, self.seed, self.simulated)
        write_json(self.run_dir / RESULT, result)
        elapsed = self.clock.monotonic() - self.start_s
        return RunReport(self.run_dir, outcome, result, elapsed, self.journal.count_samples())


@asynccontextmanager
async def open_run(
    plan: Plan,
    protocol_text: str,
    *,
    simulate: bool,
    station_config: StationConfig | None,
    seed: int,
    out: Path | None,
    clock: Clock | None = None,
    on_start: Callable[[Path], None] | None = None,
    rig: str = "screw",
) -> AsyncIterator[RunContext]:
    """Create the run directory and journal, connect the station; release all of it on exit.

    A run that never reached its station (an unreachable instrument) leaves no directory behind.
    `rig` picks the simulated bench's stack-pressure rig ("screw" or "pneumatic").
    """
    clock = clock or (SimulatedClock() if simulate else RealClock())
    _check_station_abilities(plan, simulate, station_config)
    run_dir = new_run_dir(plan.name, out)
    (run_dir / PROTOCOL).write_text(protocol_text, encoding="utf-8")
    settings = {
        "protocol": plan.name,
        "source": plan.source,
        "simulated": simulate,
        "seed": seed,
        **describe_conditions(plan),
        "safety": {
            "voltage_V": [plan.voltage_min_v, plan.voltage_max_v],
            "current_max_A": plan.current_max_a,
        },
        "station": station_config.model_dump() if station_config else "simulated",
    }
    if simulate:
        settings["rig"] = rig
    write_json(run_dir / SETTINGS, settings)
    journal = Journal(run_dir / JOURNAL)
    started = False
    try:
        for key, value in settings.items():
            journal.set_meta(key, value)
        if on_start is not None:
            on_start(run_dir)
        station_cm: AbstractAsyncContextManager[Station]
        on_checkpoint = None
        if simulate:
            from labctl.simbench import BenchState, simulated_station

            bench = BenchState(run_dir, clock)
            on_checkpoint = bench.save
            station_cm = simulated_station(plan, clock, seed, rig=rig, bench=bench)
        else:
            assert station_config is not None
            station_cm = connect_station(station_config, clock, plan.cell.area_m2)
        async with station_cm as station:
            settings["instrument"] = getattr(station.potentiostat, "identity", "")
            journal.set_meta("instrument", settings["instrument"])
            write_json(run_dir / SETTINGS, settings)
            started = True
            yield RunContext(
                plan,
                run_dir,
                journal,
                station,
                clock,
                settings,
                seed,
                simulate,
                clock.monotonic(),
                on_checkpoint,
            )
    finally:
        journal.close()
        if not started:  # nothing ran (e.g. the instrument was unreachable): leave no half run behind
            shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class CrashedRun:
    """A run directory `labctl resume` can continue: its plan, settings and last checkpoint."""

    run_dir: Path
    plan: Plan
    settings: dict[str, Any]
    checkpoint: Checkpoint


def read_crashed_run(run_dir: Path) -> CrashedRun:
    """Read a run directory for `labctl resume`; refuse one that is not a run or that finished."""
    from labctl.protocol import Overrides, compile_file

    missing = [name for name in (JOURNAL, PROTOCOL, SETTINGS) if not (run_dir / name).is_file()]
    if not run_dir.is_dir() or missing:
        raise RunDirError(
            f"{run_dir} is not a run directory (no {', '.join(missing) or 'such directory'}); "
            "give the directory `labctl run` printed, e.g. runs/20261121-120000-ccd"
        )
    if (run_dir / RESULT).is_file():
        result = json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
        raise RunDirError(
            f"{run_dir}: this run finished ({result.get('state')}: {result.get('reason')}); "
            "there is nothing to resume (start a new run with labctl run)"
        )
    journal = Journal(run_dir / JOURNAL)
    try:
        ended = next(iter(journal.events([EventKind.RUN_ENDED])), None)
        meta = journal.meta()
    finally:
        journal.close()
    if ended is not None:
        raise RunDirError(
            f"{run_dir}: this run ended ({ended.data.get('state')}: {ended.data.get('reason')}) before "
            "its result was written; there is nothing to resume (labctl report reads its journal)"
        )
    if CHECKPOINT_KEY not in meta:
        raise RunDirError(
            f"{run_dir}: the run stopped before its first checkpoint (nothing was measured); "
            "start it again with labctl run"
        )
    settings = json.loads((run_dir / SETTINGS).read_text(encoding="utf-8"))
    plan, _ = compile_file(run_dir / PROTOCOL)
    if describe_conditions(plan) != {k: settings.get(k) for k in ("cell", "pressure_MPa", "temperature_C")}:
        cell = settings["cell"]  # the run was started with overrides (--pressure …): the same again
        plan, _ = compile_file(
            run_dir / PROTOCOL,
            Overrides(
                pressure_pa=settings["pressure_MPa"] * 1e6,
                temperature_k=settings["temperature_C"] + 273.15,
                material=cell["material"],
                thickness_m=cell["thickness_mm"] / 1e3,
                area_m2=cell["area_cm2"] / 1e4,
            ),
        )
    return CrashedRun(run_dir, plan, settings, Checkpoint.from_json(meta[CHECKPOINT_KEY]))


@asynccontextmanager
async def open_crashed_run(
    crashed: CrashedRun, *, simulate: bool, station_config: StationConfig | None
) -> AsyncIterator[RunContext]:
    """Reconnect a crashed run's station, safe first, and reopen its journal to append to it.

    A simulated run gets its bench back as it was at the checkpoint (cell, random streams, clock).
    A real station is made safe before anything else (a crashed run left the source on) and must be
    the instrument the run used.
    """
    settings, run_dir = crashed.settings, crashed.run_dir
    if settings.get("simulated") and not simulate:
        raise ConfigError(f"{run_dir} is a simulated run: resume it with --sim")
    if simulate and not settings.get("simulated"):
        raise ConfigError(
            f"{run_dir} ran on a real station: resume it with --station (or without, to reuse it)"
        )
    if not simulate and station_config is None:
        station_config = StationConfig.model_validate(settings["station"])
    seed = int(settings.get("seed", 1))
    station_cm: AbstractAsyncContextManager[Station]
    on_checkpoint = None
    if simulate:
        from labctl.simbench import BenchState, simulated_station

        bench = BenchState.load(run_dir, crashed.checkpoint.number)
        clock: Clock = bench.clock
        on_checkpoint = bench.save
        station_cm = simulated_station(
            crashed.plan, clock, seed, rig=settings.get("rig", "screw"), bench=bench
        )
    else:
        assert station_config is not None
        clock = RealClock()
        station_cm = connect_station(station_config, clock, crashed.plan.cell.area_m2)
    journal = Journal(run_dir / JOURNAL)
    try:
        async with station_cm as station:
            unsafe = await station.make_safe()  # before anything: the crashed run may have left it on
            if unsafe:
                raise ConfigError(f"cannot make the station safe to resume: {'; '.join(unsafe)}; check it")
            identity = getattr(station.potentiostat, "identity", "")
            if not simulate and settings.get("instrument") and identity != settings["instrument"]:
                raise ConfigError(
                    f"the potentiostat is {identity!r} but the run used {settings['instrument']!r}; "
                    "connect the run's instrument (the cell is on it) and resume again"
                )
            resumes = journal.meta().get("resumes", [])
            resumes.append({"t_ns": clock.time_ns(), "checkpoint": crashed.checkpoint.number})
            journal.set_meta("resumes", resumes)
            yield RunContext(
                crashed.plan,
                run_dir,
                journal,
                station,
                clock,
                settings,
                seed,
                simulate,
                clock.monotonic(),
                on_checkpoint,
            )
    finally:
        journal.close()


async def resume_protocol(
    crashed: CrashedRun,
    *,
    simulate: bool,
    station_config: StationConfig | None,
    bus: Bus,
    on_runner: Callable[[Runner], None] | None = None,
    interactive: bool = False,
) -> RunReport:
    """Continue a crashed run from its last checkpoint, in the same run directory and journal."""
    async with open_crashed_run(crashed, simulate=simulate, station_config=station_config) as run:
        runner = run.runner(bus, auto_resume=simulate and not interactive, pause_on_alarm=interactive)
        runner.restore(crashed.checkpoint)
        if on_runner is not None:
            on_runner(runner)
        outcome = await runner.run()
        return run.conclude(outcome)


def _check_station_abilities(plan: Plan, simulate: bool, station: StationConfig | None) -> None:
    """Refuse, before anything moves, a plan that needs a role the station cannot play."""
    missing = {"pressure": "a stack-pressure rig ([rig])", "temperature": "a heater ([heater])"}
    if simulate:
        missing.clear()  # the simulated bench has a screw rig and a heater
    if station is not None and station.rig is not None:
        missing.pop("pressure")
    if station is not None and station.heater is not None:
        missing.pop("temperature", None)
    for need in sorted(plan.needs & set(missing)):
        line = next(s.line for s in plan.steps if any(k.startswith(need) for k in s.setpoints))
        raise ConfigError(
            f"{plan.source}:{line}: this protocol sets the {need}, but the station has no "
            f"{missing[need]} configured; remove the 'set' steps or configure one"
        )


async def run_protocol(
    plan: Plan,
    protocol_text: str,
    *,
    simulate: bool,
    station_config: StationConfig | None,
    seed: int,
    out: Path | None,
    bus: Bus,
    clock: Clock | None = None,
    on_start: Callable[[Path], None] | None = None,
    on_runner: Callable[[Runner], None] | None = None,
    interactive: bool = False,
    rig: str = "screw",
) -> RunReport:
    """Run a compiled protocol and write its run directory.

    `interactive`: an operator can resume (a terminal): alarms pause the run instead of ending it
    and `wait` steps wait for them; otherwise simulated waits resume at once. `rig`: the simulated
    bench's stack-pressure rig, "screw" or "pneumatic".
    """
    async with open_run(
        plan,
        protocol_text,
        simulate=simulate,
        station_config=station_config,
        seed=seed,
        out=out,
        clock=clock,
        on_start=on_start,
        rig=rig,
    ) as run:
        runner = run.runner(bus, auto_resume=simulate and not interactive, pause_on_alarm=interactive)
        if on_runner is not None:
            on_runner(runner)  # e.g. the CLI wires Ctrl-C to runner.abort()
        outcome = await runner.run()
        return run.conclude(outcome)


def build_result(
    plan: Plan, journal: Journal, outcome: RunOutcome, seed: int, simulate: bool
) -> dict[str, Any]:
    """result.json: the numbers, the conditions they were measured at, and how the run ended."""
    result: dict[str, Any] = {
        "protocol": plan.name,
        "state": outcome.state.value,
        "reason": outcome.reason,
        "simulated": simulate,
        "seed": seed,
        **describe_conditions(plan),
    }
    if outcome.unsafe:
        result["unsafe"] = outcome.unsafe
    wanted = set(plan.results)
    if {"ccd", "critical_stripping_current"} & wanted:
        result.update(analyse_ccd(journal).as_dict())
    area_cm2 = plan.cell.area_m2 * 1e4
    if "polarization" in wanted and "ccd" not in wanted:
        from labctl.analysis.cycling import symmetric_cycling

        cycling = symmetric_cycling(journal, area_cm2=area_cm2)
        result["hours_to_failure"] = cycling.hours_to_failure
        result["failure"] = cycling.failure
        result["half_cycles"] = len(cycling.half_cycles)
    if {"capacity_per_cycle", "coulombic_efficiency", "retention"} & wanted:
        from labctl.analysis.cycling import full_cell_cycles

        mass_mg = None if plan.cell.active_mass_kg is None else plan.cell.active_mass_kg * 1e6
        cycles = full_cell_cycles(journal, area_cm2=area_cm2, active_mass_mg=mass_mg)
        result["cycles"] = [
            {
                key: getattr(c, key)
                for key in (
                    "number",
                    "charge_mah",
                    "discharge_mah",
                    "discharge_mah_cm2",
                    "discharge_mah_g",
                    "coulombic_efficiency",
                    "retention",
                    "mean_charge_v",
                    "mean_discharge_v",
                    "complete",
                )
            }
            for c in cycles
        ]
    if "ccd_per_cell" in wanted:
        result["ccd_per_cell"] = [cell.as_dict() for cell in ccd_per_cell(journal)]
    if "time_to_short" in wanted:
        result["short_watch"] = short_watch(journal).as_dict()
    if {"impedance", "r_int_over_time", "r_int_per_pressure"} & wanted:
        from labctl.analysis.cycling import impedance_series

        series = impedance_series(journal)
        result["impedance"] = [
            {
                "t_h": p.t_h,
                "pressure_MPa": p.pressure_mpa,
                **(p.fit.as_dict(area_cm2) if p.fit else {"error": p.error}),
            }
            for p in series.points
        ]
        result["interphase_growth"] = series.growth
    return result


def run_blocking(coro: Any) -> Any:
    """Run a coroutine on a fresh event loop (the CLI's entry into asyncio)."""
    return asyncio.run(coro)
