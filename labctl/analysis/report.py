"""A run's report: figures and a Markdown summary written into `RUN_DIR/report/`.

The report is rebuilt from the run directory alone (journal, settings.json, result.json), so any
run can be reported again after the fact, including one that was aborted or that crashed before
writing its result. It states every test condition next to the numbers (DOMAIN.md §5: the papers'
own tables often lack them), the key results with their uncertainties, what went wrong during
the run, and embeds the figures that apply to it:

| figure | when |
|---|---|
| voltage_current.png | the run journaled samples |
| polarization.png | a symmetric cell passed current |
| capacity.png | a full cell completed charge or discharge steps |
| nyquist.png, bode.png | the run measured impedance |
| impedance_trend.png | more than one spectrum |
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from labctl import units
from labctl.analysis.ccd import CellCcd, analyse_ccd, ccd_per_cell
from labctl.analysis.cycling import (
    CycleMetrics,
    ImpedanceSeries,
    SymmetricCycling,
    full_cell_cycles,
    impedance_series,
    symmetric_cycling,
)
from labctl.analysis.plots import (
    Marker,
    conditions_title,
    plot_bode,
    plot_capacity,
    plot_ccd_per_cell,
    plot_impedance_trend,
    plot_nyquist,
    plot_polarization,
    plot_pressure,
    plot_voltage_current,
)
from labctl.analysis.shorts import ShortWatch, short_watch
from labctl.data import Event, EventKind, Journal
from labctl.data.export import CURRENT_KINDS, StepExecution, run_start_ns, step_executions
from labctl.data.rundir import JOURNAL, PROTOCOL, RESULT, SETTINGS
from labctl.errors import RunDirError

REPORT_DIR = "report"
SUMMARY = "summary.md"

_MAX_EVENT_LINES = 40
_MAX_CYCLE_ROWS = 30


@dataclass
class _Run:
    """Everything the report needs, read once from the run directory."""

    run_dir: Path
    settings: dict[str, Any]
    result: dict[str, Any]
    events: list[Event]
    start_ns: int | None
    executions: list[StepExecution]
    eis_points: int
    ccd: dict[str, Any] | None = None
    symmetric: SymmetricCycling | None = None
    cycles: list[CycleMetrics] = field(default_factory=list)
    impedance: ImpedanceSeries | None = None
    ccd_cells: list[CellCcd] = field(default_factory=list)
    short_watch: ShortWatch | None = None

    @property
    def cell(self) -> dict[str, Any]:
        return self.settings.get("cell") or {}

    @property
    def area_cm2(self) -> float | None:
        area = self.cell.get("area_cm2")
        return float(area) if area else None

    @property
    def full_cell(self) -> bool:
        return self.cell.get("kind") == "full"

    @property
    def active_mass_mg(self) -> float | None:
        mass = self.cell.get("active_mass_mg")
        if mass:
            return float(mass)
        loading = self.cell.get("loading_mg_cm2")
        return float(loading) * self.area_cm2 if loading and self.area_cm2 else None

    def hours(self, t_ns: int) -> float:
        return (t_ns - (self.start_ns or t_ns)) / 3.6e12


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/report/` (PNG figures and summary.md) and return the summary's path.

    Args:
        run_dir: a run directory as written by `labctl run` (finished, aborted or interrupted).

    Returns:
        The path of `report/summary.md`; the figures sit beside it and it links them relatively.

    Raises:
        RunDirError: `run_dir` is not a run directory (no journal), or its journal is unreadable.
    """
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL).is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory (no {JOURNAL}); give the directory `labctl run` wrote"
        )
    try:
        run = _read(run_dir)
    except sqlite3.DatabaseError as exc:
        raise RunDirError(f"{run_dir / JOURNAL} cannot be read as a labctl journal ({exc})") from None
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    figures = _figures(run, out)
    summary = out / SUMMARY
    summary.write_text(_markdown(run, figures), encoding="utf-8")
    return summary


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read(run_dir: Path) -> _Run:
    journal = Journal(run_dir / JOURNAL)
    try:
        settings = _load_json(run_dir / SETTINGS) or journal.meta()
        events = list(journal.events())
        run = _Run(
            run_dir=run_dir,
            settings=settings,
            result=_load_json(run_dir / RESULT),
            events=events,
            start_ns=run_start_ns(journal, events),
            executions=step_executions(journal, events),
            eis_points=sum(1 for _ in journal.samples("eis")),
        )
        passes_current = any(e.kind in CURRENT_KINDS and e.direction for e in run.executions)
        if run.full_cell:
            run.cycles = full_cell_cycles(journal, area_cm2=run.area_cm2, active_mass_mg=run.active_mass_mg)
        elif passes_current:
            asked = _protocol_results(run_dir) or []
            if "time_to_short" in asked:  # the current steps are resistance probes, not cycling
                run.short_watch = short_watch(journal)
            else:
                run.symmetric = symmetric_cycling(journal, area_cm2=run.area_cm2)
            if "ccd_per_cell" in asked:  # one CCD per cell: a run-wide CCD would mix the cells
                run.ccd_cells = ccd_per_cell(journal)
            elif run.symmetric is not None:
                run.ccd = _ccd(run, journal)
        if run.eis_points:
            run.impedance = impedance_series(journal)
    finally:
        journal.close()
    return run


