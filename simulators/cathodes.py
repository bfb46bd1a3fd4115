"""Layered-oxide cathodes the full-cell simulator knows: open-circuit voltage, strain and kinetics.

Why a table and not constants in the full-cell model: the same composite-cathode mechanisms (Li
diffusion in the particles, the cathode/SE interface, contact loss from volume change) apply to every
layered oxide; what differs is the voltage curve, how much the lattice breathes, and how slowly Li
diffuses. Keeping those here lets a protocol name its cathode and get a matching cell.

The state variable is q, the specific capacity extracted from the as-made (fully lithiated) cathode
in mAh/g of active material: q = 0 is LiMO2, q = 274–279 mAh/g would be MO2. Charging raises q.

Sources and marks as in `simulators.cell`: [D] DOMAIN.md, [L] literature, [T] typical practice /
illustrative.
- Voltage windows and capacities: DOMAIN.md §2.3 (NMC811 ~200 mAh/g at 4.3 V vs Li; LiCoO2 up to
  4.5 V; 131.7 mAh/g for LiCoO2 at 0.1 C in a sulfide full cell) [D]. The curves are smooth
  shapes drawn through typical slow-rate (GITT-like) charge curves vs Li in liquid cells [T]:
  NMC811 3.4 → 4.3 V over ~220 mAh/g with the H2→H3 step near 4.2 V; NMC622 a little higher and
  shorter; LiCoO2 the 3.9 V plateau, the order/disorder step near 4.15 V (x = 0.5, 137 mAh/g) and
  the O3 → H1-3 step near 4.55 V.
- Volume change [D for the direction and LiCoO2's +2 %]: NMC shrinks on charge, Ni-rich more
  (NMC811 ≈ −5 % by 4.3 V, mostly above 4.2 V; NMC622 ≈ −2.5 %) [L/T]; LiCoO2 expands (c-axis
  +2 %, taken as the volume change) until the H1-3 collapse above 4.5 V [T].
- Diffusion: R_p²/D at mid state of charge (~0.2 h: D ~1e-10 cm²/s, R_p ~2.5 µm) and the steep
  slow-down of Li diffusion near full lithiation (the "kinetic hindrance" behind most of the
  first-cycle loss of Ni-rich NMC, smaller for LiCoO2) [L/T]. Treat all numbers as defaults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType


class Curve:
    """A smooth, monotone curve through tabulated points, evaluated in O(1).

    Why not `numpy.interp`: the model calls this a few times per time step on plain floats, and a
    piecewise-linear curve has kinks that show up as steps in dV/dq (and so in the diffusion
    impedance). The table is interpolated once with monotone cubic Hermite splines (Fritsch–Carlson,
    so no overshoot between points), sampled on a fine uniform grid, and looked up linearly.
    Outside the table the curve continues along straight lines with the given slopes.
    """

    def __init__(
        self,
        points: Sequence[tuple[float, float]],
        *,
        slope_below: float,
        slope_above: float,
        step: float = 0.25,
    ) -> None:
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
        if len(xs) < 3 or any(b <= a for a, b in itertools.pairwise(xs)):
            raise ValueError("a curve needs at least 3 points with strictly increasing x")
        self.x_min, self.x_max = xs[0], xs[-1]
        self._slope_below = slope_below
        self._slope_above = slope_above
        self._step = step
        n = len(xs)
        h = [xs[i + 1] - xs[i] for i in range(n - 1)]
        d = [(ys[i + 1] - ys[i]) / h[i] for i in range(n - 1)]
        # Fritsch–Carlson tangents: harmonic mean of neighbouring secants, 0 at extrema.
        m = [d[0]] + [0.0] * (n - 2) + [d[-1]]
        for i in range(1, n - 1):
            if d[i - 1] * d[i] > 0.0:
                w1, w2 = 2.0 * h[i] + h[i - 1], h[i] + 2.0 * h[i - 1]
                m[i] = (w1 + w2) / (w1 / d[i - 1] + w2 / d[i])
        count = round((self.x_max - self.x_min) / step)
        self._step = (self.x_max - self.x_min) / count
        grid: list[float] = []
        k = 0
        for g in range(count + 1):
            x = self.x_min + g * self._step
            while k < n - 2 and x > xs[k + 1]:
                k += 1
            t = (x - xs[k]) / h[k]
            t2, t3 = t * t, t * t * t
            # Cubic Hermite basis on [x_k, x_k+1].
            grid.append(
                (2 * t3 - 3 * t2 + 1) * ys[k]
                + (t3 - 2 * t2 + t) * h[k] * m[k]
                + (-2 * t3 + 3 * t2) * ys[k + 1]
                + (t3 - t2) * h[k] * m[k + 1]
            )
        self._grid = grid
        self._last = count

    def __call__(self, x: float) -> float:
        """The curve's value at x."""
        if x <= self.x_min:
            return self._grid[0] + self._slope_below * (x - self.x_min)
        if x >= self.x_max:
            return self._grid[-1] + self._slope_above * (x - self.x_max)
        u = (x - self.x_min) / self._step
        i = min(int(u), self._last - 1)
        frac = u - i
        return self._grid[i] + frac * (self._grid[i + 1] - self._grid[i])

    def slope(self, x: float) -> float:
        """dy/dx at x (the slope of the grid cell, or of the straight continuation outside)."""
        if x <= self.x_min:
            return self._slope_below
        if x >= self.x_max:
            return self._slope_above
        i = min(int((x - self.x_min) / self._step), self._last - 1)
        return (self._grid[i + 1] - self._grid[i]) / self._step


