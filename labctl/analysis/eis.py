"""Equivalent-circuit fitting of one impedance spectrum: R_bulk, R_gb and R_int with 1σ uncertainties.

The circuit is the one solid-state papers use (DOMAIN.md §2.4):

    R_bulk + (R_gb ∥ CPE_gb) + (R_int ∥ CPE_int) [+ W]

with Z_CPE = 1 / (Q·(jω)^α) and a semi-infinite Warburg Z_W = A_W / √(jω). When the grain-boundary
arc is not resolved (at room temperature it usually sits above 1 MHz for sulfides, so only its
intercept is visible) the fit falls back to R_bulk + (R_int ∥ CPE_int) [+ W]; R_bulk then includes
R_gb, which is what a paper would report as "bulk" from the same spectrum.

Method: scipy.optimize.least_squares on complex residuals weighted by |Z| (modulus weighting:
every point counts by its relative error, so the small high-frequency intercept is not drowned by
the large low-frequency arc). Resistances, CPE coefficients and A_W are fitted as logarithms, which
keeps them positive and makes parameters spanning ten decades equally well conditioned. The 1σ
uncertainties come from the Jacobian at the optimum, cov = s²·(JᵀJ)⁻¹ with s² = χ²/(2N − p)
(the residual variance), propagated from log space (σ_R = R·σ_lnR).

Why not impedance.py: it would add a dependency (with its own plotting helpers) to fit one fixed
circuit, while scipy is already a dependency; owning the fit lets us weight by modulus, bound the
parameters in log space, take the uncertainties from an analytic Jacobian, and decide ourselves
when the data support a grain-boundary element.

Sign convention: the canonical record stores Im(Z) in the math convention (capacitive negative,
drivers.base.EisPoint). A spectrum whose imaginary part is mostly positive is almost surely −Im(Z)
(BioLogic MPT) fed in by mistake; the fit refuses it with `EisSignError` instead of fitting
nonsense.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import find_peaks

from labctl.data import Journal, Sample
from labctl.errors import LabctlError

ModelChoice = Literal["auto", "two_arc", "one_arc"]

_LOG_R_BOUNDS = (math.log(1e-6), math.log(1e12))  # Ω
_LOG_Q_BOUNDS = (math.log(1e-15), math.log(1e2))  # F·s^(α-1)
_LOG_W_BOUNDS = (math.log(1e-6), math.log(1e12))  # Ω·s^-½
_ALPHA_BOUNDS = (0.4, 1.0)
_ARC_PROMINENCE = math.log(1.15)
"""An arc counts when −Im(Z) rises 15 % above its surroundings (prominence of ln(−Im Z))."""
_NOISE_FLOOR = 0.05
"""−Im(Z) below 5 % of |Z| is floored before looking for arcs: there the noise draws false apexes."""
_EXTRA_ARC_GAIN = 1.5
"""A grain-boundary arc that is not visible must lower the reduced χ² at least this much."""

_UNITS = {
    "R_bulk": "Ω",
    "R_gb": "Ω",
    "Q_gb": "F·s^(α-1)",
    "alpha_gb": "",
    "R_int": "Ω",
    "Q_int": "F·s^(α-1)",
    "alpha_int": "",
    "A_W": "Ω·s^-½",
}


class EisFitError(LabctlError):
    """A spectrum cannot be fitted (too few points, no arc, wrong sign convention)."""


class EisSignError(EisFitError):
    """The imaginary part has the wrong sign: −Im(Z) (BioLogic style) where Im(Z) was expected."""


@dataclass(frozen=True, slots=True)
class Parameter:
    """One fitted circuit element.

    Attributes:
        name: R_bulk, R_gb, Q_gb, alpha_gb, R_int, Q_int, alpha_int or A_W.
        value: best estimate, in `unit`.
        sigma: 1σ uncertainty in `unit` (inf when the data do not determine it).
        unit: Ω for resistances, F·s^(α-1) for CPE coefficients, Ω·s^-½ for A_W, "" for α.
    """

    name: str
    value: float
    sigma: float
    unit: str

    @property
    def relative_sigma(self) -> float:
        """σ / |value| (inf for a zero value)."""
        return self.sigma / abs(self.value) if self.value else math.inf


@dataclass
class EisFit:
    """The result of fitting one spectrum.

    Attributes:
        model: the circuit fitted, in words.
        parameters: fitted elements by name (see Parameter).
        chi2: modulus-weighted sum of squared residuals, Σ(|ΔZ|/|Z|)².
        chi2_reduced: chi2 / (2N − p): the squared relative noise level if the model is right.
        rms_relative: root-mean-square relative residual per point (0.01 = 1 %).
        n_points: points used (inductive high-frequency points are left out).
        gb_resolved: the grain-boundary arc was fitted as its own element.
        warburg: a Warburg element was included for a low-frequency diffusion tail.
        acceptable: the fit describes the data and determines R_bulk and R_int (no problems).
        problems: why the fit is not acceptable (empty when it is).
        notes: what the fit had to assume (e.g. an unresolved grain-boundary arc).
    """

    model: str
    parameters: dict[str, Parameter]
    chi2: float
    chi2_reduced: float
    rms_relative: float
    n_points: int
    gb_resolved: bool
    warburg: bool
    acceptable: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def r_bulk(self) -> Parameter:
        """Bulk (high-frequency intercept) resistance, Ω; includes R_gb when that arc is unresolved."""
        return self.parameters["R_bulk"]

    @property
    def r_int(self) -> Parameter:
        """Interfacial (charge-transfer) resistance, Ω; in a symmetric cell it covers both interfaces."""
        return self.parameters["R_int"]

    @property
    def r_gb(self) -> Parameter | None:
        """Grain-boundary resistance, Ω, when its arc was resolved."""
        return self.parameters.get("R_gb")

    def impedance(self, frequency_hz: Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted circuit's impedance (complex Ω, math sign) at these frequencies, for plots."""
        values = {name: p.value for name, p in self.parameters.items()}
        return circuit_impedance(np.asarray(frequency_hz, dtype=float), **values)

    def as_dict(self, area_cm2: float | None = None) -> dict[str, Any]:
        """JSON-ready summary; with `area_cm2`, resistances also area-specific (Ω·cm²)."""
        out: dict[str, Any] = {
            "model": self.model,
            "acceptable": self.acceptable,
            "chi2": self.chi2,
            "chi2_reduced": self.chi2_reduced,
            "rms_relative": self.rms_relative,
            "n_points": self.n_points,
            "gb_resolved": self.gb_resolved,
            "warburg": self.warburg,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }
        for name, p in self.parameters.items():
            suffix = "_ohm" if p.unit == "Ω" else ""
            out[f"{name}{suffix}"] = p.value
            out[f"{name}{suffix}_sigma"] = p.sigma
            if area_cm2 and p.unit == "Ω":
                out[f"{name}_ohm_cm2"] = p.value * area_cm2
                out[f"{name}_ohm_cm2_sigma"] = p.sigma * area_cm2
        return out


