"""A simulated bench for `labctl run --sim`, wired over real links.

A cell model (symmetric Li | SE | Li, or a full cell) sits behind a simulated instrument: a
Keithley 2450 on a loopback TCP port (pyvisa-py), or — when the protocol needs impedance — an
EmStat4 speaking MethodSCRIPT on a pseudo-terminal (pyserial). The real drivers talk to them, so
simulated runs exercise the same wire protocols and transport code as the lab. This is the only
labctl module that imports simulators (besides `labctl sim serve`), as import-linter enforces.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from drivers.alicat import AlicatPressureController
from drivers.emstat import EmStat4
from drivers.eurotherm import Eurotherm3200
from drivers.keithley2450 import Keithley2450
from drivers.mark10 import Mark10Gauge
from drivers.transports.serial import SerialTransport
from drivers.transports.visa import VisaTransport
from drivers.zaber import ZaberActuator
from labctl.clock import Clock, SimulatedClock
from labctl.engine.pneumatic import PneumaticPressureLoop
from labctl.engine.pressure import StackPressureController
from labctl.engine.station import Station
from labctl.errors import ConfigError, RunDirError
from labctl.protocol.plan import Plan

ACTIVE_FRACTION = 0.7
"""Active share of a composite cathode (typical practice): the protocol states the active loading."""


def simulated_cell(plan: Plan, seed: int) -> Any:
    """The cell model the plan describes, at its stack pressure and temperature."""
    from simulators.cell import CellParameters, SymmetricCell

    cell = plan.cell
    try:
        if cell.kind == "full":
            from simulators.fullcell import FullCell, FullCellParameters

            loading_mg_cm2 = (cell.loading_kg_m2 or 0.12) * 100.0
            return FullCell(
                FullCellParameters(
                    cathode=cell.cathode or "NMC811",
                    electrolyte=cell.material,
                    anode=cell.anode,
                    area_m2=cell.area_m2,
                    separator_thickness_m=cell.thickness_m,
                    cathode_loading_mg_cm2=loading_mg_cm2 / ACTIVE_FRACTION,
                    active_fraction=ACTIVE_FRACTION,
                    pressure_pa=plan.pressure_pa,
                    temperature_k=plan.temperature_k,
                    seed=seed,
                )
            )
        return SymmetricCell(
            CellParameters(
                material=cell.material,
                area_m2=cell.area_m2,
                thickness_m=cell.thickness_m,
                pressure_pa=plan.pressure_pa,
                temperature_k=plan.temperature_k,
                seed=seed,
            )
        )
    except KeyError as exc:
        raise ConfigError(f"simulated cell: {exc.args[0]}") from None


BENCH_STATE_DIR = "simbench"
"""Where a simulated run keeps its bench's physics state (inside the run directory)."""


class BenchState:
    """The simulated bench's physics, saved at each checkpoint so `labctl resume --sim` can go on.

    Why: a resumed simulated run is only meaningful if the cell continues from where it was (its
    lithium inventory, voids, dendrites) and every random stream continues where it stopped — the
    cell model is pickled whole (`random.Random` pickles its state), the instruments' noise streams
    by their state, and the simulated clock by its time. Two slots alternate (`state-0.pkl`,
    `state-1.pkl`), each written atomically: the slot of the journal's last committed checkpoint is
    always intact, even when the crash came between a save and its journal commit.

    The stack-pressure rig and the heater are rebuilt at the protocol's conditions, not restored.

    Args:
        run_dir: the run directory.
        clock: the run's simulated clock.
    """

    def __init__(self, run_dir: Path, clock: Clock) -> None:
        self.dir = run_dir / BENCH_STATE_DIR
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.clock = clock
        self.holder: Any = None
        self.rngs: dict[str, random.Random] = {}
        self.restored: dict[str, Any] | None = None

    def save(self, number: int) -> None:
        """Save the physics as of checkpoint `number` (the runner calls this before committing it)."""
        now = self.clock.monotonic()
        state = {
            "number": number,
            "clock_s": now,
            "start_ns": self.clock.time_ns() - round(now * 1e9),
            "cell": None if self.holder is None else self.holder.cell,
            "cells": 1 if self.holder is None else self.holder.cells,
            "rngs": {name: rng.getstate() for name, rng in self.rngs.items()},
        }
        path = self.dir / f"state-{number % 2}.pkl"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)

    @classmethod
    def load(cls, run_dir: Path, number: int) -> BenchState:
        """The bench state of checkpoint `number`, with a simulated clock at its time."""
        for slot in (number % 2, 1 - number % 2):
            path = run_dir / BENCH_STATE_DIR / f"state-{slot}.pkl"
            if not path.is_file():
                continue
            # The run directory's own file (0700), written by labctl: trusted like the journal.
            state = pickle.loads(path.read_bytes())
            if state.get("number") == number:
                clock = SimulatedClock(start_ns=state["start_ns"])
                # SimulatedClock has no public way to start elsewhere than 0: set its time here,
                # before anything reads it (the simulators take their time origin at construction).
                clock._now = state["clock_s"]
                bench = cls(run_dir, clock)
                bench.restored = state
                return bench
        raise RunDirError(
            f"{run_dir}: no simulated bench state for checkpoint {number} in {BENCH_STATE_DIR}/; "
            "this simulated run cannot be resumed (start it again with labctl run --sim)"
        )

    def adopt(self, label: str, simulator: Any) -> None:
        """Track an instrument simulator's random streams (restored to their saved state on resume)."""
        for owner in (simulator, getattr(simulator, "hardware", None)):
            for name, value in (vars(owner) if owner is not None else {}).items():
                if isinstance(value, random.Random):
                    key = f"{label}.{name}"
                    self.rngs[key] = value
                    if self.restored is not None and key in self.restored["rngs"]:
                        value.setstate(self.restored["rngs"][key])


