"""Importers for BioLogic EC-Lab `.mpt` and Gamry `.DTA` files: EIS spectra and cycling series.

BioLogic and Gamry instruments are driven by closed, Windows-only libraries, so labctl reads their
exported files instead of driving them (INSTRUMENTS.md §2.7, §2.8, §2.11). Spectra come out as
`drivers.base.EisPoint` in the canonical sign convention, time series as `SeriesPoint`, both in SI
units. The sign of Im(Z) is the most common silent bug in EIS data, so the rules are stated here:

- **MPT** stores **−Im(Z)** (column `-Im(Z)/Ohm`, positive for a capacitive arc): it is negated on
  import. A column written `Im(Z)/Ohm` is taken as it is.
- **DTA** stores `Zimag` in the math convention already (negative for a capacitive arc).
- In both, a capacitive arc therefore comes out with `z_imag_ohm < 0`.

Formats:

- EC-Lab ASCII (`.mpt`): latin-1 text (`µ` is the byte 0xB5), first line `EC-Lab ASCII FILE`, then
  `Nb header lines : N`; line N holds the tab-separated column names (`quantity/unit`), data rows
  follow. Numbers may use a decimal comma (EC-Lab writes the Windows locale's separator).
- Gamry EXPLAIN (`.DTA`): tab-separated text; a table starts with `NAME<TAB>TABLE…`, then a
  column-name row and a unit row (both starting with a tab), then data rows starting with a tab.
  `ZCURVE` holds a spectrum (`Freq`, `Zreal`, `Zimag`, `Time`, `Vdc`, `Idc`); `CURVE` or
  `CURVE1`, `CURVE2`… hold chrono/cycling data (`T`, `Vf`, `Im`).

Every problem is a `DataFileError` naming the file and line and saying what to do.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from drivers.base import EisPoint
from labctl.errors import LabctlError

MAH_TO_C = 3.6
"""One milliampere-hour in coulombs."""


class DataFileError(LabctlError):
    """An instrument data file cannot be imported; the message names file:line and the fix."""


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One row of an imported chrono/cycling file, in SI units.

    Attributes:
        time_s: seconds since the start of the file's experiment.
        voltage_v: working-electrode potential, V.
        current_a: current, A (sign as the instrument wrote it: positive = anodic/charge for both).
        cycle: cycle number (EC-Lab `cycle number`; Gamry curve number), or None if not recorded.
        charge_c: charge of the current half cycle, C (EC-Lab `Q charge/discharge`), NaN if absent.
    """

    time_s: float
    voltage_v: float
    current_a: float
    cycle: int | None = None
    charge_c: float = math.nan


# --------------------------------------------------------------------------------------------
# dispatch by file type


def read_impedance(path: str | Path) -> list[EisPoint]:
    """A spectrum from an `.mpt` (PEIS/GEIS) or `.DTA` (ZCURVE) file, by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mpt":
        return read_mpt_impedance(path)
    if suffix == ".dta":
        return read_dta_impedance(path)
    raise DataFileError(f"{path}: unknown impedance file type {suffix!r}; labctl reads .mpt and .DTA files")


def read_series(path: str | Path) -> list[SeriesPoint]:
    """A time series from an `.mpt` (GCPL, CA, CP, OCV…) or `.DTA` (CURVE tables) file, by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mpt":
        return read_mpt_series(path)
    if suffix == ".dta":
        return read_dta_series(path)
    raise DataFileError(f"{path}: unknown data file type {suffix!r}; labctl reads .mpt and .DTA files")


# --------------------------------------------------------------------------------------------
# a table with line numbers, shared by both formats


@dataclass
class _Table:
    path: Path
    name: str
    columns: list[str]
    rows: list[tuple[int, list[str]]]
    """(1-based line number, cells) per data row."""

    def find(self, *candidates: tuple[str, float]) -> tuple[int, float] | None:
        """The index and SI scale of the first candidate column present, or None."""
        stripped = [c.strip() for c in self.columns]
        for name, scale in candidates:
            if name in stripped:
                return stripped.index(name), scale
        return None

    def need(self, what: str, *candidates: tuple[str, float]) -> tuple[int, float]:
        found = self.find(*candidates)
        if found is None:
            names = ", ".join(repr(name) for name, _ in candidates)
            raise DataFileError(
                f"{self.path}: the {self.name} has no {what} column (looked for {names}); "
                "export the file with that column, or check that this is the right kind of file"
            )
        return found

    def value(self, line: int, cells: list[str], column: tuple[int, float], what: str) -> float:
        index, scale = column
        if index >= len(cells):
            raise DataFileError(
                f"{self.path}:{line}: the row has {len(cells)} cells, but {what} is column {index + 1}; "
                "the file is truncated or not tab-separated"
            )
        return _number(self.path, line, cells[index], what) * scale

    def optional(self, line: int, cells: list[str], column: tuple[int, float] | None, what: str) -> float:
        return math.nan if column is None else self.value(line, cells, column, what)