def circuit_impedance(
    frequency_hz: np.ndarray,
    *,
    R_bulk: float,  # element names as battery papers write them
    R_int: float,
    Q_int: float,
    alpha_int: float,
    R_gb: float | None = None,
    Q_gb: float | None = None,
    alpha_gb: float | None = None,
    A_W: float | None = None,
) -> np.ndarray:
    """Impedance (complex Ω, math sign) of R_bulk + (R_gb ∥ CPE_gb) + (R_int ∥ CPE_int) [+ W].

    Used both to fit and to generate synthetic spectra with known element values (tests, plots).

    Args:
        frequency_hz: frequencies in Hz.
        R_bulk: series resistance, Ω.
        R_int: interfacial resistance, Ω.
        Q_int: interfacial CPE coefficient, F·s^(α-1) (a capacitance in F when α = 1).
        alpha_int: interfacial CPE exponent (1 = ideal capacitor).
        R_gb: grain-boundary resistance, Ω (omit for the one-arc circuit).
        Q_gb: grain-boundary CPE coefficient.
        alpha_gb: grain-boundary CPE exponent.
        A_W: Warburg coefficient, Ω·s^-½ (omit for no Warburg).
    """
    jw = 1j * 2.0 * np.pi * np.asarray(frequency_hz, dtype=float)
    z = R_bulk + R_int / (1.0 + R_int * Q_int * jw**alpha_int)
    if R_gb is not None and Q_gb is not None and alpha_gb is not None:
        z = z + R_gb / (1.0 + R_gb * Q_gb * jw**alpha_gb)
    if A_W is not None:
        z = z + A_W / np.sqrt(jw)
    return np.asarray(z, dtype=complex)


# --- spectra from a journal ---------------------------------------------------------------------


