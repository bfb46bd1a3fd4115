"""What the CLI shows: the plan summary, the live progress line, and the end-of-run summary."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any, TextIO

from labctl import units
from labctl.data import Event, EventKind, Status
from labctl.protocol.plan import Plan

REFRESH_S = 0.2


def duration(seconds: float) -> str:
    """8130 → '2 h 15 min'."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    if seconds < 86400 * 2:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"
    return f"{seconds / 86400:.1f} d"


def estimated_duration(plan: Plan) -> float:
    """Duration if every step runs to its time or capacity end (no watch fires)."""
    total = 0.0
    for step in plan.steps:
        candidates = [e.value for e in step.ends if e.condition == "time"]
        candidates += [
            e.value / abs(step.current_a) for e in step.ends if e.condition == "charge" and step.current_a
        ]
        total += min(candidates) if candidates else 0.0
    return total


def describe_cell(plan: Plan) -> str:
    """'full NMC811 | Li6PS5Cl | Li-In, 0.785 cm², 0.5 mm' or 'symmetric Li | Li6PS5Cl | Li, …'."""
    cell = plan.cell
    stack = (
        f"{cell.cathode} | {cell.material} | {cell.anode}"
        if cell.kind == "full"
        else f"Li | {cell.material} | Li"
    )
    text = f"{cell.kind} {stack}, {cell.area_m2 * 1e4:.4g} cm², {cell.thickness_m * 1e3:.4g} mm"
    if cell.loading_kg_m2 is not None:
        text += f", {cell.loading_kg_m2 * 100:.4g} mg/cm² active"
    return text


def plan_summary(plan: Plan) -> str:
    """`labctl validate` output: what will happen, checked against the safety limits (a dry run)."""
    currents = [abs(s.current_a) for s in plan.steps]
    densities = [abs(s.density_a_m2) for s in plan.steps if s.density_a_m2]
    lines = [
        f"{plan.source}: OK — protocol '{plan.name}'",
        f"  cell        {describe_cell(plan)}",
        f"  conditions  {plan.pressure_pa / 1e6:.4g} MPa, "
        f"{units.kelvin_to_celsius(plan.temperature_k):.4g} °C",
        f"  steps       {len(plan.steps)} (loops unrolled); "
        f"{duration(estimated_duration(plan))} in time/capacity steps, plus voltage/current-ended ones",
        f"  current     up to {max(currents) * 1e3:.4g} mA"
        + (f" ({units.to_ma_per_cm2(max(densities)):.4g} mA/cm²)" if densities else ""),
        f"  safety      {plan.voltage_min_v:g}..{plan.voltage_max_v:g} V (instrument compliance "
        f"{plan.compliance_v:g} V)"
        + (f", |I| ≤ {plan.current_max_a * 1e3:g} mA" if plan.current_max_a else ""),
        f"  record      sample every {plan.record.sample_s:g} s; keep every {plan.record.every_s:g} s "
        f"or ΔV {plan.record.dv_v * 1e3:g} mV",
    ]
    for watch in plan.watches:
        lines.append(f"  watch       {watch.name}: {watch.type} → {watch.action.describe()}")
    return "\n".join(lines)