def _number(path: Path, line: int, text: str, what: str) -> float:
    token = text.strip()
    try:
        return float(token)
    except ValueError:
        pass
    if "," in token and "." not in token:  # a decimal comma from a European Windows locale
        try:
            return float(token.replace(",", "."))
        except ValueError:
            pass
    raise DataFileError(f"{path}:{line}: {what} {text.strip()[:40]!r} is not a number")


def _read_text(path: str | Path, kind: str) -> tuple[Path, list[str]]:
    file = Path(path)
    try:
        # latin-1 maps every byte, so an unexpected byte never stops an import; both vendors
        # write Windows code page 1252, which matches latin-1 for the characters they use (µ, °).
        text = file.read_text(encoding="latin-1")
    except OSError as exc:
        raise DataFileError(f"{file}: cannot read the {kind} file ({exc.strerror or exc})") from exc
    return file, text.splitlines()


# --------------------------------------------------------------------------------------------
# BioLogic EC-Lab .mpt

_NB_HEADER = re.compile(r"^\s*Nb header lines\s*:\s*(\d+)\s*$")


def _read_mpt(path: str | Path) -> _Table:
    file, lines = _read_text(path, "EC-Lab")
    if not lines or not lines[0].startswith("EC-Lab ASCII FILE"):
        raise DataFileError(
            f"{file}:1: not an EC-Lab ASCII file (the first line should be 'EC-Lab ASCII FILE'); "
            "export it from EC-Lab with 'Export as Text'"
        )
    header_lines = None
    for number, line in enumerate(lines[:5], start=1):
        match = _NB_HEADER.match(line)
        if match:
            header_lines = int(match.group(1))
            break
        if number > 1 and line.strip():
            break
    if header_lines is None:
        raise DataFileError(f"{file}:2: missing 'Nb header lines : N'; the file is not a complete MPT export")
    if not 1 <= header_lines <= len(lines):
        raise DataFileError(
            f"{file}:2: 'Nb header lines : {header_lines}' but the file has {len(lines)} lines; "
            "the file is truncated"
        )
    columns = lines[header_lines - 1].rstrip("\t").split("\t")
    if len(columns) < 2:
        raise DataFileError(
            f"{file}:{header_lines}: expected tab-separated column names on the last header line, "
            f"got {lines[header_lines - 1][:60]!r}"
        )
    rows = [
        (number, line.rstrip("\t").split("\t"))
        for number, line in enumerate(lines[header_lines:], start=header_lines + 1)
        if line.strip()
    ]
    return _Table(file, "EC-Lab table", columns, rows)


def read_mpt_impedance(path: str | Path) -> list[EisPoint]:
    """A PEIS/GEIS spectrum from an EC-Lab `.mpt` file; −Im(Z) is flipped into the math sign."""
    table = _read_mpt(path)
    frequency = table.need("frequency", ("freq/Hz", 1.0))
    z_real = table.need("Re(Z)", ("Re(Z)/Ohm", 1.0))
    # EC-Lab's usual column is −Im(Z) (positive for capacitive): scale −1 gives the math sign.
    z_imag = table.need("Im(Z)", ("-Im(Z)/Ohm", -1.0), ("Im(Z)/Ohm", 1.0))
    time = table.find(("time/s", 1.0))
    e_dc = table.find(("<Ewe>/V", 1.0), ("Ewe/V", 1.0))
    i_dc = table.find(("<I>/mA", 1e-3), ("I/mA", 1e-3), ("<I>/A", 1.0))
    points = []
    for line, cells in table.rows:
        points.append(
            EisPoint(
                frequency_hz=table.value(line, cells, frequency, "freq/Hz"),
                z_real_ohm=table.value(line, cells, z_real, "Re(Z)/Ohm"),
                z_imag_ohm=table.value(line, cells, z_imag, "Im(Z)"),
                e_dc_v=table.optional(line, cells, e_dc, "<Ewe>/V"),
                i_dc_a=table.optional(line, cells, i_dc, "<I>"),
                time_s=table.optional(line, cells, time, "time/s"),
            )
        )
    if not points:
        raise DataFileError(f"{table.path}: the EC-Lab file holds no data rows")
    return points


