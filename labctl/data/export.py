"""Export a run's journal as tables other tools read: CSV, Parquet, or the Battery Data Format.

Two tables per run: the time series (every "dc" sample, one row each) and, when the run measured
impedance, the spectra (every "eis" sample, one row per frequency) in a separate file, because the
two have different rows and columns.

- ``csv`` / ``parquet``: labctl's own unit-suffixed column names (``voltage_v``, ``z_imag_ohm`` …),
  SI units, plus the step, its execution number, the cycle and the times. Parquet files carry
  each column's unit in the field metadata and the run's settings in the schema metadata.
- ``bdf``: the Battery Data Alliance's Battery Data Format, column labels "Quantity / unit" as
  defined by the BDF ontology v1.2.0 and its CSVW table schema (battery-data-alliance/
  battery-data-format-ontology, ``schema/schema.json``, version 1.2.0, 2026-06-11): a
  ``.bdf.csv`` time series and, with spectra, a ``.bdf.csv`` of the BDF impedance quantities.
  BDF's sign convention is labctl's: positive current charges the cell, and Im(Z) is negative for
  capacitive behaviour. Capacities follow BDF's definitions (test-scoped, never reset; step
  capacity unsigned), computed from the journaled per-step charge.

`step_executions` is also what the analysis layer uses to find steps and cycles in a journal, so
an exported "Cycle Count / 1" and a reported "cycle 3" always mean the same cycle.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from labctl.data.journal import Journal
from labctl.data.records import Event, EventKind, Sample
from labctl.data.rundir import JOURNAL, SETTINGS
from labctl.errors import RunDirError

ExportFormat = Literal["csv", "parquet", "bdf"]

BDF_VERSION = "1.2.0"
"""The BDF ontology / table-schema version whose column labels `export_run(fmt="bdf")` writes."""

CURRENT_KINDS = frozenset({"current", "voltage", "cccv"})
"""Step kinds that pass charge through the cell (the others rest, measure or wait)."""

_SERIES_FIRST = ["voltage_v", "current_a", "charge_c", "pressure_pa", "temperature_k"]
_SPECTRUM_FIRST = [
    "spectrum",
    "frequency_hz",
    "z_real_ohm",
    "z_imag_ohm",
    "z_mod_ohm",
    "z_phase_deg",
    "e_dc_v",
    "i_dc_a",
    "pressure_pa",
    "temperature_k",
]
_MIN_CHARGE_C = 1e-9
"""Below this |charge| (1 nC) a step counts as passing no charge (the instrument's offset at rest)."""


@dataclass
class StepExecution:
    """One execution of a plan step, with the samples it journaled.

    A plan step can run more than once (a `goto` loop), so executions, not plan indices, are what
    carry samples, charge and a cycle.

    Attributes:
        number: 1-based count of step executions in the run (BDF "Step Count / 1").
        step: the plan step's index (the journal's `step`; BDF "Step ID").
        kind: rest, current, voltage, cccv, eis, mark, wait … ("unknown" if no step_started event).
        description: the plan's description of the step.
        label: the protocol label, if any.
        context: loop parameters in effect ({"cycle": 2, "j": 1.0, "phase": "charge"} …).
        current_a: programmed current, A (positive = charge / stripping the working electrode).
        density_a_m2: programmed current density, A/m², when the step was written with one.
        start_ns: UTC time the step started, ns.
        end_ns: UTC time it ended, ns (None if the run stopped inside it).
        reason: why it ended ("charge 0.0785 mAh reached", "short circuit …"), None if it did not.
        charge_c: signed charge passed in the step, C (the step_ended record, else the last sample).
        cycle: the cycle it belongs to (0 before the first current-bearing step).
        samples: its "dc" samples, in journal order.
    """

    number: int
    step: int
    kind: str
    description: str = ""
    label: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    current_a: float | None = None
    density_a_m2: float | None = None
    start_ns: int = 0
    end_ns: int | None = None
    reason: str | None = None
    charge_c: float | None = None
    cycle: int = 0
    samples: list[Sample] = field(default_factory=list)

    @property
    def passed_charge_c(self) -> float:
        """Signed charge passed, C: the recorded total, or the last sample's running total."""
        if self.charge_c is not None:
            return self.charge_c
        for sample in reversed(self.samples):
            if "charge_c" in sample.values:
                return sample.values["charge_c"]
        return 0.0

    @property
    def direction(self) -> int:
        """+1 for a charge (positive current), −1 for a discharge, 0 for no current."""
        if self.kind not in CURRENT_KINDS:
            return 0
        phase = self.context.get("phase")
        if phase in ("charge", "discharge"):
            return 1 if phase == "charge" else -1
        charge = self.passed_charge_c
        if abs(charge) > _MIN_CHARGE_C:
            return 1 if charge > 0 else -1
        if self.current_a:
            return 1 if self.current_a > 0 else -1
        return 0

    @property
    def completed(self) -> bool:
        """The step ran to its own end (not cut short by a short, limit, alarm or abort)."""
        if self.end_ns is None or self.reason is None:
            return False
        return not any(word in self.reason for word in ("short", "limit", "alarm", "abort", "cancel"))


def step_executions(journal: Journal, events: Iterable[Event] | None = None) -> list[StepExecution]:
    """Split a journal into executed steps, attach each "dc" sample, and number the cycles.

    Samples are attached to the latest execution of their step that started at or before them
    (late readings are journaled with the step they were measured in). Samples of a step that has
    no step_started event (a journal cut short) get an execution of kind "unknown", so nothing is
    dropped.

    Cycles: a new cycle starts when the loop context (the step's `context` without "phase")
    changes to another non-empty value; steps outside any loop start a new cycle when a charge
    follows a discharge. So `repeat` cycles, CCD density levels and hand-written charge/discharge
    pairs all count the way a battery scientist would.
    """
    executions: list[StepExecution] = []
    open_by_step: dict[int, StepExecution] = {}
    for event in journal.events() if events is None else events:
        if event.kind is EventKind.STEP_STARTED:
            data = event.data
            execution = StepExecution(
                number=len(executions) + 1,
                step=event.step,
                kind=str(data.get("kind", "unknown")),
                description=str(data.get("description", "")),
                label=data.get("label"),
                context=dict(data.get("context") or {}),
                current_a=data.get("current_a"),
                density_a_m2=data.get("density_a_m2"),
                start_ns=event.t_ns,
            )
            executions.append(execution)
            open_by_step[event.step] = execution
        elif event.kind is EventKind.STEP_ENDED and event.step in open_by_step:
            execution = open_by_step.pop(event.step)
            execution.end_ns = event.t_ns
            execution.reason = event.data.get("reason")
            execution.charge_c = event.data.get("charge_c")

    by_step: dict[int, list[StepExecution]] = {}
    for execution in executions:
        by_step.setdefault(execution.step, []).append(execution)
    starts = {step: [e.start_ns for e in runs] for step, runs in by_step.items()}
    orphans: list[StepExecution] = []
    for sample in journal.samples("dc"):
        runs = by_step.get(sample.step)
        if runs is None:
            orphan = StepExecution(number=0, step=sample.step, kind="unknown", start_ns=sample.t_ns)
            by_step[sample.step] = [orphan]
            starts[sample.step] = [sample.t_ns]
            orphans.append(orphan)
            runs = by_step[sample.step]
        index = max(0, bisect.bisect_right(starts[sample.step], sample.t_ns) - 1)
        runs[index].samples.append(sample)
    if orphans:
        executions = sorted(executions + orphans, key=lambda e: e.start_ns)
        for number, execution in enumerate(executions, start=1):
            execution.number = number
    _number_cycles(executions)
    return executions


def _number_cycles(executions: list[StepExecution]) -> None:
    cycle = 0
    loop_key: tuple[Any, ...] | None = None
    last_direction = 0
    for execution in executions:
        key = tuple(sorted((k, json.dumps(v)) for k, v in execution.context.items() if k != "phase"))
        direction = execution.direction
        if key:
            if key != loop_key:
                cycle, loop_key, last_direction = cycle + 1, key, 0
        elif direction:
            if cycle == 0 or (loop_key is not None) or (direction > 0 and last_direction < 0):
                cycle, loop_key, last_direction = cycle + 1, None, 0
        if direction:
            last_direction = direction
        execution.cycle = cycle


def run_start_ns(journal: Journal, events: Iterable[Event] | None = None) -> int | None:
    """UTC ns of the run_started event, else of the first record; None for an empty journal."""
    first: int | None = None
    for event in journal.events() if events is None else events:
        if event.kind is EventKind.RUN_STARTED:
            return event.t_ns
        first = event.t_ns if first is None else min(first, event.t_ns)
    for sample in journal.samples(None):
        return sample.t_ns if first is None else min(first, sample.t_ns)
    return first


# --- export --------------------------------------------------------------------------------------


def export_run(run_dir: Path, fmt: ExportFormat, out: Path | None = None) -> list[Path]:
    """Write a run's time series (and spectra, if any) as CSV, Parquet or BDF files.

    Args:
        run_dir: a run directory (holds journal.sqlite).
        fmt: "csv", "parquet" or "bdf" (Battery Data Format v1.2.0 column labels, as .bdf.csv).
        out: directory to write into (created if missing); default `run_dir/export`.

    Returns:
        The files written: the time series first, then the spectra when the run has any.

    Raises:
        RunDirError: `run_dir` holds no readable journal, or `fmt` is unknown.
    """
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {JOURNAL}); give the directory of a run")
    if fmt not in ("csv", "parquet", "bdf"):
        raise RunDirError(f"unknown export format {fmt!r}; use csv, parquet or bdf")
    out = run_dir / "export" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        journal = Journal(run_dir / JOURNAL)
        try:
            events = list(journal.events())
            start_ns = run_start_ns(journal, events) or 0
            points = _series_points(journal, events)
            eis_samples = list(journal.samples("eis"))
        finally:
            journal.close()
    except sqlite3.DatabaseError as exc:
        raise RunDirError(f"{run_dir / JOURNAL} cannot be read as a labctl journal ({exc})") from None
    if fmt == "bdf":
        tables = [
            ("timeseries", _bdf_series(points, start_ns)),
            ("spectra", _bdf_spectra(eis_samples, start_ns)),
        ]
    else:
        tables = [
            ("timeseries", _labctl_series(points, start_ns)),
            ("spectra", _labctl_spectra(eis_samples, start_ns)),
        ]
    settings = _settings(run_dir)
    written: list[Path] = []
    for name, table in tables:
        if name == "spectra" and not table.rows:
            continue
        if fmt == "parquet":
            path = out / f"{name}.parquet"
            _write_parquet(path, table, settings)
        else:
            path = out / (f"{name}.bdf.csv" if fmt == "bdf" else f"{name}.csv")
            _write_csv(path, table)
        written.append(path)
    return written