class ProgressLine:
    """A live status line on stderr, refreshed a few times a second of wall time.

    On a terminal the line rewrites itself; in a log (no TTY) it prints one line per new current
    density or loop level instead. Detector and limit events are printed as they happen.
    """

    def __init__(self, plan: Plan, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.plan = plan
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._status: Status | None = None
        self._task: asyncio.Task[None] | None = None
        self._wall0 = time.monotonic()
        self._last_level: Any = None
        self._width = 0

    def announce(self, run_dir: Any) -> None:
        """Say where the run is written, before it starts."""
        if self.enabled:
            print(f"labctl: running '{self.plan.name}' → {run_dir}", file=self.stream)

    def start(self) -> None:
        """Start refreshing (terminal only)."""
        self._wall0 = time.monotonic()
        if self.enabled and self.tty:
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def stop(self) -> None:
        """Stop refreshing and clear the line."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._clear()

    def on_record(self, record: object) -> None:
        """Bus listener."""
        if not self.enabled:
            return
        if isinstance(record, Status):
            self._status = record
            level = record.context.get("j", record.context.get("cycle"))
            if not self.tty and level != self._last_level:
                self._last_level = level
                print(self._text(), file=self.stream)
        elif isinstance(record, Event) and record.kind in (
            EventKind.DETECTOR,
            EventKind.LIMIT,
            EventKind.ALARM,
            EventKind.SOFT_SHORT,
            EventKind.INSTRUMENT,
        ):
            self._clear()
            print(f"  ⚠ {record.kind.value}: {record.data.get('message', '')}", file=self.stream)

    async def _refresh(self) -> None:
        while True:
            if self._status is not None:
                text = self._text()
                self._width = max(self._width, len(text))
                self.stream.write("\r" + text.ljust(self._width))
                self.stream.flush()
            await asyncio.sleep(REFRESH_S)

    def _clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

    def _text(self) -> str:
        status = self._status
        assert status is not None
        voltage = status.values.get("voltage_v")
        current = status.values.get("current_a")
        shown = f"{voltage * 1e3:+8.3f} mV" if voltage is not None else "    — mV"
        if current is not None:
            shown += f" {units.to_ma_per_cm2(current / self.plan.cell.area_m2):+.3f} mA/cm²"
        return (
            f"step {status.step + 1}/{len(self.plan.steps)} {status.step_description:<32} {shown}"
            f" | t {duration(status.elapsed_s)} | wall {time.monotonic() - self._wall0:.1f} s"
        )


def final_summary(plan: Plan, report: Any) -> str:
    """The one-screen summary printed when a run ends."""
    result = report.result
    lines = [
        "",
        f"Run {report.outcome.state.value}: {report.outcome.reason}",
        f"  protocol     {plan.name}",
        f"  cell         {result['cell']['material']}, {result['cell']['thickness_mm']:g} mm, "
        f"{result['cell']['area_cm2']:g} cm² at {result['pressure_MPa']:g} MPa, "
        f"{result['temperature_C']:g} °C",
        f"  test time    {duration(report.simulated_s)}" + (" (simulated)" if result["simulated"] else ""),
        f"  samples      {report.samples} journaled",
    ]
    if "ccd_mA_cm2" in result:
        ccd = result["ccd_mA_cm2"]
        short = result["short_at_mA_cm2"]
        if ccd is None:
            lines.append("  CCD          none (no current density level was completed)")
        elif short is None:
            lines.append(
                f"  CCD          ≥ {ccd:g} mA/cm² (no short up to the end of the ramp; raise its 'to:')"
            )
        else:
            lines.append(f"  CCD          {ccd:g} mA/cm²")
        if short is not None:
            lines.append(f"  shorted at   {short:g} mA/cm² after {duration(result['short_time_s'] or 0)}")
        critical = result["critical_stripping_current_mA_cm2"]
        lines.append(
            f"  critical stripping current  {critical:g} mA/cm²"
            if critical is not None
            else "  critical stripping current  not reached"
        )
    if "hours_to_failure" in result:
        hours = result["hours_to_failure"]
        lines.append(
            f"  failure      {result['failure']} after {hours:.1f} h"
            if hours is not None
            else f"  failure      none in {result['half_cycles']} half-cycles"
        )
    cycles = result.get("cycles") or []
    if cycles:
        first, last = cycles[0], cycles[-1]
        unit = "mAh/g" if last.get("discharge_mah_g") is not None else "mAh"
        value = last.get("discharge_mah_g") if unit == "mAh/g" else last.get("discharge_mah")
        first_value = first.get("discharge_mah_g") if unit == "mAh/g" else first.get("discharge_mah")
        lines.append(
            f"  cycles       {len(cycles)}; discharge {first_value or 0:.4g} → {value or 0:.4g} {unit}"
        )
        if last.get("retention") is not None and last.get("coulombic_efficiency") is not None:
            lines.append(
                f"  last cycle   retention {last['retention']:.1%}, "
                f"Coulombic efficiency {last['coulombic_efficiency']:.2%}"
            )
    spectra = result.get("impedance") or []
    fitted = [s for s in spectra if "R_int_ohm" in s]
    if fitted:
        lines.append(
            f"  impedance    {len(spectra)} spectra; R_int {fitted[0]['R_int_ohm']:.4g} → "
            f"{fitted[-1]['R_int_ohm']:.4g} Ω"
            + (f" ({result['interphase_growth']})" if result.get("interphase_growth") else "")
        )
    if report.outcome.unsafe:
        lines.append("  ⚠ NOT CONFIRMED SAFE: " + "; ".join(report.outcome.unsafe))
    lines.append(f"  results      {report.run_dir / 'result.json'}")
    return "\n".join(lines)
