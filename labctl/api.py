"""The Python API: drive the same engine as protocol files, one step at a time, from real code.

For protocols that need decisions a file cannot express. Every call takes the protocol file's
vocabulary (a step's fields, quantities as text with units), is validated by the same compiler
and runs through the same runner, with the same safety limits, watches, journal and run
directory. Example (a CCD ramp that stops at the first short and then measures a spectrum)::

    import asyncio
    from labctl.api import Lab

    async def main() -> None:
        async with Lab(name="ccd-python", watch={"short": {"type": "short_circuit"}}) as lab:
            await lab.rest(until={"time": "1 h"})
            for step in range(1, 41):
                density = f"{0.05 * step:.2f} mA/cm^2"
                strip = await lab.current(density=density, until={"capacity": "0.1 mAh/cm^2"})
                plate = await lab.current(density=f"-{density}", until={"capacity": "0.1 mAh/cm^2"})
                if "short" in strip.fired + plate.fired:
                    print("shorted at", density)
                    break
        print(lab.report.result)

    asyncio.run(main())
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from labctl.clock import Clock
from labctl.config import StationConfig
from labctl.data import Bus
from labctl.engine import RunOutcome, RunState
from labctl.engine.runner import Runner, StepResult
from labctl.errors import LabctlError
from labctl.protocol import compile_data
from labctl.protocol.loader import SourceMap
from labctl.protocol.plan import Plan, PlanStep
from labctl.session import RunContext, RunReport, open_run

__all__ = ["Lab", "StepResult"]


class Lab:
    """One run, driven from Python.

    Args:
        name: the run's name (as a protocol's `name`).
        simulate: use the simulated bench (the default) or `station` (real instruments).
        station: the real station's configuration.
        seed: seed of the simulation.
        out: run directory (default runs/<time>-<name>/).
        clock: a clock to use (tests pass a SimulatedClock with a fixed start).
        bus: live listeners.
        header: any other protocol sections: cell, conditions, safety, record, watch, results.
    """

    def __init__(
        self,
        name: str = "python-api",
        *,
        simulate: bool = True,
        station: StationConfig | None = None,
        seed: int = 1,
        out: Path | None = None,
        clock: Clock | None = None,
        bus: Bus | None = None,
        **header: Any,
    ) -> None:
        if not simulate and station is None:
            raise LabctlError("Lab(simulate=False) needs station=StationConfig(...) naming the instruments")
        self._header = {"labctl": 1, "name": name, **header}
        self._simulate = simulate
        self._station = station
        self._seed = seed
        self._out = out
        self._clock = clock
        self.bus = bus or Bus()
        self._plan: Plan = self._compile([{"mark": {"note": "python api"}}])
        self._run_cm: Any = None
        self._run: RunContext | None = None
        self._runner: Runner | None = None
        self._index = 0
        self._outcome = RunOutcome(RunState.DONE, "the Python session ended", -1)
        self.report: RunReport | None = None
        """The run's report (result.json contents) once the `async with` block has ended."""

    def _compile(self, steps: list[dict[str, Any]]) -> Plan:
        return compile_data({**self._header, "steps": steps}, SourceMap("<python>"))

    async def __aenter__(self) -> Lab:
        self._run_cm = open_run(
            self._plan,
            repr(self._header),
            simulate=self._simulate,
            station_config=self._station,
            seed=self._seed,
            out=self._out,
            clock=self._clock,
        )
        self._run = await self._run_cm.__aenter__()
        self._runner = self._run.runner(self.bus, auto_resume=self._simulate)
        await self._runner.begin()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._run is not None and self._runner is not None
        try:
            if exc_type is not None:
                self._outcome = RunOutcome(
                    RunState.FAILED, f"the Python session raised {exc_type.__name__}: {exc}", self._index - 1
                )
            await self._runner.finish(self._outcome)
            self.report = self._run.conclude(self._outcome)
        finally:
            await self._run_cm.__aexit__(exc_type, exc, tb)

    @property
    def run_dir(self) -> Path:
        """Where this run is written."""
        if self._run is None:
            raise LabctlError("the Lab is not open: use 'async with Lab(...) as lab:'")
        return self._run.run_dir

    async def step(self, kind: str, **body: Any) -> StepResult:
        """Run one step of any kind, written as in a protocol file (`kind` = rest, current, …)."""
        if self._runner is None:
            raise LabctlError("the Lab is not open: use 'async with Lab(...) as lab:'")
        if kind in ("repeat", "sweep"):
            raise LabctlError(f"'{kind}' is a loop: write the loop in Python and call the steps inside it")
        plan = self._compile([{kind: body}])
        step: PlanStep = dataclasses.replace(plan.steps[0], index=self._index)
        self._index += 1
        result = await self._runner.execute(step)
        if result.action.kind in ("stop", "alarm"):
            self._outcome = RunOutcome(
                RunState.DONE if result.action.kind == "stop" else RunState.ALARM, result.reason, step.index
            )
        return result

    async def rest(self, **body: Any) -> StepResult:
        """Open-circuit rest: `until={...}`."""
        return await self.step("rest", **body)

    async def current(self, **body: Any) -> StepResult:
        """Constant current: density=, current= or c_rate=, and until={...}."""
        return await self.step("current", **body)

    async def voltage(self, **body: Any) -> StepResult:
        """Constant voltage: value=, until={...}."""
        return await self.step("voltage", **body)

    async def cccv(self, **body: Any) -> StepResult:
        """Constant current to a voltage, then hold it: density/current/c_rate=, voltage=, until={...}."""
        return await self.step("cccv", **body)

    async def eis(self, **body: Any) -> StepResult:
        """An impedance spectrum; the points are in `result.spectrum`."""
        return await self.step("eis", **body)

    async def mark(self, note: str) -> StepResult:
        """An event marker in the journal."""
        return await self.step("mark", note=note)
