"""The station view: live plots, the step list, the event log and the results so far."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from labctl.tui import format as fmt
from labctl.tui.alarm_banner import AlarmBanner
from labctl.tui.time_plot import TimePlot, Trace

PLOT_INTERVAL_S = 0.5
"""Plots are rebuilt at most this often (plotext draws in Python; the tables redraw at 10 Hz)."""


class StationScreen(Screen[None]):
    """One station in detail; the app's control keys act on this station.

    Args:
        station: the station's name (a key of `LabModel.stations`).
    """

    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("w", "cycle_window", "Window"),
    ]

    def __init__(self, station: str) -> None:
        super().__init__()
        self.station = station
        self.window_index = 0
        self._drawn: tuple[int, int] | None = None
        self._plotted: tuple[int, int] | None = None
        self._plotted_at = -math.inf
        self._ready = False

    @property
    def window(self) -> tuple[str, float | None]:
        """The plot window: its label and length in seconds (None: all that is kept)."""
        return fmt.WINDOWS[self.window_index]

    def compose(self) -> ComposeResult:
        """Top line, banner, summary, plots, details, footer."""
        yield Static("", id="topbar")
        yield AlarmBanner(id="banner")
        yield Static("", id="summary")
        with Horizontal(id="plots"):
            yield TimePlot(id="plot-vi")
            yield TimePlot(id="plot-pt")
        with Horizontal(id="details"):
            with VerticalScroll(id="steps-pane"):
                yield Static("", id="steps")
            with VerticalScroll(id="events-pane"):
                yield Static("", id="events")
            with VerticalScroll(id="results-pane"):
                yield Static("", id="results")
        yield Footer()

    def on_mount(self) -> None:
        """Titles of the detail panes."""
        self.query_one("#steps-pane").border_title = "Steps"
        self.query_one("#events-pane").border_title = "Events"
        self.query_one("#results-pane").border_title = "Results"
        self._ready = True

    def action_cycle_window(self) -> None:
        """Next plot window: 5 min → 1 h → 12 h → all → 5 min."""
        self.window_index = (self.window_index + 1) % len(fmt.WINDOWS)
        self._drawn = None
        self._plotted = None
        self._plotted_at = -math.inf
        self.notify(f"plot window: {self.window[0]}", timeout=2)

    def show(self, model: Any, now: float) -> None:
        """Redraw from `model` if it changed since the last call (`now`: a monotonic time in s)."""
        view = model.stations.get(self.station)
        key = (model.version, self.window_index)
        if view is None or not self._ready:  # the app's timer may tick before this screen is mounted
            return
        if key != self._drawn:
            self._drawn = key
            self.query_one("#summary", Static).update(self._summary(view))
            self.query_one("#steps", Static).update(self._steps(view))
            current = view.status.get("step")
            if isinstance(current, int):  # keep the current step in sight
                offset = 1 if view.step_context else 0
                pane = self.query_one("#steps-pane", VerticalScroll)
                y = max(current + offset - 2, 0)
                pane.call_after_refresh(pane.scroll_to, y=y, animate=False)
            self.query_one("#events", Static).update(self._events(view))
            self.query_one("#results", Static).update(self._results(view))
        if key != self._plotted and now - self._plotted_at >= PLOT_INTERVAL_S:
            self._plotted, self._plotted_at = key, now
            self._plot(view)

    def _summary(self, view: Any) -> Text:
        status = view.status
        state = str(view.state or "?")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {view.name} ", style="bold reverse")
        text.append(" ")
        text.append(state, style=fmt.STATE_STYLES.get(state, ""))
        text.append(f" ⏱ {fmt.elapsed_text(status)}  [{self.window[0]}]")
        text.append(f"  {status.get('protocol') or '-'} · step {fmt.step_text(status)}")
        values = fmt.last_values(view)
        text.append(
            f"\n V {fmt.voltage(values)}  I {fmt.current_ma(values)} mA  {fmt.current_density(values)} mA/cm²"
            f"  P {fmt.pressure_mpa(values)} MPa  T {fmt.temperature_c(values)} °C"
        )
        message = status.get("message")
        if message:
            text.append(f"  {message}", style="italic")
        return text

    def _plot(self, view: Any) -> None:
        seconds = self.window[1]
        t_v, v = view.window("voltage_v", seconds)
        t_j, j = view.window("current_density_a_m2", seconds)
        t_p, p = view.window("pressure_pa", seconds)
        t_t, temp = view.window("temperature_k", seconds)
        self.query_one("#plot-vi", TimePlot).show(
            "V (left) · mA/cm² (right)",
            [Trace("V", t_v, v), Trace("mA/cm²", t_j, [x * 0.1 for x in j], right=True)],
        )
        self.query_one("#plot-pt", TimePlot).show(
            "MPa (left) · °C (right)",
            [
                Trace("MPa", t_p, [x * 1e-6 for x in p]),
                Trace("°C", t_t, [x - 273.15 for x in temp], right=True),
            ],
        )

    @staticmethod
    def _steps(view: Any) -> Text:
        status = view.status
        current = status.get("step")
        text = Text(no_wrap=True, overflow="ellipsis")
        context = view.step_context
        if context:
            # counters only: a sweep value is a bare SI float here; the step description has its unit
            loops = "  ".join(f"{key} {value}" for key, value in context.items() if isinstance(value, int))
            text.append(f"{loops}\n", style="bold cyan")
        if not view.steps:
            text.append("(no step list)", style="dim")
        for index, description in enumerate(view.steps):
            if index == current:
                text.append(f"▶ {index} {description}\n", style="bold black on yellow")
            else:
                done = isinstance(current, int) and index < current
                text.append(f"  {index} {description}\n", style="dim" if done else "")
        text.rstrip()
        return text

    @staticmethod
    def _events(view: Any) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        events = list(view.events)[-200:]
        if not events:
            text.append("(no events yet)", style="dim")
        for event in reversed(events):  # newest first: the pane opens at the top
            kind = str(event.get("kind", ""))
            style = "bold red" if kind in ("alarm", "limit", "detector", "instrument") else ""
            style = (
                "yellow"
                if kind in ("mark", "note", "paused", "resumed", "soft_short") and not style
                else style
            )
            text.append(f"{fmt.duration(event.get('t'))} ", style="dim")
            text.append(f"{event.get('message') or kind}\n", style=style)
        text.rstrip()
        return text

    @staticmethod
    def _results(view: Any) -> Text:
        results: dict[str, Any] = view.results or {}
        text = Text()
        if results.get("ccd_mA_cm2") is not None:
            text.append(f"CCD {fmt.number(results['ccd_mA_cm2'], 1.0, '.3g')} mA/cm²\n", style="bold")
        if results.get("short_at_mA_cm2") is not None:
            short = fmt.number(results["short_at_mA_cm2"], 1.0, ".3g")
            text.append(f"short at {short} mA/cm²\n", style="bold red")
        if results.get("critical_stripping_mA_cm2") is not None:
            stripping = fmt.number(results["critical_stripping_mA_cm2"], 1.0, ".3g")
            text.append(f"stripping limit {stripping} mA/cm²\n")
        if "soft_shorts" in results:
            text.append(f"soft shorts {results['soft_shorts']}\n")
        for key in ("r_int_ohm", "R_int_ohm"):
            if key in results:
                text.append(f"R_int {fmt.number(results[key], 1.0, '.4g')} Ω\n")
        cycles = results.get("cycles") or []
        if cycles:
            text.append("cycle  Qch mAh Qdis mAh   CE %\n", style="underline")
        for cycle in list(cycles)[-8:]:
            text.append(
                f"{cycle.get('number', '?')!s:>5}  {fmt.number(cycle.get('charge_mah'), 1.0, '7.4g')}"
                f"  {fmt.number(cycle.get('discharge_mah'), 1.0, '7.4g')}"
                f"  {fmt.number(cycle.get('efficiency'), 100.0, '5.1f')}\n"
            )
        other = {k: v for k, v in results.items() if k not in _SHOWN and isinstance(v, int | float | str)}
        for key, value in other.items():
            text.append(f"{key} {value}\n", style="dim")
        if not text.plain:
            text.append("(none yet)", style="dim")
        text.rstrip()
        return text


_SHOWN = {
    "ccd_mA_cm2",
    "short_at_mA_cm2",
    "critical_stripping_mA_cm2",
    "soft_shorts",
    "r_int_ohm",
    "R_int_ohm",
    "cycles",
    "last_spectrum",
}
