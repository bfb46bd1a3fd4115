"""Equivalent-circuit fits recover known element values from noisy synthetic spectra."""

from __future__ import annotations

import numpy as np
import pytest

from labctl.analysis.eis import EisFitError, EisSignError, circuit_impedance, fit_spectrum
from labctl.errors import LabctlError

# 1 MHz → 0.1 Hz, 10 points per decade: typical practice (DOMAIN.md §2.4)
F_HZ = np.logspace(6, -1, 71)

# grain-boundary arc near 340 kHz, interface arc near 300 Hz: both resolved
TWO_ARCS = dict(R_bulk=50.0, R_gb=100.0, Q_gb=2e-8, alpha_gb=0.9, R_int=400.0, Q_int=4e-6, alpha_int=0.85)
# a sulfide at room temperature: the gb arc lies far above 1 MHz, only the intercept is seen
ONE_ARC = dict(R_bulk=60.0, R_int=500.0, Q_int=2e-6, alpha_int=0.85)


def noisy(elements: dict[str, float], seed: int, level: float = 0.01, f: np.ndarray = F_HZ) -> np.ndarray:
    """The circuit's impedance with complex noise proportional to |Z| (the usual instrument error)."""
    z = circuit_impedance(f, **elements)
    rng = np.random.default_rng(seed)
    return z + level * np.abs(z) * (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f)))


def fit(z: np.ndarray, f: np.ndarray = F_HZ, **options):
    return fit_spectrum(f, z.real, z.imag, **options)


def test_two_arc_spectrum_recovers_bulk_gb_and_interface_within_5_percent():
    result = fit(noisy(TWO_ARCS, seed=1))
    assert result.acceptable, result.problems
    assert result.gb_resolved and not result.warburg
    for name in ("R_bulk", "R_gb", "R_int"):
        assert result.parameters[name].value == pytest.approx(TWO_ARCS[name], rel=0.05)
    assert result.parameters["alpha_int"].value == pytest.approx(0.85, abs=0.03)
    # with 1 % noise per component, the reduced χ² is the squared relative noise, 2·(0.01)²/2
    assert result.chi2_reduced == pytest.approx(1e-4, rel=0.5)
    assert 0.005 < result.rms_relative < 0.02


def test_uncertainties_cover_the_truth_as_1_sigma_should():
    """Over 30 noise draws, |estimate − truth| < 1σ about 68 % of the time and < 3σ nearly always."""
    within_1, within_3 = {"R_bulk": 0, "R_int": 0}, {"R_bulk": 0, "R_int": 0}
    draws = 30
    for seed in range(draws):
        result = fit(noisy(TWO_ARCS, seed=100 + seed))
        for name in within_1:
            p = result.parameters[name]
            assert 0 < p.sigma < 0.05 * p.value  # determined, and not absurdly tight or loose
            pull = abs(p.value - TWO_ARCS[name]) / p.sigma
            within_1[name] += pull < 1
            within_3[name] += pull < 3
    for name in within_1:
        assert 0.45 * draws <= within_1[name] <= 0.9 * draws, (name, within_1[name])
        assert within_3[name] >= draws - 1, (name, within_3[name])


def test_unresolved_gb_arc_falls_back_to_one_arc_and_says_so():
    result = fit(noisy(ONE_ARC, seed=2))
    assert result.acceptable, result.problems
    assert not result.gb_resolved and result.r_gb is None
    assert result.model == "R_bulk + (R_int ∥ CPE)"
    assert result.r_bulk.value == pytest.approx(60.0, rel=0.05)
    assert result.r_int.value == pytest.approx(500.0, rel=0.05)
    assert any("R_bulk includes R_gb" in note for note in result.notes)


def test_small_gb_arc_at_the_top_of_the_range_is_fitted_when_it_clearly_helps():
    partial = dict(R_bulk=48.0, R_gb=30.0, Q_gb=3e-8, alpha_gb=0.9, R_int=1500.0, Q_int=2e-6, alpha_int=0.85)
    result = fit(noisy(partial, seed=3))
    assert result.acceptable and result.gb_resolved
    assert result.r_bulk.value == pytest.approx(48.0, rel=0.1)
    assert result.r_int.value == pytest.approx(1500.0, rel=0.05)
    forced = fit(noisy(partial, seed=3), model="one_arc")
    assert forced.chi2_reduced > 2 * result.chi2_reduced  # one arc cannot describe it as well


def test_low_frequency_diffusion_tail_adds_a_warburg_element():
    result = fit(noisy(dict(TWO_ARCS, A_W=300.0), seed=4))
    assert result.acceptable and result.warburg
    assert result.r_int.value == pytest.approx(400.0, rel=0.05)
    assert result.parameters["A_W"].value == pytest.approx(300.0, rel=0.05)
    without = fit(noisy(dict(TWO_ARCS, A_W=300.0), seed=4), warburg=False)
    assert not without.acceptable  # forcing the wrong circuit is caught, not silently reported


def test_biologic_style_minus_im_is_refused_with_a_clear_error():
    z = noisy(TWO_ARCS, seed=5)
    with pytest.raises(EisSignError, match=r"−Im\(Z\).*BioLogic.*flip the sign") as caught:
        fit_spectrum(F_HZ, z.real, -z.imag)  # −Im(Z), as an MPT file stores it
    assert isinstance(caught.value, LabctlError)  # the CLI prints it as one line


def test_frequency_order_and_an_inductive_head_do_not_matter():
    z = noisy(ONE_ARC, seed=6)
    z[:3] = z[:3].real + 1j * np.array([0.5, 0.3, 0.1])  # cable inductance at the top frequencies
    reverse = slice(None, None, -1)
    result = fit_spectrum(F_HZ[reverse], z.real[reverse], z.imag[reverse])
    assert result.n_points == len(F_HZ) - 3
    assert result.r_int.value == pytest.approx(500.0, rel=0.05)


def test_a_resistive_spectrum_has_no_arc_to_fit():
    z = np.full(len(F_HZ), 2.0 + 0.001j * 0) - 1e-4j  # a shorted cell: ~2 Ω, no capacitive arc
    with pytest.raises(EisFitError, match="no capacitive arc"):
        fit(z)


def test_too_few_points_and_bad_values_are_refused():
    z = noisy(ONE_ARC, seed=7)
    with pytest.raises(EisFitError, match="at least 8"):
        fit(z[:5], F_HZ[:5])
    bad = z.copy()
    bad[10] = complex(np.nan, -1.0)
    with pytest.raises(EisFitError, match="non-finite"):
        fit(bad)


def test_a_spectrum_the_circuit_cannot_describe_is_not_acceptable():
    rng = np.random.default_rng(8)
    z = noisy(ONE_ARC, seed=8) * (1 + 0.3 * rng.standard_normal(len(F_HZ)))  # 30 % scatter
    result = fit(z)
    assert not result.acceptable
    assert any("does not fit" in p or "not determined" in p for p in result.problems)


def test_as_dict_gives_area_specific_resistances():
    result = fit(noisy(ONE_ARC, seed=9))
    summary = result.as_dict(area_cm2=0.785)
    assert summary["R_int_ohm_cm2"] == pytest.approx(result.r_int.value * 0.785)
    assert summary["R_int_ohm_cm2_sigma"] == pytest.approx(result.r_int.sigma * 0.785)
    assert summary["acceptable"] is True
    assert np.allclose(result.impedance(F_HZ), circuit_impedance(F_HZ, **ONE_ARC), rtol=0.05)