@dataclass
class _Table:
    """Column names, rows (lists in column order) and each column's unit."""

    columns: list[str]
    rows: list[list[Any]]
    units: dict[str, str]


@dataclass(frozen=True)
class _Point:
    """One time-series sample with the step execution it belongs to and its place in that step."""

    sample: Sample
    execution: StepExecution
    index_in_step: int


def _series_points(journal: Journal, events: list[Event]) -> list[_Point]:
    points = [
        _Point(sample, execution, i)
        for execution in step_executions(journal, events)
        for i, sample in enumerate(execution.samples, start=1)
    ]
    points.sort(key=lambda p: (p.sample.t_ns, p.execution.number))
    return points


def _value_keys(samples: Iterable[Sample], first: list[str]) -> list[str]:
    """Every value name present, the usual ones first (in `first` order), then the rest sorted."""
    seen: set[str] = set()
    for sample in samples:
        seen.update(sample.values)
    return [k for k in first if k in seen] + sorted(seen - set(first))


def _labctl_series(points: list[_Point], start_ns: int) -> _Table:
    keys = _value_keys((p.sample for p in points), _SERIES_FIRST)
    columns = ["time_s", "unix_time_s", "step", "step_count", "step_kind", "cycle", *keys]
    units = {"time_s": "s", "unix_time_s": "s", "step": "1", "step_count": "1", "step_kind": "", "cycle": "1"}
    rows = [
        [
            (p.sample.t_ns - start_ns) / 1e9,
            p.sample.t_ns / 1e9,
            p.sample.step,
            p.execution.number,
            p.execution.kind,
            p.execution.cycle,
            *[p.sample.values.get(k, math.nan) for k in keys],
        ]
        for p in points
    ]
    return _Table(columns, rows, units | {k: _unit_of(k) for k in keys})


