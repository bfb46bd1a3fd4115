"""The figures battery people expect from a run, as PNG files readable at 100 dpi.

1. `plot_voltage_current`: voltage and current density against time, the density staircase, the
   short and the critical stripping current marked (CCD and any galvanostatic run).
2. `plot_nyquist` / `plot_bode`: −Z″ against Z′ on equal axes (Ω·cm² when the area is known) with
   the circuit fit overlaid and a few frequencies annotated; |Z| and phase against frequency.
3. `plot_capacity`: charge/discharge capacity and Coulombic efficiency against cycle (two axes).
4. `plot_impedance_trend`: R_int (and R_bulk) against time, and against pressure when it varied.
5. `plot_polarization`: polarization per half-cycle of a symmetric cell, stripping and plating apart.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot: no global figure
registry to leak or close, no display needed (the PNG is rendered by the Agg canvas), and safe to
call from any thread. Every function takes plain data and a path, writes the PNG and returns the
path, so the report decides what to draw and these functions only how.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from labctl.analysis.ccd import CellCcd
from labctl.analysis.cycling import CycleMetrics, HalfCyclePolarization, ImpedancePoint
from labctl.analysis.eis import EisFit, Spectrum

DPI = 100
"""Figures are sized in inches for this resolution: 9 × 6 in → 900 × 600 px."""

_MAX_POINTS = 20_000
"""Above this many samples a trace is reduced to per-bin min/max, which keeps spikes (shorts)."""

_STRIP, _PLATE = "#1f77b4", "#d62728"


@dataclass(frozen=True, slots=True)
class Marker:
    """Something to mark on a time axis.

    Attributes:
        t_h: hours from the run start.
        label: what happened ("short at 0.2 mA/cm²").
    """

    t_h: float
    label: str


def conditions_title(settings: Mapping[str, Any]) -> str:
    """A figure title with the test conditions: material, cell, pressure, temperature.

    A CCD or a cycle life "means nothing without the pressure and temperature it was measured at"
    (DOMAIN.md §1), so every figure carries them.
    """
    cell = settings.get("cell") or {}
    parts = []
    material = cell.get("material")
    kind = cell.get("kind")
    if kind == "full":
        electrodes = " | ".join(str(x) for x in (cell.get("cathode"), material, cell.get("anode", "Li")) if x)
        parts.append(f"{electrodes} full cell")
    elif material:
        parts.append(f"Li | {material} | Li" if kind == "symmetric" else str(material))
    if cell.get("thickness_mm") is not None:
        parts.append(f"{cell['thickness_mm']:g} mm")
    if settings.get("pressure_MPa") is not None:
        parts.append(f"{settings['pressure_MPa']:g} MPa")
    if settings.get("temperature_C") is not None:
        parts.append(f"{settings['temperature_C']:g} °C")
    return " · ".join(parts) if parts else str(settings.get("protocol", "labctl run"))


def _figure(rows: int = 1, *, height_in: float = 6.0, sharex: bool = True) -> tuple[Figure, Any]:
    fig = Figure(figsize=(9.0, height_in), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=sharex) if rows > 1 else fig.subplots()
    return fig, axes


def _save(fig: Figure, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _envelope(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ~_MAX_POINTS points: per-bin minimum and maximum, in time order."""
    if len(t) <= _MAX_POINTS:
        return t, y
    bins = _MAX_POINTS // 2
    edges = np.linspace(0, len(t), bins + 1).astype(int)
    out_t, out_y = [], []
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        chunk = y[lo:hi]
        i_min, i_max = lo + int(np.argmin(chunk)), lo + int(np.argmax(chunk))
        for i in sorted((i_min, i_max)):
            out_t.append(t[i])
            out_y.append(y[i])
    return np.array(out_t), np.array(out_y)


# --- 0. stack pressure against time -------------------------------------------------------------