@dataclass
class Spectrum:
    """One impedance spectrum from a journal (its points, high → low frequency).

    Attributes:
        number: the spectrum's number in the run (the `spectrum` value of its samples).
        step: the plan step that measured it.
        t_ns: UTC time of its first point, ns.
        frequency_hz: frequencies, Hz.
        z_ohm: complex impedance, Ω, math sign (capacitive negative).
        pressure_pa: mean stack pressure during the spectrum, Pa (nan when not logged).
        temperature_k: mean temperature during the spectrum, K (nan when not logged).
    """

    number: int
    step: int
    t_ns: int
    frequency_hz: np.ndarray
    z_ohm: np.ndarray
    pressure_pa: float = math.nan
    temperature_k: float = math.nan

    def fit(self, **options: Any) -> EisFit:
        """Fit this spectrum (options as for `fit_spectrum`)."""
        return fit_spectrum(self.frequency_hz, self.z_ohm.real, self.z_ohm.imag, **options)


def spectra_from_journal(journal: Journal) -> list[Spectrum]:
    """Group a journal's "eis" samples into spectra, in the order they were measured."""
    points: dict[int, list[Sample]] = {}
    for sample in journal.samples("eis"):
        number = int(sample.values.get("spectrum", 0))
        points.setdefault(number, []).append(sample)
    spectra = []
    for number, samples in points.items():
        samples.sort(key=lambda s: -s.values["frequency_hz"])
        spectra.append(
            Spectrum(
                number=number,
                step=samples[0].step,
                t_ns=min(s.t_ns for s in samples),
                frequency_hz=np.array([s.values["frequency_hz"] for s in samples]),
                z_ohm=np.array([complex(s.values["z_real_ohm"], s.values["z_imag_ohm"]) for s in samples]),
                pressure_pa=_mean(samples, "pressure_pa"),
                temperature_k=_mean(samples, "temperature_k"),
            )
        )
    spectra.sort(key=lambda s: s.t_ns)
    return spectra


def _mean(samples: list[Sample], key: str) -> float:
    values = [s.values[key] for s in samples if key in s.values]
    return float(np.mean(values)) if values else math.nan


# --- the fit -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Which elements a model has; the parameter vector is log R, log Q, α, … in this order."""

    two_arc: bool
    warburg: bool

    @property
    def names(self) -> list[str]:
        names = ["R_bulk"]
        if self.two_arc:
            names += ["R_gb", "Q_gb", "alpha_gb"]
        names += ["R_int", "Q_int", "alpha_int"]
        if self.warburg:
            names.append("A_W")
        return names

    @property
    def description(self) -> str:
        text = "R_bulk + (R_gb ∥ CPE_gb) + (R_int ∥ CPE_int)" if self.two_arc else "R_bulk + (R_int ∥ CPE)"
        return text + (" + W" if self.warburg else "")

    def to_values(self, theta: np.ndarray) -> dict[str, float]:
        return {
            name: float(x) if name.startswith("alpha") else float(np.exp(x))
            for name, x in zip(self.names, theta, strict=True)
        }

    def bounds(self) -> tuple[list[float], list[float]]:
        lower, upper = [], []
        for name in self.names:
            lo, hi = (
                _ALPHA_BOUNDS
                if name.startswith("alpha")
                else _LOG_Q_BOUNDS
                if name.startswith("Q")
                else _LOG_W_BOUNDS
                if name == "A_W"
                else _LOG_R_BOUNDS
            )
            lower.append(lo)
            upper.append(hi)
        return lower, upper


@dataclass(frozen=True)
class _Arc:
    """An arc found in the data: where it starts and ends on the real axis, and its apex."""

    re_start: float
    re_end: float
    apex_hz: float
    apex_height: float


@dataclass(frozen=True)
class _Shape:
    """What the spectrum looks like before fitting: intercept, arcs, diffusion tail."""

    r_hf: float
    arcs: list[_Arc]
    tail: bool
    f_max_hz: float