def _labctl_spectra(samples: list[Sample], start_ns: int) -> _Table:
    if not samples:
        return _Table([], [], {})
    keys = _value_keys(samples, _SPECTRUM_FIRST)
    keys += [k for k in ("z_mod_ohm", "z_phase_deg") if k not in keys]  # derived, always present
    rows = []
    for sample in samples:
        values = dict(sample.values)
        re_z, im_z = values.get("z_real_ohm", math.nan), values.get("z_imag_ohm", math.nan)
        values.setdefault("z_mod_ohm", math.hypot(re_z, im_z))
        values.setdefault("z_phase_deg", math.degrees(math.atan2(im_z, re_z)))
        time_s = (sample.t_ns - start_ns) / 1e9
        rows.append([time_s, sample.t_ns / 1e9, sample.step, *[values.get(k, math.nan) for k in keys]])
    units = {"time_s": "s", "unix_time_s": "s", "step": "1"} | {k: _unit_of(k) for k in keys}
    return _Table(["time_s", "unix_time_s", "step", *keys], rows, units)


def _unit_of(name: str) -> str:
    """The SI unit a labctl value name carries in its suffix ("1" for counts and numbers)."""
    for suffix, unit in (
        ("_ohm", "Ω"),
        ("_deg", "°"),
        ("_hz", "Hz"),
        ("_pa", "Pa"),
        ("_k", "K"),
        ("_v", "V"),
        ("_a", "A"),
        ("_c", "C"),
        ("_s", "s"),
    ):
        if name.endswith(suffix):
            return unit
    return "1"


