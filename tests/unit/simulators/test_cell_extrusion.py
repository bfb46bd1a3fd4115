"""Mechanism 11 of `simulators.cell`: Li extrudes through the separator's pores under stack pressure.

DOMAIN.md §2.2: "Too high [pressure]: Li creeps and extrudes through the SE's pores and shorts the cell —
over time, and even with no current flowing. The time to such a short depends on pressure, SE
thickness, and SE chemistry (its interphase)." Every test here runs at open circuit unless it says
otherwise, in 60 s steps: the front has a closed form in time, so the steps are exact.
"""

from __future__ import annotations

import math
import statistics

import pytest

from simulators.cell import (
    GAS_J_MOL_K,
    CellParameters,
    LithiumMechanics,
    SymmetricCell,
)
from simulators.fullcell import FullCell, FullCellParameters
from simulators.materials import get_electrolyte

STEP_S = 60.0
HOUR = 3600.0
SEEDS = range(8)


def make(pressure_mpa: float, seed: int = 0, **kwargs: object) -> SymmetricCell:
    return SymmetricCell(CellParameters(pressure_pa=pressure_mpa * 1e6, seed=seed, **kwargs))


def hours_to_short(cell: SymmetricCell | FullCell, limit_h: float, current_a: float = 0.0) -> float:
    """Advance in 60 s steps until the cell shorts; the time in hours, inf if not within limit_h."""
    steps = int(limit_h * HOUR / STEP_S)
    for k in range(1, steps + 1):
        cell.advance(STEP_S, current_a)
        if cell.is_shorted:
            return k * STEP_S / HOUR
    return math.inf


def test_no_short_at_5_mpa_over_1000_h_at_open_circuit() -> None:
    for seed in (0, 1):
        cell = make(5.0, seed)
        assert hours_to_short(cell, 1000.0) == math.inf
        state = cell.state
        assert state.pore_front_um == 0.0
        assert state.pore_channels_connected == 0
        assert state.filament_formations == 0
        assert state.elapsed_s == pytest.approx(1000 * HOUR)


def test_short_at_25_mpa_without_current_within_the_window() -> None:
    times = []
    for seed in SEEDS:
        cell = make(25.0, seed)
        t = hours_to_short(cell, 100.0)
        times.append(t)
        # No current ever flowed: the short came from the pores, not from plating.
        assert cell.state.charge_throughput_c == 0.0
        assert cell.state.pore_channels_connected == 1
        assert cell.state.short_kind == "soft"
    assert 10.0 <= statistics.median(times) <= 50.0
    assert all(5.0 <= t <= 50.0 for t in times)


def test_time_to_short_falls_with_pressure_as_the_flow_law_says() -> None:
    p_e = get_electrolyte("Li6PS5Cl").pore_entry_pressure_mpa
    n = LithiumMechanics().pore_flow_exponent
    medians = {}
    for pressure in (25.0, 50.0, 75.0):
        medians[pressure] = statistics.median(hours_to_short(make(pressure, s), 100.0) for s in SEEDS)
    for seed in SEEDS[:3]:
        t25, t50, t75 = (hours_to_short(make(p, seed), 100.0) for p in (25.0, 50.0, 75.0))
        assert t25 > t50 > t75
        # Same pellet, so t ∝ ΔP^−n with ΔP = P − P_e (within the 60 s step).
        assert t25 / t50 == pytest.approx(((50.0 - p_e) / (25.0 - p_e)) ** n, rel=0.05)
    assert medians[50.0] <= 4.0  # "within a few hours"
    assert medians[75.0] < 1.0  # "under an hour"


def test_time_to_short_rises_with_thickness() -> None:
    n = LithiumMechanics().pore_flow_exponent
    for seed in SEEDS[:3]:
        thin = hours_to_short(make(25.0, seed, thickness_m=500e-6), 200.0)
        thick = hours_to_short(make(25.0, seed, thickness_m=1000e-6), 500.0)
        # The channels scale with the pellet: ℓ^(n+1) to reach τ·L/2 grows as L^(n+1).
        assert thick / thin == pytest.approx(2.0 ** (n + 1.0), rel=0.02)


def test_time_to_short_falls_with_temperature() -> None:
    q = LithiumMechanics().creep_activation_j_mol
    expected = math.exp(q / GAS_J_MOL_K * (1.0 / 298.15 - 1.0 / 353.15))  # Li creep, Arrhenius
    assert 3.0 < expected < 20.0  # "several times faster"
    for seed in SEEDS[:3]:
        cold = hours_to_short(make(25.0, seed), 100.0)
        hot = hours_to_short(make(25.0, seed, temperature_k=353.15), 100.0)
        assert cold / hot == pytest.approx(expected, rel=0.05)