@dataclass(frozen=True)
class Cathode:
    """One layered-oxide cathode active material, in lab units (mAh/g, V vs Li/Li⁺, h).

    Attributes:
        name: Canonical name, e.g. ``"NMC811"``.
        specific_capacity_mah_g: Reference capacity at `nominal_cutoff_v` in a liquid cell (mAh/g).
            It defines the C-rate (1 C = this × active mass / 1 h) and scales the q axis when a
            user states another capacity for the same material.
        nominal_cutoff_v: The usual upper cut-off vs Li (V).
        ocv: Open-circuit voltage vs Li at extracted capacity q: (q mAh/g, V) points, strictly
            increasing in both. Below q = 0 the cathode is over-lithiated (Li2MO2 forms near
            1.5–2 V vs Li), above the table it is stripped of Li: steep straight continuations.
        volume: Volume strain of the active material vs q, relative to the as-made state: (q, ε)
            points (ε < 0 = shrinks on charge).
        hysteresis_v: Full width of the charge/discharge OCV hysteresis (V).
        wired_fraction: Share of the particles a typical cold-pressed sulfide composite wires to both
            the SE and the carbon at full contact [T]: polycrystalline Ni-rich particles lose more
            (they crack during pressing and lose contact with the SE more easily) than LiCoO2.
        density_g_cm3: Crystal density of the active material (g/cm³).
        diffusion_time_h: R_p²/D at mid state of charge and 25 °C (h).
        diffusion_ea_ev: Activation energy of D (eV).
        hindrance_factor: How much slower diffusion gets at full lithiation: τ(q) = τ0·(1 + A·e^(−q/w)).
        hindrance_width_mah_g: w in that law (mAh/g).
        aliases: Other names users type (case-insensitive).
    """

    name: str
    specific_capacity_mah_g: float
    nominal_cutoff_v: float
    ocv: tuple[tuple[float, float], ...]
    volume: tuple[tuple[float, float], ...]
    hysteresis_v: float = 0.015
    wired_fraction: float = 0.85
    density_g_cm3: float = 4.75
    diffusion_time_h: float = 0.2
    diffusion_ea_ev: float = 0.40
    hindrance_factor: float = 400.0
    hindrance_width_mah_g: float = 12.0
    aliases: tuple[str, ...] = ()
    _ocv_curve: Curve = field(init=False, repr=False, compare=False)
    _volume_curve: Curve = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Over-lithiation below q = 0 drops ~0.09 V per mAh/g (Li2MO2 near 1.5 V by −20 mAh/g); past
        # the table end the last Li leaves steeply. Strain stays at its end values outside the table.
        object.__setattr__(self, "_ocv_curve", Curve(self.ocv, slope_below=0.09, slope_above=0.05))
        object.__setattr__(self, "_volume_curve", Curve(self.volume, slope_below=0.0, slope_above=0.0))
        volts = [v for _, v in self.ocv]
        if any(b <= a for a, b in itertools.pairwise(volts)):
            raise ValueError(f"{self.name}: the OCV must rise strictly with q")

    def ocv_v(self, q_mah_g: float) -> float:
        """Equilibrium potential vs Li (V) at extracted capacity q (mAh/g), hysteresis excluded."""
        return self._ocv_curve(q_mah_g)

    def ocv_slope_v_per_mah_g(self, q_mah_g: float) -> float:
        """dE/dq (V per mAh/g) at q: the inverse of the differential (intercalation) capacity."""
        return self._ocv_curve.slope(q_mah_g)

    def volume_strain(self, q_mah_g: float) -> float:
        """Volume strain of the active material relative to the as-made state (dimensionless)."""
        return self._volume_curve(q_mah_g)

    def capacity_at_v(self, voltage_v: float) -> float:
        """Extracted capacity (mAh/g) at which the OCV reaches `voltage_v` vs Li: the window's capacity."""
        lo, hi = -100.0, 400.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.ocv_v(mid) < voltage_v else (lo, mid)
        return 0.5 * (lo + hi)

    def diffusion_time_h_at(self, q_mah_g: float) -> float:
        """R_p²/D at extracted capacity q and 25 °C (h): slow near full lithiation (q → 0)."""
        q = max(q_mah_g, 0.0)
        return self.diffusion_time_h * (
            1.0 + self.hindrance_factor * math.exp(-q / self.hindrance_width_mah_g)
        )