def plot_pressure(
    path: Path,
    *,
    t_h: Sequence[float],
    pressure_pa: Sequence[float],
    voltage_v: Sequence[float],
    title: str,
    band_mpa: float = 0.1,
) -> Path:
    """Measured stack pressure (top) with its median ± `band_mpa`, and the voltage (bottom).

    Shows how well the rig held its set-point through the test, or, at a fixed gap, how the
    pressure breathes with the cell (DOMAIN.md §2.2).
    """
    fig, (top, bottom) = _figure(2, sharex=True)
    t = np.asarray(t_h, dtype=float)
    p = np.asarray(pressure_pa, dtype=float) / 1e6
    middle = float(np.median(p))
    top.plot(*_envelope(t, p), color="tab:purple", lw=1.0)
    top.axhspan(
        middle - band_mpa,
        middle + band_mpa,
        color="tab:purple",
        alpha=0.12,
        label=f"{middle:.2f} ± {band_mpa:g} MPa",
    )
    top.set_ylabel("stack pressure / MPa")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(*_envelope(t, np.asarray(voltage_v, dtype=float)), color="black", lw=0.8)
    bottom.set_ylabel("voltage / V")
    bottom.set_xlabel("test time / h")
    bottom.grid(alpha=0.3)
    return _save(fig, path, title)


# --- 1. voltage and current density against time ------------------------------------------------