# --- BDF -----------------------------------------------------------------------------------------

_STEP_TYPES = {"rest": "REST", "eis": "EIS", "wait": "REST", "mark": "REST"}


def _step_type(execution: StepExecution) -> str:
    """BDF "Step Type": CC_CHG/CC_DCH, CV_CHG/CV_DCH, CCCV_CHG/CCCV_DCH, REST, EIS (BDF's examples)."""
    prefix = {"current": "CC", "voltage": "CV", "cccv": "CCCV"}.get(execution.kind)
    if prefix is None:
        return _STEP_TYPES.get(execution.kind, execution.kind.upper())
    direction = execution.direction
    return f"{prefix}_{'CHG' if direction >= 0 else 'DCH'}" if direction else "REST"


def _bdf_series(points: list[_Point], start_ns: int) -> _Table:
    """The time series under BDF v1.2.0 labels, with BDF's test-scoped capacities.

    Mapping (BDF label ← labctl):

    - Test Time / s ← time since run_started; Unix Time / s ← the sample's UTC time.
    - Voltage / V, Current / A ← voltage_v, current_a; Power / W ← V·I.
    - Cycle Count / 1 ← the cycle of `step_executions` (monotonic, 0 before the first cycle).
    - Step Count / 1 ← the execution number (never repeats, as BDF defines it).
    - Step ID ← the plan step index (the journal's `step`; repeats when a `goto` loops back).
    - Step Index / 1 ← 1-based point counter within the step, BDF ≥ 1.0's meaning (files from
      earlier BDF versions used this label for the program step, now "Step ID").
    - Step Time / s ← time since the step started; Step Type ← CC_CHG, CC_DCH, CV_CHG, CCCV_CHG …,
      REST, EIS (BDF's suggested vocabulary).
    - Charging / Discharging / Net / Cumulative Capacity / Ah ← the integrals of I>0, I<0, I and |I|
      from the test start; Step Cumulative Capacity / Ah ← |charge| within the step.
    - Applied Pressure / Pa ← pressure_pa (the rig's controlled stack pressure);
      Temperature T1 / degC ← temperature_k − 273.15 (BDF's default for one unqualified channel).
    - Record Index / 1 ← row number.

    Capacities come from the journaled per-step running charge (`charge_c`), not from integrating
    the kept samples: the instrument integrated every reading, kept or not, so the totals are exact.
    """
    columns = [
        "Test Time / s",
        "Unix Time / s",
        "Voltage / V",
        "Current / A",
        "Power / W",
        "Cycle Count / 1",
        "Step Count / 1",
        "Step ID",
        "Step Index / 1",
        "Step Time / s",
        "Step Type",
        "Charging Capacity / Ah",
        "Discharging Capacity / Ah",
        "Net Capacity / Ah",
        "Cumulative Capacity / Ah",
        "Step Cumulative Capacity / Ah",
        "Applied Pressure / Pa",
        "Temperature T1 / degC",
        "Record Index / 1",
    ]
    rows = []
    charged_c = discharged_c = 0.0
    execution: StepExecution | None = None
    step_charge_c = 0.0
    for record_index, point in enumerate(points, start=1):
        values = point.sample.values
        if point.execution is not execution:
            execution, step_charge_c = point.execution, 0.0
        delta_c = values.get("charge_c", step_charge_c) - step_charge_c  # since this step's last sample
        step_charge_c += delta_c
        if delta_c > 0:
            charged_c += delta_c
        else:
            discharged_c -= delta_c
        voltage, current = values.get("voltage_v", math.nan), values.get("current_a", math.nan)
        rows.append(
            [
                (point.sample.t_ns - start_ns) / 1e9,
                point.sample.t_ns / 1e9,
                voltage,
                current,
                voltage * current,
                execution.cycle,
                execution.number,
                execution.step,
                point.index_in_step,
                (point.sample.t_ns - execution.start_ns) / 1e9,
                _step_type(execution),
                charged_c / 3600.0,
                discharged_c / 3600.0,
                (charged_c - discharged_c) / 3600.0,
                (charged_c + discharged_c) / 3600.0,
                abs(step_charge_c) / 3600.0,
                values.get("pressure_pa", math.nan),
                values.get("temperature_k", math.nan) - 273.15,
                record_index,
            ]
        )
    return _Table(columns, rows, _bdf_units(columns))


