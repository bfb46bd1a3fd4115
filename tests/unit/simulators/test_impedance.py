"""Small-signal impedance of the simulated Li | SE | Li symmetric cell (`SymmetricCell.impedance`).

The spectrum is read the way a lab reads one: intercepts and arcs in the Nyquist plane over a
1 MHz – 0.1 Hz sweep (DOMAIN.md §2.4), then compared with the model's own `equivalent_circuit()`.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from simulators.base import ElectricalLoad, ImpedanceLoad
from simulators.cell import CellParameters, SymmetricCell

# 10 points per decade, 1 MHz down to 0.1 Hz: the typical sweep of DOMAIN.md §2.4.
SWEEP_HZ = np.logspace(6, -1, 71)


def make_cell(pressure_mpa: float = 1.0, temperature_c: float = 25.0, seed: int = 1, **kwargs: object):
    return SymmetricCell(
        CellParameters(
            pressure_pa=pressure_mpa * 1e6,
            temperature_k=temperature_c + 273.15,
            seed=seed,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def spectrum(cell: SymmetricCell, current_a: float = 0.0, freqs=SWEEP_HZ) -> np.ndarray:
    return np.array([cell.impedance(float(f), current_a) for f in freqs])


def interface_arc(z: np.ndarray, freqs=SWEEP_HZ) -> tuple[float, float, float]:
    """(right end Re Z, apex height −Im Z, apex frequency) of the interface arc in a sweep.

    The arc's low-frequency end is the local minimum of −Im between the arc (kHz) and the diffusion
    tail (below ~10 Hz); its apex is the largest −Im between 100 Hz and 100 kHz.
    """
    band = (freqs > 1e2) & (freqs < 1e5)
    apex = int(np.argmax(np.where(band, -z.imag, -np.inf)))
    tail = (freqs < freqs[apex]) & (freqs > 0.5)
    idx = np.flatnonzero(tail)
    right = idx[int(np.argmin(-z.imag[idx]))]
    return float(z.real[right]), float(-z.imag[apex]), float(freqs[apex])


def arc_span(cell: SymmetricCell, current_a: float = 0.0) -> float:
    """The interface arc's span on the real axis beyond the separator's DC resistance (Ω)."""
    right, _, _ = interface_arc(spectrum(cell, current_a))
    return right - cell.bulk_resistance_ohm()


def shorted_cell(kind: str) -> SymmetricCell:
    """Void a 1 MPa cell by stripping above its critical current, then plate it until it shorts."""
    cell = make_cell(1.0, seed=3)
    i = 0.5e-3 * 0.785  # 0.5 mA/cm²
    for _ in range(200):
        cell.advance(720.0, +i)  # strip the WE: 0.1 mAh/cm², voids open
        for _ in range(72):
            cell.advance(10.0, -i)  # plate the WE on its voided contact
            if cell.state.short_kind == kind:
                return cell
    raise AssertionError(f"no {kind} short")


# --- protocol and conventions --------------------------------------------------------------------


def test_symmetric_cell_is_an_impedance_load_with_capacitive_negative_imaginary_part() -> None:
    cell = make_cell()
    assert isinstance(cell, ImpedanceLoad)
    assert isinstance(cell, ElectricalLoad)
    z = spectrum(cell, freqs=np.logspace(9, -4, 131))
    assert np.all(z.real > 0)
    assert np.all(z.imag < 0)  # math convention: capacitive, no inductance
    with pytest.raises(ValueError):
        cell.impedance(0.0)
    with pytest.raises(ValueError):
        cell.impedance(-1.0)


def test_impedance_is_the_circuit_of_equivalent_circuit() -> None:
    # An independent evaluation of R_bulk + (R_gb ∥ CPE_gb) + (R_int ∥ CPE_int) + W from the
    # reported element values matches the model: what a fit should recover is what it reports.
    cell = make_cell(3.0)
    cell.advance(3600.0, 0.0)
    ec = cell.equivalent_circuit()

    def model(f: float) -> complex:
        jw = 2j * math.pi * f
        s = cmath.sqrt(jw * ec["tau_W_s"])
        return (
            ec["R_bulk_ohm"]
            + ec["R_gb_ohm"] / (1 + ec["R_gb_ohm"] * ec["Q_gb"] * jw ** ec["n_gb"])
            + ec["R_int_ohm"] / (1 + ec["R_int_ohm"] * ec["Q_int"] * jw ** ec["n_int"])
            + ec["R_W_ohm"] * cmath.tanh(s) / s
        )

    for f in SWEEP_HZ:
        assert cell.impedance(float(f)) == pytest.approx(model(float(f)), rel=1e-9)
    assert math.isinf(ec["R_short_ohm"])


# --- a typical spectrum ----------------------------------------------------------------------------


def test_typical_spectrum_shows_bulk_intercept_gb_arc_interface_arc_and_tail() -> None:
    cell = make_cell(1.0)
    ec = cell.equivalent_circuit()
    # Bulk intercept: Re Z at the high-frequency limit is R_bulk; the grain boundaries make up the
    # rest of the DC separator resistance L/(σ·A).
    assert cell.impedance(1e9).real == pytest.approx(ec["R_bulk_ohm"], rel=1e-3)
    assert ec["R_bulk_ohm"] + ec["R_gb_ohm"] == pytest.approx(cell.bulk_resistance_ohm(), rel=1e-12)
    # Small gb arc at high frequency: ~10 % of the separator, apex near 1 MHz.
    assert 0.05 < ec["R_gb_ohm"] / cell.bulk_resistance_ohm() < 0.2
    assert 2e5 < ec["f_gb_hz"] < 2e6
    z = spectrum(cell)
    assert ec["R_bulk_ohm"] < z[0].real < ec["R_bulk_ohm"] + ec["R_gb_ohm"]  # 1 MHz: on the gb arc
    # Clear interface arc in the kHz range, well separated from the gb arc.
    right, height, f_apex = interface_arc(z)
    assert 1e3 < f_apex < 1e4
    assert f_apex == pytest.approx(ec["f_int_hz"], rel=0.5)
    assert height > 5 * ec["R_gb_ohm"] / 2
    # Low-frequency tail: beyond the arc, Re Z keeps growing toward R_sep + R_int + R_W.
    assert z[-1].real > right
    low = cell.impedance(1e-5)
    assert low.real == pytest.approx(cell.bulk_resistance_ohm() + ec["R_int_ohm"] + ec["R_W_ohm"], rel=1e-4)
    assert ec["R_W_ohm"] < 0.15 * ec["R_int_ohm"]  # the diffusion element is small


def test_interface_arc_diameter_equals_r_int() -> None:
    for pressure in (1.0, 7.0):
        cell = make_cell(pressure)
        ec = cell.equivalent_circuit()
        assert ec["R_int_ohm"] == pytest.approx(cell.interface_resistance_ohm(), rel=1e-12)
        assert ec["R_int_ohm"] == pytest.approx(ec["R_int_we_ohm"] + ec["R_int_ce_ohm"])
        right, height, _ = interface_arc(spectrum(cell))
        # Real-axis span of the arc beyond the separator's DC resistance.
        assert right - cell.bulk_resistance_ohm() == pytest.approx(ec["R_int_ohm"], rel=0.02)
        # A depressed (CPE) arc's apex stands (R/2)·tan(nπ/4) above the axis.
        n = ec["n_int"]
        assert height == pytest.approx(ec["R_int_ohm"] / 2 * math.tan(n * math.pi / 4), rel=0.03)


def test_double_layer_capacitance_scales_with_the_true_contact_area() -> None:
    low, high = make_cell(1.0), make_cell(7.0)
    ec_low, ec_high = low.equivalent_circuit(), high.equivalent_circuit()
    ratio = high.state.contact_we / low.state.contact_we
    assert ec_high["Q_int_we"] / ec_low["Q_int_we"] == pytest.approx(ratio, rel=1e-9)
    # ~10 µF·s^(n−1) per cm² of contact, n 0.8–0.9.
    assert ec_low["Q_int_we"] / (low.state.contact_we * 0.785) == pytest.approx(10e-6, rel=1e-9)
    assert 0.8 <= ec_low["n_int"] <= 0.9
    # R ∝ 1/f and Q ∝ f: the apex frequency does not move with pressure, only the diameter does.
    assert ec_high["f_int_hz"] == pytest.approx(ec_low["f_int_hz"], rel=1e-9)


# --- the arc answers to the test variables ----------------------------------------------------------


def test_interface_arc_is_smaller_at_7mpa_than_at_1mpa() -> None:
    span_1, span_7 = arc_span(make_cell(1.0)), arc_span(make_cell(7.0))
    assert span_7 < 0.7 * span_1
    # The same cell, pressure raised: the arc shrinks as creep closes the contact over hours.
    cell = make_cell(1.0)
    cell.pressure_pa = 7e6
    assert arc_span(cell) == pytest.approx(span_1, rel=1e-6)  # contact has not moved yet
    cell.advance(10 * 3600.0, 0.0)
    assert arc_span(cell) < 0.8 * span_1


def test_interface_arc_grows_as_sqrt_t_at_rest_for_lpscl_and_linearly_for_lgps() -> None:
    for material, expected in (("LPSCl", 2.0), ("LGPS", 4.0)):
        cell = make_cell(7.0, material=material)
        start = arc_span(cell)
        cell.advance(6 * 3600.0, 0.0)
        after_6h = arc_span(cell) - start
        cell.advance(18 * 3600.0, 0.0)
        after_24h = arc_span(cell) - start
        assert after_6h > 0
        assert after_24h / after_6h == pytest.approx(expected, rel=0.03), material
    # And the arc moves to lower frequency as the interphase thickens.
    cell = make_cell(7.0, material="LGPS")
    f0 = cell.equivalent_circuit()["f_int_hz"]
    cell.advance(24 * 3600.0, 0.0)
    assert cell.equivalent_circuit()["f_int_hz"] < 0.8 * f0


def test_voids_from_stripping_show_up_as_a_larger_arc() -> None:
    cell = make_cell(1.0)
    before = arc_span(cell)
    cell.advance(1200.0, 0.3e-3 * 0.785)  # 0.3 mA/cm²: above the critical stripping current at 1 MPa
    assert cell.state.void_fraction_we > 0.3
    assert arc_span(cell) > 1.3 * before


def test_dc_current_shrinks_the_charge_transfer_arc() -> None:
    cell = make_cell(7.0)
    at_rest = arc_span(cell)
    i = 3.0e-3 * 0.785  # 3 mA/cm²: a·j ≈ 0.8, linearised Butler–Volmer well below RT/(F·j0)
    under_current = arc_span(cell, i)
    assert under_current < 0.9 * at_rest
    assert arc_span(cell, -i) == pytest.approx(under_current, rel=1e-9)  # Butler–Volmer, α = ½


def test_low_frequency_limit_matches_the_dc_slope_plus_the_warburg() -> None:
    cell = make_cell(3.0)
    di = 1e-7
    slope = (cell.voltage(di) - cell.voltage(-di)) / (2 * di)
    ec = cell.equivalent_circuit()
    assert cell.impedance(1e-6).real - ec["R_W_ohm"] == pytest.approx(slope, rel=1e-4)


def test_warm_cell_has_smaller_arcs_and_the_gb_arc_moves_up() -> None:
    cold, hot = make_cell(3.0, 25.0), make_cell(3.0, 60.0)
    ec_cold, ec_hot = cold.equivalent_circuit(), hot.equivalent_circuit()
    assert ec_hot["R_bulk_ohm"] < 0.5 * ec_cold["R_bulk_ohm"]
    assert ec_hot["R_gb_ohm"] < 0.5 * ec_cold["R_gb_ohm"]
    assert ec_hot["f_gb_hz"] > 3 * ec_cold["f_gb_hz"]  # Q_gb is dielectric: fixed
    assert ec_hot["Q_gb"] == ec_cold["Q_gb"]
    assert ec_hot["R_int_ohm"] < ec_cold["R_int_ohm"]
    # The grain boundaries' higher activation energy makes their share grow when cold.
    chilled = make_cell(3.0, -10.0).equivalent_circuit()
    share = ec_cold["R_gb_ohm"] / (ec_cold["R_gb_ohm"] + ec_cold["R_bulk_ohm"])
    assert chilled["R_gb_ohm"] / (chilled["R_gb_ohm"] + chilled["R_bulk_ohm"]) > share


# --- shorts ----------------------------------------------------------------------------------------


def test_impedance_collapses_after_a_hard_short() -> None:
    healthy = abs(make_cell(1.0, seed=3).impedance(1e3))
    cell = shorted_cell("hard")
    r_short = cell.state.short_resistance_ohm
    assert r_short is not None and r_short < 1.0
    z = spectrum(cell)
    # Every frequency collapses to ~the Li bridge: DOMAIN.md §4 "impedance collapse confirms a short".
    assert np.all(np.abs(z) < 1.01 * r_short)
    assert np.all(np.abs(z) > 0.9 * r_short)
    assert abs(z[35]) < healthy / 100
    assert cell.equivalent_circuit()["R_short_ohm"] == pytest.approx(r_short)


def test_soft_short_shunts_the_spectrum_partially() -> None:
    cell = shorted_cell("soft")
    r_short = cell.state.short_resistance_ohm
    assert r_short is not None
    z = spectrum(cell)
    assert np.all(np.abs(z) < r_short)  # a resistor in parallel with everything
    assert np.abs(z[-1]) > 0.1 * r_short  # but not a dead short
