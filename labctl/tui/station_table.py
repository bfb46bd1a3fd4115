"""The lab view's table: one row per station, updated cell by cell."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from labctl.tui import format as fmt

NARROW_COLUMNS = ("station", "state", "step", "elapsed", "v", "ma_cm2", "mpa", "degc", "alarm")
WIDE_COLUMNS = (
    "station",
    "state",
    "protocol",
    "step",
    "elapsed",
    "v",
    "ma",
    "ma_cm2",
    "mpa",
    "degc",
    "alarm",
)
LABELS = {
    "station": "Station",
    "state": "State",
    "protocol": "Protocol",
    "step": "Step",
    "elapsed": "Elapsed",
    "v": "V",
    "ma": "I mA",
    "ma_cm2": "mA/cm²",
    "mpa": "MPa",
    "degc": "°C",
    "alarm": "Alarm",
}
NUMERIC = {"elapsed", "v", "ma", "ma_cm2", "mpa", "degc"}
WIDE_FROM = 110
"""Terminal width (cells) from which the table shows separate protocol and mA columns."""


class StationTable(DataTable[Any]):
    """Every station's state, step, time and last values; a station in alarm is a red row.

    `show(stations)` rewrites only the cells whose text changed, so redrawing at 10 Hz is cheap and does
    not flicker. The row key is the station name.
    """

    DEFAULT_CSS = """
    StationTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._columns: tuple[str, ...] = ()
        self._cells: dict[str, dict[str, Text]] = {}

    @property
    def selected_station(self) -> str | None:
        """The station under the cursor (None while the table is empty)."""
        if self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key((self.cursor_row, 0))
        return str(row_key.value)

    def select_station(self, name: str) -> None:
        """Move the cursor to `name`'s row."""
        if name in self._cells:
            self.move_cursor(row=self.get_row_index(name))

    def show(self, stations: dict[str, Any], width: int) -> None:
        """Bring the table up to date with `stations` (name → StationView) at a terminal `width`."""
        columns = WIDE_COLUMNS if width >= WIDE_FROM else NARROW_COLUMNS
        if columns != self._columns:
            selected = self.selected_station
            self.clear(columns=True)
            self._cells.clear()
            self._columns = columns
            for key in columns:
                label = Text(LABELS[key], justify="right" if key in NUMERIC else "left")
                self.add_column(label, key=key)
            if selected:
                self.call_after_refresh(self.select_station, selected)
        step_width = 16 if columns is WIDE_COLUMNS else max(8, width - 66)
        gone = set(self._cells) - set(stations)
        for name in gone:
            self.remove_row(name)
            del self._cells[name]
        added = False
        for name in sorted(stations):
            cells = self._row(stations[name], step_width)
            old = self._cells.get(name)
            if old is None:
                self.add_row(*(cells[key] for key in columns), key=name)
                added = True
            else:
                for key in columns:
                    # Rich's Text equality ignores the style: compare it too (an acknowledged alarm)
                    if old[key] != cells[key] or old[key].style != cells[key].style:
                        self.update_cell(name, key, cells[key], update_width=True)  # "idle" → "running"
            self._cells[name] = cells
        if added:
            self.sort("station", key=lambda cell: cell.plain)

    def _row(self, view: Any, step_width: int) -> dict[str, Text]:
        status: dict[str, Any] = view.status
        values: dict[str, Any] = fmt.last_values(view)
        state = str(view.state or "?")
        alarm = view.alarm
        flagged = bool(alarm) and not view.alarm_acknowledged
        protocol = str(status.get("protocol") or "")
        step = fmt.step_text(status)
        if self._columns is NARROW_COLUMNS and protocol:
            step = f"{step} · {protocol}" if step != "-" else protocol  # the step matters more
        text = {
            "station": view.name,
            "state": state,
            "protocol": fmt.truncate(protocol or "-", 16),
            "step": fmt.truncate(step, step_width),
            "elapsed": fmt.elapsed_text(status),
            "v": fmt.voltage(values),
            "ma": fmt.current_ma(values),
            "ma_cm2": fmt.current_density(values),
            "mpa": fmt.pressure_mpa(values),
            "degc": fmt.temperature_c(values),
            "alarm": fmt.truncate(str(alarm or ""), 40)
            + (" (ack)" if alarm and view.alarm_acknowledged else ""),
        }
        row_style = "bold white on dark_red" if flagged else ""
        cells: dict[str, Text] = {}
        for key, value in text.items():
            style = row_style
            if key == "state" and not flagged:
                style = fmt.STATE_STYLES.get(state, "")
            elif key == "alarm" and alarm and not flagged:
                style = "red"
            cells[key] = Text(value, style=style, justify="right" if key in NUMERIC else "left")
        return cells