def _bdf_spectra(samples: list[Sample], start_ns: int) -> _Table:
    """Spectra under BDF v1.2.0 impedance labels (Im(Z) as reported: negative = capacitive)."""
    table = _labctl_spectra(samples, start_ns)
    if not table.rows:
        return table
    mapping = [
        ("Test Time / s", "time_s"),
        ("Unix Time / s", "unix_time_s"),
        ("Step ID", "step"),
        ("Frequency / Hz", "frequency_hz"),
        ("Real Impedance / ohm", "z_real_ohm"),
        ("Imaginary Impedance / ohm", "z_imag_ohm"),
        ("Absolute Impedance / ohm", "z_mod_ohm"),
        ("Phase / deg", "z_phase_deg"),
        ("Voltage / V", "e_dc_v"),
        ("Current / A", "i_dc_a"),
        ("Applied Pressure / Pa", "pressure_pa"),
        ("Temperature T1 / degC", "temperature_k"),
        ("spectrum", "spectrum"),  # no BDF term: kept under labctl's name so spectra stay separable
    ]
    index = {name: i for i, name in enumerate(table.columns)}
    mapping = [(label, key) for label, key in mapping if key in index]
    offsets = {"temperature_k": -273.15}
    rows = [[row[index[key]] + offsets.get(key, 0) for _, key in mapping] for row in table.rows]
    columns = [label for label, _ in mapping]
    return _Table(columns, rows, _bdf_units(columns))


def _bdf_units(columns: list[str]) -> dict[str, str]:
    return {c: c.split(" / ", 1)[1] if " / " in c else "" for c in columns}


# --- writers -------------------------------------------------------------------------------------


def _settings(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_csv(path: Path, table: _Table) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_cell(v) for v in row])


def _cell(value: Any) -> Any:
    """CSV text of one value: empty for nan, repr for floats (full precision, round-trips)."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def _write_parquet(path: Path, table: _Table, settings: dict[str, Any]) -> None:
    import pyarrow as pa  # lazily: pyarrow costs ~0.2 s to import and only export needs it
    import pyarrow.parquet as pq

    columns = list(zip(*table.rows, strict=True)) if table.rows else [() for _ in table.columns]
    fields, arrays = [], []
    for name, values in zip(table.columns, columns, strict=True):
        array = pa.array(list(values))
        if pa.types.is_null(array.type):  # an empty table: say what the column would hold
            array = array.cast(pa.string() if name in ("step_kind", "Step Type") else pa.float64())
        arrays.append(array)
        fields.append(pa.field(name, array.type, metadata={"unit": table.units.get(name, "")}))
    schema = pa.schema(fields, metadata={"labctl.settings": json.dumps(settings, sort_keys=True)})
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)