def plot_voltage_current(
    path: Path,
    *,
    t_h: Sequence[float],
    voltage_v: Sequence[float],
    current_a: Sequence[float],
    area_cm2: float | None,
    title: str,
    short: Marker | None = None,
    soft_shorts: Sequence[float] = (),
    critical_stripping_ma_cm2: float | None = None,
    critical_stripping_t_h: float | None = None,
    limits: Sequence[Marker] = (),
    stopped: Marker | None = None,
    positive_means: str | None = None,
) -> Path:
    """Voltage (top) and current density (bottom, the staircase) against test time.

    Args:
        path: the PNG to write.
        t_h: hours from the run start, per sample.
        voltage_v: cell voltage per sample, V (drawn in mV when it stays within ±1 V).
        current_a: current per sample, A (drawn as mA/cm² with the area, else mA).
        area_cm2: cell area, cm², for current density.
        title: test conditions (see `conditions_title`).
        short: where the cell shorted (a red line across both panels).
        soft_shorts: hours of recorded soft shorts (orange marks).
        critical_stripping_ma_cm2: the critical stripping current, mA/cm² (a dotted level).
        critical_stripping_t_h: when the stripping polarization started to rise, h.
        limits: safety-limit events to mark.
        stopped: where an aborted, failed or alarmed run ended (a black dash-dot line).
        positive_means: what a positive current does, for the axis label ("strips the WE",
            "charge"): sign conventions differ between labs, so the figure states its own.
    """
    t = np.asarray(t_h, dtype=float)
    v = np.asarray(voltage_v, dtype=float)
    i = np.asarray(current_a, dtype=float)
    millivolts = bool(len(v)) and float(np.nanmax(np.abs(v))) < 1.0
    v_plot = v * 1e3 if millivolts else v
    density = i * 1e3 / area_cm2 if area_cm2 else i * 1e3
    zoom = _short_window(t, short.t_h) if short is not None else None
    fig = Figure(figsize=(10.0 if zoom else 9.0, 6.5), dpi=DPI, layout="constrained")
    if zoom:  # a right-hand column zooms on the minutes around the short, which hours of test hide
        axes = fig.subplot_mosaic([["v", "vz"], ["i", "iz"]], width_ratios=[3, 1])
        ax_v, ax_i = axes["v"], axes["i"]
        ax_i.sharex(ax_v)
        axes["vz"].sharex(axes["iz"])
        ax_v.tick_params(labelbottom=False)
    else:
        ax_v, ax_i = fig.subplots(2, 1, sharex=True)
    v_label = "voltage / mV" if millivolts else "voltage / V"
    quantity = "current density / mA cm⁻²" if area_cm2 else "current / mA"
    i_label = f"{quantity}\n(+ {positive_means})" if positive_means else quantity
    ax_v.plot(*_envelope(t, v_plot), color="black", lw=0.8)
    ax_i.plot(*_envelope(t, density), color=_STRIP, lw=1.0, drawstyle="steps-post")
    ax_v.set_ylabel(v_label)
    ax_i.set_ylabel(i_label)
    ax_i.set_xlabel("test time / h")
    if len(v) and float(np.nanmin(v)) < 0.0 < float(np.nanmax(v)):  # a zero line only where it is in range
        ax_v.axhline(0.0, color="0.7", lw=0.6)
    ax_i.axhline(0.0, color="0.7", lw=0.6)
    for t_soft in soft_shorts:
        ax_v.axvline(t_soft, color="orange", lw=0.8, ls=":")
    if soft_shorts:
        ax_v.plot([], [], color="orange", ls=":", label=f"soft short ({len(soft_shorts)})")
    if critical_stripping_ma_cm2 is not None:
        ax_i.axhline(
            critical_stripping_ma_cm2,
            color="purple",
            ls=":",
            lw=1.2,
            label=f"critical stripping current {critical_stripping_ma_cm2:g} mA/cm²",
        )
        ax_i.legend(loc="lower left", fontsize=9)
        if critical_stripping_t_h is not None:
            ax_v.axvline(
                critical_stripping_t_h, color="purple", ls=":", lw=1.0, label="stripping polarization rises"
            )
    for limit in limits:
        for ax in (ax_v, ax_i):
            ax.axvline(limit.t_h, color="darkorange", lw=1.2)
        ax_v.plot([], [], color="darkorange", label=limit.label)
    if short is not None:
        for ax in (ax_v, ax_i):
            ax.axvline(short.t_h, color="red", lw=1.4, ls="--")
        ax_v.plot([], [], color="red", ls="--", label=short.label)
    if stopped is not None:
        for ax in (ax_v, ax_i):
            ax.axvline(stopped.t_h, color="black", lw=1.2, ls="-.")
        ax_v.plot([], [], color="black", ls="-.", label=stopped.label)
    if ax_v.get_legend_handles_labels()[0]:
        ax_v.legend(loc="upper left", fontsize=9)
    ax_v.grid(alpha=0.3)
    ax_i.grid(alpha=0.3)
    if zoom and short is not None:
        inside = (t >= zoom[0]) & (t <= zoom[1])
        ax_vz, ax_iz = axes["vz"], axes["iz"]
        ax_vz.plot(t[inside], v_plot[inside], color="black", lw=0.9)
        ax_iz.plot(t[inside], density[inside], color=_STRIP, lw=1.0, drawstyle="steps-post")
        for ax in (ax_vz, ax_iz):
            for t_soft in soft_shorts:
                ax.axvline(t_soft, color="orange", lw=0.8, ls=":")
            ax.axvline(short.t_h, color="red", lw=1.4, ls="--")
            ax.axhline(0.0, color="0.7", lw=0.6)
            ax.grid(alpha=0.3)
            ax.set_xlim(*zoom)
            ax.tick_params(labelsize=8)
        ax_vz.set_title(f"the last {60 * (short.t_h - zoom[0]):.0f} min before the short", fontsize=9)
        ax_vz.tick_params(labelbottom=False)
        ax_iz.set_xlabel("test time / h")
    return _save(fig, path, title)


def _short_window(t: np.ndarray, t_short: float) -> tuple[float, float] | None:
    """The time window (h) to zoom on around a short, or None when the main axis shows it well."""
    if len(t) < 2:
        return None
    span = float(t[-1] - t[0])
    before = max(0.1, 0.01 * span)  # h
    if span < 20 * before:
        return None
    window = (t_short - before, t_short + before / 3)
    if int(((t >= window[0]) & (t <= window[1])).sum()) < 2:
        return None
    return window


# --- 2. Nyquist and Bode -------------------------------------------------------------------------


def _pick(items: Sequence[Any], most: int) -> list[int]:
    """Indices of at most `most` items, evenly spread, always the first and the last."""
    if len(items) <= most:
        return list(range(len(items)))
    return sorted({round(float(x)) for x in np.linspace(0, len(items) - 1, most)})