# The tables read better as rows of points.
# fmt: off
_TABLE: tuple[Cathode, ...] = (
    Cathode(
        name="NMC811",
        specific_capacity_mah_g=200.0,  # at 4.3 V vs Li [D]
        nominal_cutoff_v=4.3,
        ocv=(
            (0, 3.30), (2, 3.45), (5, 3.56), (10, 3.62), (20, 3.66), (40, 3.70), (60, 3.735),
            (80, 3.77), (100, 3.81), (120, 3.86), (140, 3.92), (160, 3.99), (180, 4.07),
            (195, 4.14), (205, 4.19), (215, 4.24), (225, 4.31), (235, 4.40), (245, 4.52),
            (255, 4.68), (265, 4.90),
        ),
        volume=(
            (0, 0.0), (50, -0.004), (100, -0.009), (150, -0.016), (180, -0.023), (200, -0.031),
            (215, -0.040), (225, -0.050), (240, -0.066), (260, -0.075), (280, -0.078),
        ),
        wired_fraction=0.81,
        density_g_cm3=4.75,
        diffusion_time_h=0.2,
        hindrance_factor=800.0,
        hindrance_width_mah_g=13.0,
        aliases=("NCM811", "LiNi0.8Mn0.1Co0.1O2"),
    ),
    Cathode(
        name="NMC622",
        specific_capacity_mah_g=180.0,  # at 4.3 V vs Li [T]
        nominal_cutoff_v=4.3,
        ocv=(
            (0, 3.40), (2, 3.52), (5, 3.60), (10, 3.66), (20, 3.70), (40, 3.74), (60, 3.77),
            (80, 3.81), (100, 3.86), (120, 3.92), (140, 3.99), (160, 4.07), (180, 4.16),
            (195, 4.25), (205, 4.32), (215, 4.41), (225, 4.52), (240, 4.72), (255, 4.95),
        ),
        volume=(
            (0, 0.0), (50, -0.003), (100, -0.007), (150, -0.012), (180, -0.017), (200, -0.024),
            (215, -0.032), (230, -0.042), (250, -0.050),
        ),
        wired_fraction=0.88,
        density_g_cm3=4.7,
        diffusion_time_h=0.2,
        hindrance_factor=250.0,
        hindrance_width_mah_g=12.0,
        aliases=("NCM622", "LiNi0.6Mn0.2Co0.2O2"),
    ),
    Cathode(
        name="LiCoO2",
        specific_capacity_mah_g=140.0,  # at 4.2 V vs Li (x = 0.5) [T]
        nominal_cutoff_v=4.2,
        ocv=(
            (0, 3.60), (3, 3.80), (8, 3.88), (20, 3.90), (50, 3.91), (70, 3.92), (90, 3.95),
            (110, 4.02), (125, 4.08), (135, 4.13), (142, 4.17), (150, 4.21), (160, 4.28),
            (170, 4.36), (180, 4.45), (187, 4.52), (195, 4.58), (205, 4.65), (220, 4.80),
        ),
        volume=(
            (0, 0.0), (30, 0.004), (70, 0.010), (110, 0.016), (140, 0.020), (160, 0.019),
            (180, 0.015), (200, 0.005), (220, -0.020),
        ),
        hysteresis_v=0.010,
        wired_fraction=0.92,
        density_g_cm3=5.05,
        diffusion_time_h=0.15,
        hindrance_factor=60.0,
        hindrance_width_mah_g=10.0,
        aliases=("LCO",),
    ),
)
# fmt: on

CATHODES: Mapping[str, Cathode] = MappingProxyType({c.name: c for c in _TABLE})
"""Canonical name → cathode, read-only."""

_LOOKUP: Mapping[str, Cathode] = MappingProxyType(
    {key.casefold(): c for c in _TABLE for key in (c.name, *c.aliases)}
)


def cathode_names() -> list[str]:
    """Every name `get_cathode` accepts: canonical names first, then aliases."""
    names = [c.name for c in _TABLE]
    return names + [a for c in _TABLE for a in c.aliases if a not in names]


def get_cathode(name: str) -> Cathode:
    """Find a cathode by name or alias, ignoring case and surrounding spaces.

    Raises:
        KeyError: If nothing matches; the message lists every valid name.
    """
    try:
        return _LOOKUP[name.strip().casefold()]
    except (KeyError, AttributeError):
        valid = ", ".join(cathode_names())
        raise KeyError(f"unknown cathode {name!r}; valid names: {valid}") from None
