"""A plot of one or two series against time, for the station view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual_plotext import PlotextPlot


@dataclass(frozen=True)
class Trace:
    """One line of a plot.

    Attributes:
        label: legend text with the unit, e.g. "V".
        times: sample times in seconds (any origin; the plot shows them relative to the newest sample).
        values: the values, already in display units.
        right: draw against the right-hand y axis (a second quantity on the same time axis).
    """

    label: str
    times: Sequence[float]
    values: Sequence[float]
    right: bool = False


class TimePlot(PlotextPlot):
    """Traces against time before the newest sample (minutes, or hours beyond two hours).

    The x axis ends at the newest sample of any trace, so a plot of given data looks the same whenever it
    is drawn (snapshot tests rely on it).
    """

    DEFAULT_CSS = """
    TimePlot { height: 1fr; min-height: 6; }
    """

    def show(self, title: str, traces: Sequence[Trace]) -> None:
        """Replace the plot's content with `traces` and redraw."""
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        ends = [t.times[-1] for t in traces if t.times]
        if not ends:
            plt.xlabel("no data yet")
            self.refresh()
            return
        end = max(ends)
        starts = [t.times[0] for t in traces if t.times]
        span = end - min(starts)
        scale, unit = (3600.0, "h") if span > 7200 else (60.0, "min")
        plt.xlabel(f"{unit} before the newest sample")
        colours = ("cyan", "orange", "green", "magenta")
        for colour, trace in zip(colours, traces, strict=False):
            if not trace.times:
                continue
            xs = [(t - end) / scale for t in trace.times]
            plt.plot(
                xs,
                list(trace.values),
                label=trace.label,
                color=colour,
                yside="right" if trace.right else "left",
                marker="braille",
            )
        self.refresh()