def _spectrum_label(spectrum: Spectrum, t_h: float | None) -> str:
    parts = [f"#{spectrum.number}"]
    if t_h is not None:
        parts.append(f"{t_h:.3g} h")
    if not math.isnan(spectrum.pressure_pa):
        parts.append(f"{spectrum.pressure_pa / 1e6:g} MPa")
    return ", ".join(parts)


def plot_nyquist(
    path: Path,
    *,
    spectra: Sequence[Spectrum],
    fits: Sequence[EisFit | None],
    title: str,
    area_cm2: float | None = None,
    times_h: Sequence[float] | None = None,
    most: int = 6,
) -> Path:
    """Nyquist plot, −Z″ against Z′ on equal axes, data as markers and each fit as a line.

    Args:
        path: the PNG to write.
        spectra: the spectra (at most `most`, evenly chosen, are drawn).
        fits: the fit of each spectrum (None where it failed).
        title: test conditions.
        area_cm2: cell area, cm²: impedance drawn area-specific, Ω·cm².
        times_h: hours from the run start of each spectrum, for the legend.
        most: how many spectra to draw at most.
    """
    scale = area_cm2 or 1.0
    unit = "Ω·cm²" if area_cm2 else "Ω"
    fig, ax = _figure(1, height_in=6.5)
    chosen = _pick(spectra, most)
    colors = [_color(k, len(chosen)) for k in range(len(chosen))]
    for color, index in zip(colors, chosen, strict=True):
        spectrum, fit = spectra[index], fits[index]
        z = spectrum.z_ohm * scale
        label = _spectrum_label(spectrum, None if times_h is None else times_h[index])
        ax.plot(z.real, -z.imag, "o", ms=4, mfc="none", color=color, label=label)
        if fit is not None:
            f = np.logspace(
                math.log10(spectrum.frequency_hz.max()), math.log10(spectrum.frequency_hz.min()), 400
            )
            zf = fit.impedance(f) * scale
            ax.plot(zf.real, -zf.imag, "-", color=color, lw=1.2)
    if chosen:
        first = spectra[chosen[0]]
        _annotate_frequencies(ax, first, scale)
        _fit_note(ax, first, fits[chosen[0]], area_cm2)
    ax.plot([], [], "-", color="0.3", label="circuit fit")
    ax.set_xlabel(f"Z′ / {unit}")
    ax.set_ylabel(f"−Z″ / {unit}")
    ax.set_aspect("equal", adjustable="datalim")
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path, title)


def _color(k: int, n: int) -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"](0.1 + 0.75 * (k / max(n - 1, 1)))


def _annotate_frequencies(ax: Axes, spectrum: Spectrum, scale: float) -> None:
    """Label the point nearest each decade (1 MHz, 10 kHz, 100 Hz, 1 Hz …) of one spectrum."""
    f = spectrum.frequency_hz
    z = spectrum.z_ohm * scale
    decades = np.arange(math.floor(math.log10(f.min())), math.ceil(math.log10(f.max())) + 1)
    span = max(float(np.ptp(z.real)), float(np.ptp(z.imag)), 1e-12)
    labelled: list[complex] = []
    for decade in decades[::2] if len(decades) > 6 else decades:
        index = int(np.argmin(np.abs(np.log10(f) - decade)))
        if abs(math.log10(f[index]) - decade) > 0.15:
            continue
        if any(abs(z[index] - other) < 0.06 * span for other in labelled):  # would overlap a label
            continue
        labelled.append(z[index])
        ax.annotate(
            _frequency_text(f[index]),
            xy=(z.real[index], -z.imag[index]),
            xytext=(3, 6),
            textcoords="offset points",
            fontsize=8,
            color="0.25",
        )


def _frequency_text(hz: float) -> str:
    for factor, unit in ((1e6, "MHz"), (1e3, "kHz"), (1.0, "Hz"), (1e-3, "mHz")):
        if hz >= factor * 0.999:
            return f"{hz / factor:.3g} {unit}"
    return f"{hz:.2g} Hz"