def read_mpt_series(path: str | Path) -> list[SeriesPoint]:
    """A chrono/cycling series (GCPL, CP, CA, OCV…) from an EC-Lab `.mpt` file."""
    table = _read_mpt(path)
    time = table.need("time", ("time/s", 1.0))
    voltage = table.need("potential", ("Ewe/V", 1.0), ("<Ewe>/V", 1.0), ("Ecell/V", 1.0))
    current = table.find(("I/mA", 1e-3), ("<I>/mA", 1e-3), ("I/A", 1.0), ("<I>/A", 1.0))
    cycle = table.find(("cycle number", 1.0))
    charge = table.find(("Q charge/discharge/mA.h", MAH_TO_C), ("(Q-Qo)/mA.h", MAH_TO_C))
    series = []
    for line, cells in table.rows:
        cycle_number = None if cycle is None else table.value(line, cells, cycle, "cycle number")
        series.append(
            SeriesPoint(
                time_s=table.value(line, cells, time, "time/s"),
                voltage_v=table.value(line, cells, voltage, "Ewe"),
                current_a=0.0 if current is None else table.value(line, cells, current, "I"),  # OCV: none
                cycle=None if cycle_number is None else round(cycle_number),
                charge_c=table.optional(line, cells, charge, "Q charge/discharge"),
            )
        )
    if not series:
        raise DataFileError(f"{table.path}: the EC-Lab file holds no data rows")
    return series


# --------------------------------------------------------------------------------------------
# Gamry EXPLAIN .DTA


def _read_dta_tables(path: str | Path) -> tuple[Path, list[_Table]]:
    file, lines = _read_text(path, "Gamry")
    first = next((line.strip() for line in lines if line.strip()), "")
    if first != "EXPLAIN":
        raise DataFileError(
            f"{file}:1: not a Gamry EXPLAIN file (the first line should be 'EXPLAIN'); export the "
            "data from Gamry Framework as a .DTA file"
        )
    tables: list[_Table] = []
    index = 0
    while index < len(lines):
        cells = lines[index].split("\t")
        if len(cells) >= 2 and cells[1].strip() == "TABLE" and cells[0].strip():
            name = cells[0].strip()
            if index + 2 >= len(lines) or not lines[index + 1].startswith("\t"):
                raise DataFileError(
                    f"{file}:{index + 2}: table {name} has no column-name row; the file is truncated"
                )
            columns = lines[index + 1].split("\t")
            rows = []
            row_index = index + 3  # after the column names and the units
            while row_index < len(lines) and lines[row_index].startswith("\t"):
                rows.append((row_index + 1, lines[row_index].split("\t")))
                row_index += 1
            tables.append(_Table(file, f"{name} table", columns, rows))
            index = row_index
        else:
            index += 1
    return file, tables


def read_dta_impedance(path: str | Path) -> list[EisPoint]:
    """The `ZCURVE` spectrum of a Gamry `.DTA` file (Zimag is already in the math sign)."""
    file, tables = _read_dta_tables(path)
    table = next((t for t in tables if t.name == "ZCURVE table"), None)
    if table is None:
        raise DataFileError(f"{file}: no ZCURVE table; this is not an impedance file (try read_series)")
    frequency = table.need("frequency", ("Freq", 1.0))
    z_real = table.need("Zreal", ("Zreal", 1.0))
    z_imag = table.need("Zimag", ("Zimag", 1.0))
    time = table.find(("Time", 1.0))
    e_dc = table.find(("Vdc", 1.0))
    i_dc = table.find(("Idc", 1.0))
    points = [
        EisPoint(
            frequency_hz=table.value(line, cells, frequency, "Freq"),
            z_real_ohm=table.value(line, cells, z_real, "Zreal"),
            z_imag_ohm=table.value(line, cells, z_imag, "Zimag"),
            e_dc_v=table.optional(line, cells, e_dc, "Vdc"),
            i_dc_a=table.optional(line, cells, i_dc, "Idc"),
            time_s=table.optional(line, cells, time, "Time"),
        )
        for line, cells in table.rows
    ]
    if not points:
        raise DataFileError(f"{file}: the ZCURVE table holds no data rows")
    return points


_CURVE = re.compile(r"^CURVE(\d*) table$")


def read_dta_series(path: str | Path) -> list[SeriesPoint]:
    """The `CURVE`/`CURVE1`/`CURVE2`… tables of a Gamry chrono or cycling `.DTA` file, in order.

    A numbered curve's number becomes the points' `cycle`.
    """
    file, tables = _read_dta_tables(path)
    curves = [(table, _CURVE.match(table.name)) for table in tables]
    curves = [(table, match) for table, match in curves if match]
    if not curves:
        raise DataFileError(
            f"{file}: no CURVE table; this is not a chrono/cycling file (for a ZCURVE use read_impedance)"
        )
    series: list[SeriesPoint] = []
    for table, match in curves:
        cycle = int(match.group(1)) if match.group(1) else None
        time = table.need("time", ("T", 1.0))
        voltage = table.need("potential", ("Vf", 1.0))
        current = table.need("current", ("Im", 1.0))
        series.extend(
            SeriesPoint(
                time_s=table.value(line, cells, time, "T"),
                voltage_v=table.value(line, cells, voltage, "Vf"),
                current_a=table.value(line, cells, current, "Im"),
                cycle=cycle,
            )
            for line, cells in table.rows
        )
    if not series:
        raise DataFileError(f"{file}: the CURVE tables hold no data rows")
    return series