@asynccontextmanager
async def simulated_station(
    plan: Plan, clock: Clock, seed: int, rig: str = "screw", bench: BenchState | None = None
) -> AsyncIterator[Station]:
    """A station whose potentiostat is a simulated instrument wired to a simulated cell.

    Args:
        plan: gives the cell (kind, material, area, thickness …), the conditions (pressure,
            temperature) and what the station must do (impedance → EmStat4, else Keithley 2450).
        clock: the simulators read the same clock as the engine, so their physics runs in step.
        seed: seeds every random process (noise, dendrite nucleation): same seed, same run.
        rig: the stack-pressure rig, when the plan sets the pressure: "screw" (Mark-10 + Zaber,
            the loop in labctl) or "pneumatic" (a cylinder under an Alicat, the loop in the device).
        bench: saves the physics at each checkpoint; when it was loaded from a run directory, the
            cell and the random streams continue from it (`labctl resume --sim`).
    """
    if rig not in RIGS:
        raise ConfigError(f"simulated rig {rig!r}: choose one of {', '.join(RIGS)}")
    from simulators.base import CellHolder

    # The fixture: a protocol that asks for a new cell gets the next pellet (seed + n) in it.
    restored = bench.restored if bench is not None else None
    first = restored["cell"] if restored is not None else simulated_cell(plan, seed)
    cell = CellHolder(first, lambda n: simulated_cell(plan, seed + n))
    if restored is not None:
        object.__setattr__(cell, "cells", restored["cells"])  # the next new cell gets the next seed
    if bench is not None:
        bench.holder = cell
    potentiostat = _emstat4 if "eis" in plan.needs else _keithley2450
    async with contextlib.AsyncExitStack() as stack:
        station = await stack.enter_async_context(potentiostat(cell, clock, seed, bench))
        station.replace_cell = cell.replace
        if "temperature" in plan.needs:
            station.thermostat = await stack.enter_async_context(_heater(cell, plan, clock))
        if "pressure" in plan.needs:
            station.pressure = await stack.enter_async_context(RIGS[rig](cell, plan, clock, seed))
        yield station


@asynccontextmanager
async def _heater(cell: Any, plan: Plan, clock: Clock) -> AsyncIterator[Eurotherm3200]:
    """A hot plate under the cell: a Eurotherm 3200 simulator on a Modbus RTU pty.

    It starts at the protocol's temperature: the cell is assembled warm, as the protocol states.
    """
    from simulators.eurotherm import Eurotherm3200Simulator, EurothermRtuPtyServer, ThermalPlant

    start_c = plan.temperature_k - 273.15
    simulator = Eurotherm3200Simulator(
        clock.monotonic, plant=ThermalPlant(temperature_c=start_c), cell=cell, setpoint_c=start_c
    )
    async with EurothermRtuPtyServer(simulator) as port, Eurotherm3200(port.path) as heater:
        await heater.set_temperature(plan.temperature_k)
        yield heater