def fit_spectrum(
    frequency_hz: Sequence[float] | np.ndarray,
    z_real_ohm: Sequence[float] | np.ndarray,
    z_imag_ohm: Sequence[float] | np.ndarray,
    *,
    model: ModelChoice = "auto",
    warburg: bool | None = None,
    max_rms_relative: float = 0.05,
    max_relative_sigma: float = 0.25,
) -> EisFit:
    """Fit the solid-electrolyte equivalent circuit to one spectrum.

    Args:
        frequency_hz: frequencies, Hz (any order).
        z_real_ohm: Re(Z), Ω.
        z_imag_ohm: Im(Z), Ω, math sign (capacitive negative) as in drivers.base.EisPoint.
        model: "auto" fits two arcs when the data show two and falls back to one arc when the
            grain-boundary arc is not resolved (or not determined by the fit); "two_arc" or
            "one_arc" force a circuit.
        warburg: include a Warburg element; None decides from a rising low-frequency tail.
        max_rms_relative: acceptance limit on the RMS relative residual (0.05 = 5 % of |Z|).
        max_relative_sigma: acceptance limit on σ/value for R_bulk and R_int.

    Returns:
        The fit; check `acceptable` and `problems` before trusting the numbers.

    Raises:
        EisSignError: the imaginary part is mostly positive (−Im(Z) given instead of Im(Z)).
        EisFitError: too few points, non-finite values, or no capacitive arc at all.
    """
    f = np.asarray(frequency_hz, dtype=float)
    z = np.asarray(z_real_ohm, dtype=float) + 1j * np.asarray(z_imag_ohm, dtype=float)
    if f.shape != z.shape or f.ndim != 1:
        raise EisFitError("frequency, Re(Z) and Im(Z) must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(z)) and np.all(f > 0)):
        raise EisFitError("the spectrum has non-finite values or non-positive frequencies")
    order = np.argsort(f)[::-1]  # high → low frequency, the way a Nyquist arc is walked
    f, z = f[order], z[order]
    _check_sign(z)
    f, z = _drop_inductive_head(f, z)
    if len(f) < 8:
        raise EisFitError(f"only {len(f)} capacitive points; a circuit fit needs at least 8")
    if -z.imag.min() < 0.02 * np.median(np.abs(z)):
        raise EisFitError(
            f"no capacitive arc: the spectrum is resistive (|Z| ≈ {np.median(np.abs(z)):.4g} Ω), "
            "as after a short circuit; there is no R_int to fit"
        )
    shape = _shape(f, z)
    with_warburg = shape.tail if warburg is None else warburg
    limits = (max_rms_relative, max_relative_sigma)
    if model != "auto":
        return _fit_layout(f, z, _Layout(model == "two_arc", with_warburg), shape, *limits)
    one = _fit_layout(f, z, _Layout(False, with_warburg), shape, *limits)
    # Without a visible second arc the two-arc fit is a probe: a supported gb element converges in
    # tens of evaluations, an unsupported one wanders along its degenerate direction for hundreds.
    visible = len(shape.arcs) >= 2
    two = _fit_layout(f, z, _Layout(True, with_warburg), shape, *limits, max_nfev=2000 if visible else 200)
    # The grain-boundary element is kept only when the data support it: the fit determines R_gb,
    # and either the spectrum shows two arcs or the extra element clearly lowers χ² (a partial
    # arc at the top of the frequency range); otherwise it would fit noise.
    supported = (
        two.acceptable
        and two.parameters["R_gb"].relative_sigma <= 0.5
        and (visible or two.chi2_reduced * _EXTRA_ARC_GAIN <= one.chi2_reduced)
    )
    if supported:
        return two
    if one.acceptable or one.chi2_reduced <= two.chi2_reduced:
        one.notes.append(
            "two arcs visible but R_gb not determined: fitted one arc, R_bulk includes R_gb"
            if visible
            else "grain-boundary arc not resolved: R_bulk includes R_gb"
        )
        return one
    return two


def _check_sign(z: np.ndarray) -> None:
    positive = float(np.mean(z.imag > 0))
    if positive > 0.5:
        raise EisSignError(
            f"Im(Z) is positive at {positive:.0%} of the points: this looks like −Im(Z) (the BioLogic "
            "MPT convention) where labctl expects Im(Z) with capacitive negative (drivers.base.EisPoint);"
            " flip the sign of the imaginary part when importing"
        )


def _drop_inductive_head(f: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave out the high-frequency points with Im(Z) > 0 (cable inductance), as usual practice."""
    start = 0
    while start < len(z) and z.imag[start] > 0:
        start += 1
    keep = np.ones(len(z), dtype=bool)
    keep[:start] = False
    return f[keep], z[keep]


def _shape(f: np.ndarray, z: np.ndarray) -> _Shape:
    """Find the high-frequency intercept, the arcs (apex and real-axis span) and a diffusion tail."""
    y = -z.imag
    # a light 3-point smoothing keeps 1 % noise from making false apexes
    ys = np.convolve(np.pad(y, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    # prominence in log space: an arc counts when it rises ≥ 15 % above its surroundings, however
    # small it is next to the largest arc or a diffusion tail; values under 5 % of |Z| are floored
    # because there the measurement noise (relative to |Z|) would draw false apexes
    log_y = np.log(np.maximum(ys, _NOISE_FLOOR * np.abs(z)))
    peaks, _ = find_peaks(log_y, prominence=_ARC_PROMINENCE)
    valleys, _ = find_peaks(-log_y, prominence=_ARC_PROMINENCE)
    r_hf = float(max(z.real[: max(1, len(z) // 20)].min(), 1e-6))
    arcs: list[_Arc] = []
    bounds = [0, *[int(v) for v in valleys], len(z) - 1]
    for peak in peaks:
        left = max(b for b in bounds if b <= peak)
        right = min(b for b in bounds if b >= peak)
        re_start = r_hf if left == 0 else float(z.real[left])
        re_end = float(z.real[right])
        arcs.append(_Arc(re_start, re_end, float(f[peak]), float(ys[peak])))
    if not peaks.size:  # an arc whose apex lies beyond the measured range
        top = int(np.argmax(ys))
        arcs.append(_Arc(r_hf, float(z.real[-1]), float(f[top]), float(ys[top])))
    last_peak = int(peaks[-1]) if peaks.size else int(np.argmax(ys))
    later_valleys = [int(v) for v in valleys if v > last_peak]
    tail = bool(later_valleys) and ys[-1] > 1.3 * ys[later_valleys[-1]]
    return _Shape(r_hf, arcs, tail, float(f[0]))


def _initial(layout: _Layout, shape: _Shape, alpha: float) -> np.ndarray:
    """Initial guesses from the data: intercept, arc diameters and apex frequencies."""

    def cpe(r: float, arc: _Arc) -> float:
        # a CPE arc has its apex at ω^α = 1/(R·Q)
        return 1.0 / (r * (2 * math.pi * arc.apex_hz) ** alpha)

    def diameter(arc: _Arc) -> float:
        span = arc.re_end - arc.re_start
        return max(span, 2.0 * arc.apex_height, 1e-6)

    arcs = sorted(shape.arcs, key=lambda a: -a.apex_hz)
    theta = [math.log(shape.r_hf)]
    if layout.two_arc:
        if len(arcs) > 1:
            gb, interface = arcs[0], arcs[1]
        else:  # no second arc in sight: look for a small one at the top of the frequency range
            interface = arcs[0]
            span = max(interface.re_end - interface.re_start, 1e-6)
            gb = _Arc(shape.r_hf, shape.r_hf + 0.1 * span, shape.f_max_hz, 0.05 * span)
            theta = [math.log(max(0.9 * shape.r_hf, 1e-6))]
        r_gb = diameter(gb)
        theta += [math.log(r_gb), math.log(cpe(r_gb, gb)), alpha]
    else:
        interface = max(arcs, key=lambda a: a.apex_height)
    r_int = diameter(interface) if layout.two_arc else max(interface.re_end - shape.r_hf, 1e-6)
    theta += [math.log(r_int), math.log(cpe(r_int, interface)), alpha]
    if layout.warburg:
        theta.append(math.log(max(0.1 * r_int, 1e-3)))
    lower, upper = layout.bounds()
    return np.clip(np.array(theta), np.array(lower) + 1e-9, np.array(upper) - 1e-9)


def _residuals(theta: np.ndarray, layout: _Layout, f: np.ndarray, z: np.ndarray) -> np.ndarray:
    diff = (circuit_impedance(f, **layout.to_values(theta)) - z) / np.abs(z)
    return np.concatenate([diff.real, diff.imag])


def _jacobian(theta: np.ndarray, layout: _Layout, f: np.ndarray, z: np.ndarray) -> np.ndarray:
    """∂residuals/∂θ in closed form: exact, and cheaper than finite differences (one call, not p + 1).

    For an arc Z_a = R / (1 + R·Q·s) with s = (jω)^α, and D = (1 + R·Q·s)²:
    ∂Z_a/∂lnR = R/D, ∂Z_a/∂lnQ = −R²Q·s/D, ∂Z_a/∂α = −R²Q·s·ln(jω)/D; ∂(A/√(jω))/∂lnA = A/√(jω).
    """
    values = layout.to_values(theta)
    jw = 1j * 2.0 * np.pi * f
    log_jw = np.log(jw)
    columns: list[np.ndarray] = []
    for name in layout.names:
        if name == "R_bulk":
            columns.append(np.full(len(f), values["R_bulk"], dtype=complex))
        elif name == "A_W":
            columns.append(values["A_W"] / np.sqrt(jw))
        else:
            arc = name.split("_", 1)[1]  # "gb" or "int"
            r, q, alpha = values[f"R_{arc}"], values[f"Q_{arc}"], values[f"alpha_{arc}"]
            s = jw**alpha
            denominator = (1.0 + r * q * s) ** 2
            if name.startswith("R_"):
                columns.append(r / denominator)
            elif name.startswith("Q_"):
                columns.append(-(r**2) * q * s / denominator)
            else:
                columns.append(-(r**2) * q * s * log_jw / denominator)
    dz = np.array(columns).T / np.abs(z)[:, None]
    return np.vstack([dz.real, dz.imag])


def _fit_layout(
    f: np.ndarray,
    z: np.ndarray,
    layout: _Layout,
    shape: _Shape,
    max_rms_relative: float,
    max_relative_sigma: float,
    max_nfev: int = 2000,
) -> EisFit:
    lower, upper = layout.bounds()
    best = None
    # CPE exponents are the usual trap of these fits: when the first start does not reach the
    # noise level, try others and keep the best
    for alpha in (0.9, 0.75, 1.0 - 1e-6):
        result = least_squares(
            _residuals,
            _initial(layout, shape, alpha),
            jac=_jacobian,
            args=(layout, f, z),
            bounds=(lower, upper),
            method="trf",
            x_scale="jac",
            max_nfev=max_nfev,
        )
        if best is None or result.cost < best.cost:
            best = result
        if math.sqrt(2.0 * best.cost / (2 * len(f))) <= max_rms_relative:
            break
    assert best is not None
    n_res, n_par = 2 * len(f), len(best.x)
    chi2 = float(2.0 * best.cost)
    dof = max(n_res - n_par, 1)
    s2 = chi2 / dof
    sigmas = _log_sigmas(best.jac, s2)
    values = layout.to_values(best.x)
    parameters: dict[str, Parameter] = {}
    for name, x_sigma in zip(layout.names, sigmas, strict=True):
        value = values[name]
        sigma = x_sigma if name.startswith("alpha") else value * x_sigma  # σ_R = R·σ_lnR
        parameters[name] = Parameter(name, value, float(sigma), _UNITS[name])

    problems: list[str] = []
    if not best.success:
        problems.append(f"the optimiser did not converge ({best.message})")
    rms = math.sqrt(chi2 / n_res)
    if rms > max_rms_relative:
        problems.append(
            f"residuals {rms:.1%} RMS of |Z| exceed {max_rms_relative:.0%}: the circuit does not fit"
        )
    for name in ("R_bulk", "R_int"):
        p = parameters[name]
        if not p.relative_sigma <= max_relative_sigma:
            problems.append(f"{name} is not determined by the data (±{p.relative_sigma:.0%})")
    for name, x, lo, hi in zip(layout.names, best.x, lower, upper, strict=True):
        if not name.startswith("alpha") and min(x - lo, hi - x) < 1e-6:
            problems.append(f"{name} ran into its search bound: the data do not constrain it")
    return EisFit(
        model=layout.description,
        parameters=parameters,
        chi2=chi2,
        chi2_reduced=s2,
        rms_relative=rms,
        n_points=len(f),
        gb_resolved=layout.two_arc,
        warburg=layout.warburg,
        acceptable=not problems,
        problems=problems,
    )


def _log_sigmas(jac: np.ndarray, s2: float) -> np.ndarray:
    """1σ of each fitted coordinate from the Jacobian: sqrt(diag(s²·(JᵀJ)⁻¹)), via SVD.

    Directions the data do not constrain (tiny singular values) get huge variances instead of
    being dropped (as a pseudo-inverse would), so an undetermined element reads as undetermined.
    """
    _, singular, vt = np.linalg.svd(jac, full_matrices=False)
    floor = max(float(singular.max()) * 1e-15, 1e-300)
    inv_sq = 1.0 / np.maximum(singular, floor) ** 2
    cov = (vt.T * inv_sq) @ vt * s2
    return np.sqrt(np.clip(np.diag(cov), 0.0, None))