def _ccd(run: _Run, journal: Journal) -> dict[str, Any] | None:
    """CCD numbers when the run is a CCD test: result.json's when it has them, else recomputed.

    A CCD test is one whose protocol asks for `ccd` in its results or, without the protocol file,
    one whose current density changes between half-cycles. Constant-current cycling is not, whatever
    result.json holds: its report is hours to failure and the polarization trend, not a "CCD ≥ j"
    that nobody measured.
    """
    assert run.symmetric is not None
    asked = _protocol_results(run.run_dir)
    densities = {h.density_ma_cm2 for h in run.symmetric.half_cycles if not math.isnan(h.density_ma_cm2)}
    is_ccd = "ccd" in asked if asked is not None else len(densities) >= 2
    if not is_ccd:
        return None
    if "ccd_mA_cm2" in run.result:
        return run.result
    return analyse_ccd(journal).as_dict()


def _protocol_results(run_dir: Path) -> list[str] | None:
    """The `results:` the run's protocol.yaml asked for (None if the file is missing or unreadable)."""
    try:
        document = yaml.safe_load((run_dir / PROTOCOL).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    results = document.get("results") if isinstance(document, dict) else None
    return [str(r) for r in results] if isinstance(results, list) else None


# --- figures -------------------------------------------------------------------------------------


def _figures(run: _Run, out: Path) -> list[tuple[str, Path]]:
    """Draw the figures that apply to this run; (caption, path) in report order."""
    title = conditions_title(run.settings)
    figures: list[tuple[str, Path]] = []
    samples = [s for e in run.executions for s in e.samples if "voltage_v" in s.values]
    samples.sort(key=lambda s: s.t_ns)
    if samples:
        short, critical_t = _short_marker(run), _critical_stripping_time(run)
        path = plot_voltage_current(
            out / "voltage_current.png",
            t_h=[run.hours(s.t_ns) for s in samples],
            voltage_v=[s.values["voltage_v"] for s in samples],
            current_a=[s.values.get("current_a", 0.0) for s in samples],
            area_cm2=run.area_cm2,
            title=title,
            short=short,
            soft_shorts=[run.hours(e.t_ns) for e in run.events if e.kind is EventKind.SOFT_SHORT],
            critical_stripping_ma_cm2=(run.ccd or {}).get("critical_stripping_current_mA_cm2"),
            critical_stripping_t_h=critical_t,
            limits=[
                Marker(run.hours(e.t_ns), "safety limit") for e in run.events if e.kind is EventKind.LIMIT
            ],
            stopped=_stopped_marker(run),
            positive_means="charges" if run.full_cell else "strips the WE",
        )
        figures.append(("Voltage and current density against time", path))
        pressures = [s.values.get("pressure_pa", 0.0) for s in samples]
        if max(pressures) > min(pressures) > 0:  # measured by a rig (noisy), not a stated condition
            figures.append(
                (
                    "Stack pressure against time",
                    plot_pressure(
                        out / "pressure.png",
                        t_h=[run.hours(s.t_ns) for s in samples],
                        pressure_pa=pressures,
                        voltage_v=[s.values["voltage_v"] for s in samples],
                        title=title,
                    ),
                )
            )
    if run.ccd_cells:
        varied = _varied_condition(run.ccd_cells)
        if varied is not None:
            label, xlabel, values = varied
            path = plot_ccd_per_cell(
                out / "ccd_per_cell.png", condition=values, xlabel=xlabel, cells=run.ccd_cells, title=title
            )
            figures.append((f"CCD against {label}, one cell per level", path))
    if run.symmetric is not None and run.symmetric.half_cycles and not run.ccd_cells:
        failure = None
        if run.symmetric.failure and run.symmetric.hours_to_failure is not None:
            t_fail = run.symmetric.hours_to_failure + run.symmetric.half_cycles[0].t_start_h
            failure = Marker(t_fail, run.symmetric.failure)
        path = plot_polarization(
            out / "polarization.png", half_cycles=run.symmetric.half_cycles, title=title, failure=failure
        )
        figures.append(("Polarization per half-cycle (stripping and plating of the working electrode)", path))
    if run.cycles:
        figures.append(
            (
                "Capacity and Coulombic efficiency per cycle",
                plot_capacity(out / "capacity.png", cycles=run.cycles, title=title),
            )
        )
    if run.impedance is not None and run.impedance.points:
        points = run.impedance.points
        spectra = [p.spectrum for p in points]
        fits = [p.fit for p in points]
        times = [p.t_h for p in points]
        figures.append(
            (
                "Nyquist plot with the equivalent-circuit fit",
                plot_nyquist(
                    out / "nyquist.png",
                    spectra=spectra,
                    fits=fits,
                    title=title,
                    area_cm2=run.area_cm2,
                    times_h=times,
                ),
            )
        )
        figures.append(
            ("Bode plot", plot_bode(out / "bode.png", spectra=spectra, fits=fits, title=title, times_h=times))
        )
        if len(points) > 1:
            figures.append(
                (
                    "R_int and R_bulk over time"
                    + (" and against stack pressure" if run.impedance.pressures_differ else ""),
                    plot_impedance_trend(
                        out / "impedance_trend.png",
                        points=points,
                        title=title,
                        area_cm2=run.area_cm2,
                        by_pressure=run.impedance.pressures_differ,
                    ),
                )
            )
    return figures


def _varied_condition(cells: list[CellCcd]) -> tuple[str, str, list[float]] | None:
    """Which condition the campaign varied: (name, axis label, values), stack pressure first."""
    pressures = [c.pressure_pa / 1e6 if c.pressure_pa is not None else math.nan for c in cells]
    temperatures = [c.temperature_k - 273.15 if c.temperature_k is not None else math.nan for c in cells]
    if max(pressures) > 1.05 * min(pressures):
        return "stack pressure", "stack pressure / MPa", pressures
    if max(temperatures) > min(temperatures) + 2.0:
        return "temperature", "temperature / °C", temperatures
    return "cell", "cell", [float(c.cell) for c in cells]


def _short_marker(run: _Run) -> Marker | None:
    for event in run.events:
        if event.kind is EventKind.DETECTOR and event.data.get("type") == "short_circuit":
            density = event.data.get("density_a_m2")
            where = f" at {abs(units.to_ma_per_cm2(density)):g} mA/cm²" if density else ""
            t_h = run.hours(int(event.data.get("t_ns", event.t_ns)))
            return Marker(t_h, f"short{where} ({t_h:.3g} h)")
    return None


def _stopped_marker(run: _Run) -> Marker | None:
    """Where a run that did not end normally (aborted, alarm, failed) stopped."""
    ended = next((e for e in reversed(run.events) if e.kind is EventKind.RUN_ENDED), None)
    if ended is None or ended.data.get("state") in (None, "done"):
        return None
    reason = str(ended.data.get("reason", ""))
    reason = reason if len(reason) <= 40 else reason[:39] + "…"
    return Marker(run.hours(ended.t_ns), f"{ended.data['state']}: {reason}")


def _critical_stripping_time(run: _Run) -> float | None:
    for event in run.events:
        if event.kind is EventKind.DETECTOR and event.data.get("type") == "stripping_polarization":
            return run.hours(int(event.data.get("t_ns", event.t_ns)))
    return None


# --- summary.md ----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    """A number to `digits` significant digits; an en dash for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def _pct(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:.2f}"


def _pm(value: float, sigma: float, scale: float = 1.0) -> str:
    """Value ± σ, σ to two significant digits and the value to the same decimal place."""
    value, sigma = value * scale, sigma * scale
    if not math.isfinite(sigma):
        return f"{value:.4g} ± ∞"
    if sigma <= 0:
        return f"{value:.4g}"
    decimals = max(0, 1 - math.floor(math.log10(sigma)))
    most = max(0, 4 - math.floor(math.log10(abs(value)))) if value else decimals  # 5 significant digits
    if decimals > most:  # σ below the last digit worth printing (noise-free or synthetic data)
        return f"{value:.{most}f} ± <{10.0**-most:g}"
    return f"{value:.{decimals}f} ± {sigma:.{decimals}f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table; pipes inside cells ("Li | SE | Li", "|V/I|") are escaped."""

    def line(cells: list[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows), ""]


def _markdown(run: _Run, figures: list[tuple[str, Path]]) -> str:
    protocol = run.settings.get("protocol") or run.result.get("protocol") or run.run_dir.name
    lines = [f"# {protocol}: run report", ""]
    lines += [f"Run directory `{run.run_dir.name}` · {conditions_title(run.settings)}", ""]
    lines += _outcome(run)
    lines += _conditions(run)
    lines += _results(run)
    lines += _event_log(run)
    if figures:
        lines += ["## Figures", ""]
        for caption, path in figures:
            lines += [f"### {caption}", "", f"![{caption}]({path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _outcome(run: _Run) -> list[str]:
    ended = next((e for e in reversed(run.events) if e.kind is EventKind.RUN_ENDED), None)
    if ended is not None:
        state, reason = ended.data.get("state", "?"), ended.data.get("reason", "")
    elif run.result.get("state"):
        state, reason = run.result["state"], run.result.get("reason", "")
    else:
        state, reason = "interrupted", "the journal has no run_ended event: the run did not finish cleanly"
    return [f"**Outcome: {state}** — {reason}", ""]


def _conditions(run: _Run) -> list[str]:
    s, cell = run.settings, run.cell
    rows: list[list[Any]] = [["Protocol", f"{s.get('protocol', '–')} (`{s.get('source', '–')}`)"]]
    kind = cell.get("kind", "–")
    rows.append(["Cell", f"{kind}" + (", Li | SE | Li" if kind == "symmetric" else "")])
    rows.append(["Solid electrolyte", cell.get("material", "–")])
    if run.full_cell or cell.get("cathode"):
        rows.append(["Cathode", cell.get("cathode", "–")])
        mass = run.active_mass_mg
        rows.append(["Active mass", f"{_num(mass)} mg" if mass else "not given (mAh/g unavailable)"])
        if cell.get("loading_mg_cm2"):
            rows.append(["Loading", f"{_num(cell['loading_mg_cm2'])} mg/cm²"])
    if cell.get("anode") or run.full_cell:
        rows.append(["Anode", cell.get("anode", "Li")])
    rows.append(["Area", f"{_num(run.area_cm2)} cm²" if run.area_cm2 else "–"])
    rows.append(["Separator thickness", f"{_num(cell.get('thickness_mm'))} mm"])
    rows.append(["Stack pressure", f"{_num(s.get('pressure_MPa'))} MPa"])
    rows.append(["Temperature", f"{_num(s.get('temperature_C'))} °C"])
    safety = s.get("safety") or {}
    window = safety.get("voltage_V")
    if window:
        limit = f"{_num(window[0])} V to {_num(window[1])} V"
        if safety.get("current_max_A"):
            limit += f"; |I| ≤ {_num(safety['current_max_A'] * 1e3)} mA"
        rows.append(["Safety cut-offs", limit])
    ends = Counter(e.reason for e in run.executions if e.reason)
    if ends:
        rows.append(["Step ends", "; ".join(f"{reason} ×{n}" for reason, n in ends.most_common(5))])
    simulated = " (simulated)" if s.get("simulated") else " (real instruments)"
    rows.append(["Seed", f"{s.get('seed', '–')}{simulated}"])
    rows.append(["Instrument", s.get("instrument") or "–"])
    if run.start_ns is not None:
        started = datetime.fromtimestamp(run.start_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        rows.append(["Started", started + (" (simulated clock)" if s.get("simulated") else "")])
    last = max(
        [e.t_ns for e in run.events] + [x.samples[-1].t_ns for x in run.executions if x.samples], default=None
    )
    if last is not None and run.start_ns is not None:
        rows.append(["Test time", f"{run.hours(last):.3g} h"])
    n_dc = sum(len(e.samples) for e in run.executions)
    eis = f", {run.eis_points} impedance points" if run.eis_points else ""
    rows.append(["Samples", f"{n_dc} time-series{eis}"])
    return ["## Test conditions", "", *_table(["condition", "value"], rows)]


def _results(run: _Run) -> list[str]:
    out = ["## Key results", ""]
    rows: list[list[Any]] = []
    if run.ccd is not None:
        ccd = run.ccd
        short_at, short_t = ccd.get("short_at_mA_cm2"), ccd.get("short_time_s")
        ccd_value = ccd.get("ccd_mA_cm2")
        if ccd_value is not None:
            value = f"{_num(ccd_value)} mA/cm²"
            if short_at is None:
                value = f"≥ {value} (the run ended without a short: a lower bound)"
        elif short_at is not None:
            value = f"below the first level (shorted at {_num(short_at)} mA/cm²)"
        else:
            value = "not determined (the run ended before it completed a current level)"
        rows.append(["Critical current density (CCD)", value])
        short = "none"
        if short_at is not None:
            short = f"at {_num(short_at)} mA/cm² after {_num(short_t / 3600 if short_t else None)} h"
        rows.append(["Short circuit", short])
        critical = ccd.get("critical_stripping_current_mA_cm2")
        rows.append(["Critical stripping current", f"{_num(critical)} mA/cm²" if critical else "not reached"])
    if run.ccd_cells:
        ccds = [c.result.ccd_ma_cm2 for c in run.ccd_cells if c.result.ccd_ma_cm2 is not None]
        span = f"{_num(min(ccds))} to {_num(max(ccds))} mA/cm²" if ccds else "not determined"
        rows.append(["CCD per cell", f"{len(run.ccd_cells)} cells, {span} (table below)"])
    if run.short_watch is not None:
        rows += _short_watch_rows(run.short_watch)
    sym = run.symmetric
    if sym is not None and sym.half_cycles and not run.ccd_cells:
        if sym.failure:
            where = f"{sym.failure} at {_num(sym.failure_density_ma_cm2)} mA/cm²"
            rows.append(["Hours of cycling to failure", f"{_num(sym.hours_to_failure)} h ({where})"])
        else:
            rows.append(["Hours of cycling", f"{_num(sym.cycling_h)} h, no failure"])
        for trend in sym.trends:
            if trend.n >= 2:
                rows.append(
                    [
                        f"{trend.direction.capitalize()} polarization at {_num(trend.density_ma_cm2)} mA/cm²",
                        f"{_num(trend.first_mv)} → {_num(trend.last_mv)} mV over {trend.n} half-cycles "
                        f"({_num(trend.slope_mv_per_h, 3)} mV/h)",
                    ]
                )
    if run.cycles:
        rows += _cycle_headlines(run)
    if run.impedance is not None:
        rows += _impedance_headlines(run)
    if rows:
        out += _table(["quantity", "value"], rows)
    else:
        out += ["No current was passed and no impedance was measured: nothing to evaluate.", ""]
    if run.ccd_cells:
        out += _ccd_cell_table(run.ccd_cells)
    elif sym is not None and sym.half_cycles:
        out += _half_cycle_table(run)
    if run.cycles:
        out += _cycle_table(run)
    if run.impedance is not None and run.impedance.points:
        out += _impedance_table(run)
    return out


def _short_watch_rows(watch: ShortWatch) -> list[list[Any]]:
    held = f"at {_num(watch.hold_pressure_pa / 1e6, 3)} MPa" if watch.hold_pressure_pa else ""
    if watch.shorted:
        value = f"{_num(watch.time_to_short_s / 3600 if watch.time_to_short_s else None)} h {held}"
    else:
        value = f"none: held {_num(watch.watched_s / 3600)} h {held} without a short"
    return [["Time to short (no current)", value.strip()], ["Resistance probes", watch.probes]]


def _ccd_cell_table(cells: list[CellCcd]) -> list[str]:
    rows = []
    for c in cells:
        r = c.result
        ccd = _num(r.ccd_ma_cm2) if r.short_at_ma_cm2 is not None else f"≥ {_num(r.ccd_ma_cm2)}"
        rows.append(
            [
                c.cell,
                _num(c.pressure_pa / 1e6 if c.pressure_pa is not None else None, 3),
                _num(c.temperature_k - 273.15 if c.temperature_k is not None else None, 3),
                ccd,
                _num(r.short_at_ma_cm2),
                _num(r.short_time_s / 3600 if r.short_time_s else None, 3),
            ]
        )
    header = [
        "cell",
        "pressure / MPa",
        "temperature / °C",
        "CCD / mA cm⁻²",
        "shorted at / mA cm⁻²",
        "short after / h",
    ]
    return ["### CCD per cell", "", *_table(header, rows)]


def _half_cycle_table(run: _Run) -> list[str]:
    assert run.symmetric is not None
    levels: dict[float, dict[str, Any]] = {}
    for h in run.symmetric.half_cycles:
        level = levels.setdefault(h.density_ma_cm2, {"strip": [], "plate": [], "completed": True, "n": 0})
        if h.late_mv is not None:
            level[h.direction].append(h.late_mv)
        level["completed"] = level["completed"] and h.completed
        level["n"] += 1
    rows = [
        [
            _num(density),
            level["n"],
            _num(max(level["strip"])) if level["strip"] else "–",
            _num(max(level["plate"])) if level["plate"] else "–",
            "yes" if level["completed"] else "no",
        ]
        for density, level in levels.items()
    ]
    header = ["density / mA cm⁻²", "half-cycles", "stripping / mV (max)", "plating / mV (max)", "completed"]
    return [
        "### Polarization per current density",
        "",
        "Late polarization: median |V| over the last fifth of each half-cycle; stripping = working "
        "electrode stripping (I > 0), plating = I < 0.",
        "",
        *_table(header, rows),
    ]


def _cycle_headlines(run: _Run) -> list[list[Any]]:
    cycles = [c for c in run.cycles if c.discharge_mah is not None]
    rows: list[list[Any]] = [
        ["Cycles", f"{len(run.cycles)} ({sum(c.complete for c in run.cycles)} complete)"]
    ]
    if not cycles:
        return rows
    first, last = cycles[0], cycles[-1]
    for label, c in (("First", first), ("Last", last)):
        text = f"{_num(c.discharge_mah)} mAh"
        if c.discharge_mah_cm2 is not None:
            text += f", {_num(c.discharge_mah_cm2)} mAh/cm²"
        if run.active_mass_mg is not None:
            text += f", {_num(c.discharge_mah_g)} mAh/g"
        else:
            text += ", mAh/g unavailable (no active mass)"
        rows.append([f"{label} discharge capacity (cycle {c.number})", text])
    if last.retention is not None:
        rows.append(
            [f"Retention at cycle {last.number}", f"{100 * last.retention:.1f} % of cycle {first.number}"]
        )
    ce = [c.coulombic_efficiency for c in cycles if c.coulombic_efficiency is not None]
    if ce:
        rows.append(["Coulombic efficiency", f"first {100 * ce[0]:.2f} %, last {100 * ce[-1]:.2f} %"])
    if last.overpotential_v is not None:
        rows.append(
            ["Overpotential (V̄ch − V̄dis)/2", f"{_num(1e3 * last.overpotential_v)} mV at cycle {last.number}"]
        )
    return rows


def _cycle_table(run: _Run) -> list[str]:
    cycles = run.cycles
    if len(cycles) > _MAX_CYCLE_ROWS:  # first and last five, and every tenth between
        keep = {c.number for c in cycles[:5] + cycles[-5:]} | {c.number for c in cycles if c.number % 10 == 0}
        cycles = [c for c in cycles if c.number in keep]
    header = [
        "cycle",
        "Q_ch / mAh",
        "Q_dis / mAh",
        "Q_dis / mAh cm⁻²",
        "Q_dis / mAh g⁻¹",
        "CE / %",
        "retention / %",
        "V̄_ch / V",
        "V̄_dis / V",
        "overpotential / mV",
        "complete",
    ]
    rows = [
        [
            c.number,
            _num(c.charge_mah),
            _num(c.discharge_mah),
            _num(c.discharge_mah_cm2),
            _num(c.discharge_mah_g),
            _pct(c.coulombic_efficiency),
            _pct(c.retention),
            _num(c.mean_charge_v),
            _num(c.mean_discharge_v),
            _num(None if c.overpotential_v is None else 1e3 * c.overpotential_v),
            "yes" if c.complete else "no",
        ]
        for c in cycles
    ]
    return ["### Per cycle", "", *_table(header, rows)]


def _impedance_headlines(run: _Run) -> list[list[Any]]:
    assert run.impedance is not None
    scale, unit = (run.area_cm2, "Ω·cm²") if run.area_cm2 else (1.0, "Ω")
    good = [p for p in run.impedance.points if p.fit is not None and p.fit.acceptable]
    rows: list[list[Any]] = [
        ["Impedance spectra", f"{len(run.impedance.points)} ({len(good)} with an acceptable fit)"]
    ]
    for label, point in (("first", good[0] if good else None), ("last", good[-1] if len(good) > 1 else None)):
        if point is None or point.fit is None:
            continue
        fit, number = point.fit, point.spectrum.number
        rows.append(
            [
                f"R_bulk ({label} spectrum, #{number})",
                f"{_pm(fit.r_bulk.value, fit.r_bulk.sigma, scale)} {unit}",
            ]
        )
        if fit.r_gb is not None:
            rows.append(
                [
                    f"R_gb ({label} spectrum, #{number})",
                    f"{_pm(fit.r_gb.value, fit.r_gb.sigma, scale)} {unit}",
                ]
            )
        rows.append(
            [f"R_int ({label} spectrum, #{number})", f"{_pm(fit.r_int.value, fit.r_int.sigma, scale)} {unit}"]
        )
    if run.impedance.growth:
        rows.append(["R_int growth", run.impedance.growth])
    return rows


def _impedance_table(run: _Run) -> list[str]:
    assert run.impedance is not None
    scale, unit = (run.area_cm2, "Ω·cm²") if run.area_cm2 else (1.0, "Ω")
    rows: list[list[Any]] = []
    for p in run.impedance.points:
        head = [f"#{p.spectrum.number}", f"{p.t_h:.3g}", _num(p.pressure_mpa), _num(p.temperature_c)]
        if p.fit is None:
            rows.append([*head, "–", "–", "–", "–", "–", f"no: {p.error}"])
            continue
        fit, gb = p.fit, p.fit.r_gb
        rows.append(
            [
                *head,
                fit.model,
                _pm(fit.r_bulk.value, fit.r_bulk.sigma, scale),
                "–" if gb is None else _pm(gb.value, gb.sigma, scale),
                _pm(fit.r_int.value, fit.r_int.sigma, scale),
                f"{fit.rms_relative:.2%}",
                "yes" if fit.acceptable else "no: " + "; ".join(fit.problems),
            ]
        )
    header = ["spectrum", "time / h", "pressure / MPa", "T / °C", "model", "R_bulk", "R_gb", "R_int"]
    header += ["RMS residual", "acceptable"]
    out = [
        "### Impedance fits",
        "",
        "Circuit R_bulk + (R_gb ∥ CPE) + (R_int ∥ CPE) [+ W], modulus-weighted least squares; ±1σ from "
        f"the Jacobian; resistances in {unit}.",
        "",
        *_table(header, rows),
    ]
    notes = sorted({n for p in run.impedance.points if p.fit is not None for n in p.fit.notes})
    if notes:
        out += [*(f"Note: {n}." for n in notes), ""]
    return out


def _event_log(run: _Run) -> list[str]:
    wanted = {
        EventKind.DETECTOR,
        EventKind.SOFT_SHORT,
        EventKind.LIMIT,
        EventKind.ALARM,
        EventKind.INSTRUMENT,
        EventKind.NOTE,
        EventKind.MARK,
        EventKind.PAUSED,
        EventKind.RESUMED,
        EventKind.RUN_ENDED,
    }
    highlights = [e for e in run.events if e.kind in wanted]
    out = ["## Event log highlights", ""]
    if not highlights:
        return [*out, "No shorts, limits, alarms or notes were recorded.", ""]
    counts = Counter(e.kind.value for e in highlights if e.kind is not EventKind.RUN_ENDED)
    if counts:
        out += ["Counts: " + ", ".join(f"{kind} ×{n}" for kind, n in sorted(counts.items())), ""]
    shown = highlights
    if len(highlights) > _MAX_EVENT_LINES:
        shown = highlights[: _MAX_EVENT_LINES - 1] + highlights[-1:]
    rows = []
    for event in shown:
        t_h = run.hours(int(event.data.get("t_ns", event.t_ns)))
        kind = event.kind.value + (f" ({event.data['type']})" if event.data.get("type") else "")
        data = event.data
        message = data.get("message") or data.get("reason") or data.get("note") or data.get("text") or ""
        if event.kind is EventKind.RUN_ENDED:
            message = f"{event.data.get('state', '')}: {message}"
        rows.append([f"{t_h:.4g}", event.step, kind, message])
    out += _table(["time / h", "step", "event", "message"], rows)
    if len(highlights) > _MAX_EVENT_LINES:
        hidden = len(highlights) - len(shown)
        out += [f"({hidden} more: journal.sqlite, table events.)", ""]
    return out