def _fit_note(ax: Axes, spectrum: Spectrum, fit: EisFit | None, area_cm2: float | None) -> None:
    if fit is None:
        return
    scale, unit = (area_cm2, "Ω·cm²") if area_cm2 else (1.0, "Ω")
    lines = [f"fit of #{spectrum.number}: {fit.model}"]
    for name in ("R_bulk", "R_gb", "R_int"):
        p = fit.parameters.get(name)
        if p is not None:
            lines.append(f"{name} = {p.value * scale:.4g} ± {p.sigma * scale:.2g} {unit}")
    lines.append(f"RMS residual {fit.rms_relative:.2%}" + ("" if fit.acceptable else " (not acceptable)"))
    ax.text(
        0.98,
        0.03,
        "\n".join(lines),
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9},
    )


def plot_bode(
    path: Path,
    *,
    spectra: Sequence[Spectrum],
    fits: Sequence[EisFit | None],
    title: str,
    times_h: Sequence[float] | None = None,
    most: int = 6,
) -> Path:
    """Bode plot: |Z| (log) and phase against frequency, data and fits."""
    fig, (ax_m, ax_p) = _figure(2, height_in=6.5)
    chosen = _pick(spectra, most)
    for k, index in enumerate(chosen):
        spectrum, fit = spectra[index], fits[index]
        color = _color(k, len(chosen))
        f, z = spectrum.frequency_hz, spectrum.z_ohm
        label = _spectrum_label(spectrum, None if times_h is None else times_h[index])
        ax_m.loglog(f, np.abs(z), "o", ms=3.5, mfc="none", color=color, label=label)
        ax_p.semilogx(f, np.degrees(np.angle(z)), "o", ms=3.5, mfc="none", color=color)
        if fit is not None:
            ff = np.logspace(math.log10(f.max()), math.log10(f.min()), 300)
            zf = fit.impedance(ff)
            ax_m.loglog(ff, np.abs(zf), "-", color=color, lw=1.1)
            ax_p.semilogx(ff, np.degrees(np.angle(zf)), "-", color=color, lw=1.1)
    ax_m.set_ylabel("|Z| / Ω")
    ax_p.set_ylabel("phase / °")
    ax_p.set_xlabel("frequency / Hz")
    for ax in (ax_m, ax_p):
        ax.grid(alpha=0.3, which="both")
    if chosen:
        ax_m.legend(fontsize=8)
    return _save(fig, path, title)


# --- 3. capacity and Coulombic efficiency -------------------------------------------------------