def test_non_passivating_electrolyte_shorts_sooner() -> None:
    lgps = get_electrolyte("LGPS")
    lpscl = get_electrolyte("LPSCl")
    assert not lgps.passivating and lpscl.passivating
    for seed in SEEDS[:3]:
        t_lpscl = hours_to_short(make(25.0, seed, material="LPSCl"), 100.0)
        t_lgps = hours_to_short(make(25.0, seed, material="LGPS"), 100.0)
        assert t_lgps < t_lpscl / 2.0
    # Between the two entry pressures only the reactive electrolyte extrudes at all.
    pressure = 0.5 * (lgps.pore_entry_pressure_mpa + lpscl.pore_entry_pressure_mpa)
    cells = [make(pressure, 0, material=m) for m in ("LGPS", "LPSCl")]
    for cell in cells:
        cell.advance(500 * HOUR, 0.0)
    assert cells[0].state.pore_front_um > 0.0
    assert cells[1].state.pore_front_um == 0.0


def test_same_seed_same_time_and_pellets_differ() -> None:
    first = hours_to_short(make(25.0, 3), 100.0)
    again = hours_to_short(make(25.0, 3), 100.0)
    assert first == again
    others = {hours_to_short(make(25.0, s), 100.0) for s in SEEDS}
    assert len(others) > 1


def test_one_long_rest_is_exact() -> None:
    stepped, jumped = make(25.0, 2), make(25.0, 2)
    for _ in range(int(5 * HOUR / STEP_S)):
        stepped.advance(STEP_S, 0.0)
    jumped.advance(5 * HOUR, 0.0)
    assert jumped.state.pore_front_um > 0.0
    assert jumped.state.pore_front_um == pytest.approx(stepped.state.pore_front_um, rel=1e-9)


def test_third_channel_makes_the_short_hard() -> None:
    cell = make(25.0, 1)
    hours_to_short(cell, 100.0)
    assert cell.state.short_kind == "soft"
    soft_ohm = cell.state.short_resistance_ohm
    assert soft_ohm is not None and soft_ohm > 5.0  # through a few asperities: Ω to tens of Ω
    while cell.state.pore_channels_connected < 3:
        cell.advance(STEP_S, 0.0)
        assert cell.state.elapsed_s < 200 * HOUR
    state = cell.state
    assert state.filament_formations == 3
    assert state.short_kind == "hard"
    assert state.short_resistance_ohm is not None and state.short_resistance_ohm < 1.0
    # A hard short collapses the voltage under current (DOMAIN.md §4).
    assert abs(cell.voltage(1e-4)) < 1e-3


def test_front_stops_below_entry_pressure_and_never_retracts() -> None:
    cell = make(25.0, 0)
    cell.advance(3 * HOUR, 0.0)
    front = cell.state.pore_front_um
    assert front > 0.0 and not cell.is_shorted
    cell.pressure_pa = 5e6
    cell.advance(1000 * HOUR, 0.0)
    assert cell.state.pore_front_um == front
    assert not cell.is_shorted
    # Pressed again, it carries on from where it stopped.
    cell.pressure_pa = 25e6
    cell.advance(STEP_S, 0.0)
    assert cell.state.pore_front_um > front


def test_extrusion_continues_under_current() -> None:
    # A small current, far below the critical current at 25 MPa, alternating so neither side runs out.
    at_rest = hours_to_short(make(25.0, 4), 100.0)
    cell = make(25.0, 4)
    shorted_at = math.inf
    for k in range(1, int(100 * HOUR / STEP_S) + 1):
        cell.advance(STEP_S, 1e-5 if (k // 60) % 2 == 0 else -1e-5)
        if cell.is_shorted:
            shorted_at = k * STEP_S / HOUR
            break
    assert cell.state.charge_throughput_c > 0.0
    assert shorted_at == at_rest


def test_full_cell_li_anode_extrudes_and_li_in_does_not() -> None:
    def full(anode: str) -> FullCell:
        return FullCell(FullCellParameters(anode=anode, pressure_pa=75e6, seed=0))

    li = full("Li")
    t_li = hours_to_short(li, 100.0)
    assert t_li < 100.0
    assert li.state.pore_channels_connected == 1
    # One Li face pushes: the front runs the whole channel, not half of it, so much later than the
    # symmetric cell's median under an hour.
    assert t_li > 2.0
    li_in = full("Li-In")
    li_in.advance(1000 * HOUR, 0.0)
    assert li_in.state.pore_front_um == 0.0
    assert not li_in.is_shorted