@asynccontextmanager
async def _screw_rig(
    cell: Any, plan: Plan, clock: Clock, seed: int
) -> AsyncIterator[StackPressureController]:
    """A screw rig on the cell: stack mechanics, a Mark-10 gauge and a Zaber actuator on ptys.

    The cell is assembled as a lab would: the screw is homed, brought near contact and the loop
    settles at the protocol's stack pressure before anything else happens.
    """
    from simulators.mark10 import Mark10PtyServer, Mark10Simulator
    from simulators.mechanics import StackMechanics
    from simulators.zaber import ZaberPtyServer, ZaberSimulator

    stack = StackMechanics(
        area_m2=plan.cell.area_m2,
        cell=cell,
        temperature_k=plan.temperature_k,
        # a full cell breathes (cathode strain, Li moved): at a fixed gap that changes the force
        thickness_change_m=lambda: cell.thickness_change_m() if hasattr(cell, "thickness_change_m") else 0.0,
    )
    async with (
        Mark10PtyServer(Mark10Simulator(stack, clock.monotonic, seed=seed)) as gauge_port,
        ZaberPtyServer(ZaberSimulator(stack, clock.monotonic)) as zaber_port,
        Mark10Gauge(Mark10Gauge.transport_for(gauge_port.path)) as gauge,
        ZaberActuator(ZaberActuator.transport_for(zaber_port.path)) as actuator,
    ):
        await actuator.home()
        while await actuator.is_moving():
            await clock.sleep(0.5)
        await actuator.move_to(stack.x_contact_m - 50e-6)
        while await actuator.is_moving():
            await clock.sleep(0.5)
        controller = StackPressureController(gauge, actuator, plan.cell.area_m2, clock)
        await controller.settle(plan.pressure_pa, rate_below=0.01e6 / 60, hold_s=60, timeout_s=3600)
        yield controller


PISTON_AREA_M2 = 50e-4
"""Piston of the simulated pneumatic cylinder (80 mm bore): 25 MPa on 0.785 cm² needs 57 psi of gas."""


@asynccontextmanager
async def _pneumatic_rig(
    cell: Any, plan: Plan, clock: Clock, seed: int
) -> AsyncIterator[PneumaticPressureLoop]:
    """A pneumatic rig on the cell: a cylinder under an Alicat PC (150 psi full scale) on a pty.

    The cylinder's force sets the cell's stack pressure; the driver talks to the simulator over the
    pty. As with the screw rig, the loop settles at the protocol's stack pressure before anything
    else happens. (No noise in this model, so `seed` is unused.)
    """
    from simulators.alicat import AlicatPtyServer, AlicatSimulator, PneumaticCylinder

    cylinder = PneumaticCylinder(full_scale=150.0, piston_area_m2=PISTON_AREA_M2)
    simulator = AlicatSimulator(clock.monotonic, cylinder=cylinder, cell=cell, cell_area_m2=plan.cell.area_m2)
    async with AlicatPtyServer(simulator) as port:
        transport = SerialTransport(port.path, baudrate=19200, eol=b"\r", timeout_s=10.0)
        async with AlicatPressureController(transport, piston_area_m2=PISTON_AREA_M2) as controller:
            loop = PneumaticPressureLoop(controller, PISTON_AREA_M2, plan.cell.area_m2, clock)
            await loop.settle(plan.pressure_pa, rate_below=0.01e6 / 60, hold_s=60, timeout_s=3600)
            yield loop


RIGS = {"screw": _screw_rig, "pneumatic": _pneumatic_rig}
"""The simulated stack-pressure rigs, by the name `--rig` takes."""


@asynccontextmanager
async def _keithley2450(
    cell: Any, clock: Clock, seed: int, bench: BenchState | None
) -> AsyncIterator[Station]:
    from simulators.keithley2450 import Keithley2450Server, Keithley2450Simulator

    simulator = Keithley2450Simulator(cell, time_source=clock.monotonic, seed=seed)
    if bench is not None:
        bench.adopt("potentiostat", simulator)
    server = Keithley2450Server(simulator)
    port = await server.start(host="127.0.0.1", port=0)
    try:
        transport = VisaTransport(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_s=10.0)
        async with Keithley2450(transport, time_source=clock.monotonic) as smu:
            yield Station("sim-1", smu)
    finally:
        await server.aclose()


@asynccontextmanager
async def _emstat4(cell: Any, clock: Clock, seed: int, bench: BenchState | None) -> AsyncIterator[Station]:
    from simulators.emstat import EmStat4PtyServer, EmStat4Simulator

    simulator = EmStat4Simulator(cell, clock.monotonic, seed=seed)
    if bench is not None:
        bench.adopt("potentiostat", simulator)
    # A short poll: the driver waits (wall time) for readings already due in simulated time.
    server = EmStat4PtyServer(simulator, poll_interval_s=0.001)
    path = await server.start()
    try:
        transport = SerialTransport(path, timeout_s=10.0)
        async with EmStat4(transport, time_source=clock.monotonic, sleep=clock.sleep, timeout_s=10.0) as pot:
            yield Station("sim-1", pot)
    finally:
        await server.aclose()