def plot_capacity(path: Path, *, cycles: Sequence[CycleMetrics], title: str) -> Path:
    """Charge and discharge capacity (left) and Coulombic efficiency (right) against cycle.

    Capacity is drawn per gram of active material when every cycle has it, else per cm², else in
    mAh, so the axis says what was known.
    """
    if cycles and all(c.discharge_mah_g is not None or c.charge_mah_g is not None for c in cycles):
        attr, unit = "mah_g", "mAh g⁻¹"
    elif cycles and all(c.discharge_mah_cm2 is not None or c.charge_mah_cm2 is not None for c in cycles):
        attr, unit = "mah_cm2", "mAh cm⁻²"
    else:
        attr, unit = "mah", "mAh"
    n = [c.number for c in cycles]
    charge = [_nan(getattr(c, f"charge_{attr}")) for c in cycles]
    discharge = [_nan(getattr(c, f"discharge_{attr}")) for c in cycles]
    ce = [_nan(None if c.coulombic_efficiency is None else 100 * c.coulombic_efficiency) for c in cycles]
    fig, ax = _figure(1, height_in=5.5)
    ax.plot(n, charge, "^", color=_PLATE, mfc="none", label="charge")
    ax.plot(n, discharge, "v", color=_STRIP, label="discharge")
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"capacity / {unit}")
    highest = max((x for x in charge + discharge if not math.isnan(x)), default=0.0)
    ax.set_ylim(0, highest * 1.1 if highest > 0 else 1.0)  # from zero, with room above the markers
    ax.grid(alpha=0.3)
    ax_ce = ax.twinx()
    ax_ce.plot(n, ce, "s-", color="0.35", ms=3.5, lw=0.8, label="Coulombic efficiency")
    ax_ce.set_ylabel("Coulombic efficiency / %")
    finite = [x for x in ce if not math.isnan(x)]
    if finite:
        ax_ce.set_ylim(min(min(finite) - 2.0, 90.0), max(max(finite) + 1.0, 101.0))
    handles = ax.get_legend_handles_labels()[0] + ax_ce.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax_ce.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="lower left", fontsize=9)
    if len(n) and max(n) <= 30:
        ax.set_xticks(range(min(n), max(n) + 1, max(1, (max(n) - min(n)) // 10 or 1)))
    return _save(fig, path, title)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


# --- 4. R_int over time (and pressure) ----------------------------------------------------------


def plot_impedance_trend(
    path: Path, *, points: Sequence[ImpedancePoint], title: str, area_cm2: float | None, by_pressure: bool
) -> Path:
    """R_int and R_bulk (±1σ) against time, and against stack pressure when it varied.

    Only acceptable fits are drawn as points; spectra that could not be fitted are listed as
    ticks on the time axis, so a gap is explained rather than hidden.
    """
    scale, unit = (area_cm2, "Ω·cm²") if area_cm2 else (1.0, "Ω")
    good = [p for p in points if p.fit is not None and p.fit.acceptable]
    bad = [p for p in points if p.fit is None or not p.fit.acceptable]
    fig, axes = _figure(2 if by_pressure else 1, height_in=7.5 if by_pressure else 5.0, sharex=False)
    ax_t = axes[0] if by_pressure else axes
    for name, color, label in (("R_int", _PLATE, "R_int"), ("R_bulk", _STRIP, "R_bulk")):
        xs = [p.t_h for p in good]
        ys = [p.fit.parameters[name].value * scale for p in good if p.fit is not None]
        es = [p.fit.parameters[name].sigma * scale for p in good if p.fit is not None]
        ax_t.errorbar(xs, ys, yerr=es, fmt="o-", color=color, ms=4, lw=0.8, capsize=3, label=label)
    for p in bad:
        ax_t.axvline(p.t_h, color="0.6", lw=0.8, ls=":")
    if bad:
        ax_t.plot([], [], color="0.6", ls=":", label=f"no acceptable fit ({len(bad)})")
    ax_t.set_xlabel("test time / h")
    ax_t.set_ylabel(f"resistance / {unit}")
    ax_t.set_ylim(bottom=0)
    ax_t.grid(alpha=0.3)
    ax_t.legend(fontsize=9)
    if by_pressure:
        ax_p = axes[1]
        for name, color in (("R_int", _PLATE), ("R_bulk", _STRIP)):
            xs = [p.pressure_mpa for p in good]
            ys = [p.fit.parameters[name].value * scale for p in good if p.fit is not None]
            es = [p.fit.parameters[name].sigma * scale for p in good if p.fit is not None]
            ax_p.errorbar(xs, ys, yerr=es, fmt="o", color=color, ms=4, capsize=3, label=name)
            if len(xs) > 1:  # connect in measurement order: a sweep up and down shows hysteresis
                ax_p.plot(xs, ys, "-", color=color, lw=0.6, alpha=0.6)
        ax_p.set_xlabel("stack pressure / MPa")
        ax_p.set_ylabel(f"resistance / {unit}")
        ax_p.set_ylim(bottom=0)
        ax_p.grid(alpha=0.3)
        ax_p.legend(fontsize=9)
    return _save(fig, path, title)


# --- 5. polarization per half-cycle -------------------------------------------------------------


def plot_polarization(
    path: Path,
    *,
    half_cycles: Sequence[HalfCyclePolarization],
    title: str,
    failure: Marker | None = None,
) -> Path:
    """Late polarization of each half-cycle against time, stripping and plating apart.

    When the current density changes between half-cycles (a CCD ramp) it is drawn as a grey
    staircase on a second axis, so a polarization that rises with the current is not mistaken for
    one that rises over time at a constant current (voids, contact loss). At one density, the
    axis zooms on the data so a slow drift is visible, and the density goes into the legend.
    """
    fig, ax = _figure(1, height_in=5.5)
    densities = [h.density_ma_cm2 for h in half_cycles if not math.isnan(h.density_ma_cm2)]
    one_density = len(set(densities)) == 1
    suffix = f" at {densities[0]:g} mA/cm²" if one_density else ""
    for direction, color, marker, fill, label in (
        ("strip", _STRIP, "o", True, "stripping (WE, I > 0)"),
        ("plate", _PLATE, "s", False, "plating (WE, I < 0)"),
    ):
        part = [h for h in half_cycles if h.direction == direction and h.late_mv is not None]
        ax.plot(
            [h.t_mid_h for h in part],
            [h.late_mv for h in part],
            marker + "-",
            color=color,
            ms=4 if fill else 6,
            mfc=color if fill else "none",  # open plating marks keep equal values both visible
            lw=0.8,
            label=label + suffix,
        )
        unfinished = [h for h in part if not h.completed]
        if unfinished:
            ax.plot(
                [h.t_mid_h for h in unfinished],
                [h.late_mv for h in unfinished],
                marker,
                ms=10,
                mfc="none",
                color="black",
            )
    if any(not h.completed for h in half_cycles):
        ax.plot([], [], "o", ms=10, mfc="none", color="black", label="cut short")
    ax.set_xlabel("test time / h")
    ax.set_ylabel("polarization |V| (last fifth) / mV")
    values = [h.late_mv for h in half_cycles if h.late_mv is not None]
    if not values or min(values) < 0.5 * max(values):
        ax.set_ylim(bottom=0)  # from zero when the data span a wide range anyway
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if densities and not one_density:
        ax_j = ax.twinx()
        edges = [h.t_start_h for h in half_cycles] + [half_cycles[-1].t_end_h]
        ax_j.stairs(
            [h.density_ma_cm2 for h in half_cycles], edges, color="0.6", lw=1.0, label="|current density|"
        )
        ax_j.set_ylabel("|current density| / mA cm⁻²", color="0.4")
        ax_j.set_ylim(bottom=0)
        h2, l2 = ax_j.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize=9, framealpha=0.9)
    if failure is not None:
        ax.axvline(failure.t_h, color="red", ls="--", lw=1.4)
        ax.annotate(
            failure.label,
            xy=(failure.t_h, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(-4, 0),
            textcoords="offset points",
            ha="right",
            color="red",
            fontsize=9,
            rotation=90,
            va="center",
        )
    return _save(fig, path, title)


# --- 7. CCD per cell against a condition --------------------------------------------------------


def plot_ccd_per_cell(
    path: Path, *, condition: Sequence[float], xlabel: str, cells: Sequence[CellCcd], title: str
) -> Path:
    """CCD (completed level) and the density that shorted each cell, against the varied condition.

    A cell that never shorted gives only a lower bound: drawn as an open triangle pointing up.
    """
    fig, ax = _figure(1, height_in=4.5)
    x = np.asarray(condition, dtype=float)
    ccd = np.array([_nan(c.result.ccd_ma_cm2) for c in cells])
    short = np.array([_nan(c.result.short_at_ma_cm2) for c in cells])
    shorted = ~np.isnan(short)
    ax.plot(x[shorted], ccd[shorted], "o-", color=_STRIP, ms=6, label="CCD (last level completed)")
    ax.plot(x[shorted], short[shorted], "x", color=_PLATE, ms=7, label="shorted at")
    if (~shorted).any():
        ax.plot(x[~shorted], ccd[~shorted], "^", mfc="none", color=_STRIP, ms=8, label="no short: CCD ≥")
    for xi, cell in zip(x, cells, strict=True):
        ax.annotate(
            f"cell {cell.cell}",
            (xi, _nan(cell.result.ccd_ma_cm2)),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=7,
            color="0.4",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("current density / mA cm⁻²")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, path, title)
