"""StackMechanics: linear force after contact, creep relaxation at a fixed gap, thickness growth."""

from __future__ import annotations

import pytest

from simulators.mechanics import StackMechanics


class Cell:
    pressure_pa = 0.0


def test_force_is_zero_before_contact_and_rises_linearly_after():
    rig = StackMechanics(stiffness_n_m=5e6, x_contact_m=1e-3)
    rig.position_m = 0.9e-3
    assert rig.force_n() == 0.0
    forces = []
    for micrometres in (10, 20, 40):
        rig.position_m = 1e-3 + micrometres * 1e-6
        forces.append(rig.force_n())
    assert forces == pytest.approx([50.0, 100.0, 200.0])


def test_a_series_spring_softens_the_stack():
    rig = StackMechanics(stiffness_n_m=5e6, spring_n_m=5e6, x_contact_m=0.0)
    rig.position_m = 20e-6
    assert rig.force_n() == pytest.approx(50.0)


def test_force_relaxes_at_a_fixed_gap_and_faster_when_hot():
    forces = {}
    for temperature_k in (298.15, 333.15):
        rig = StackMechanics(x_contact_m=0.0, temperature_k=temperature_k)
        rig.position_m = 80e-6  # 400 N, 5.1 MPa on 0.785 cm²
        start = rig.force_n()
        rig.advance(3600.0)
        forces[temperature_k] = rig.force_n()
        assert forces[temperature_k] < start
    assert forces[333.15] < forces[298.15]
    assert forces[298.15] > 0.5 * 400.0  # hours, not minutes, at room temperature


def test_thickness_growth_at_a_fixed_gap_raises_the_force_and_the_cell_pressure():
    cell = Cell()
    growth = [0.0]
    rig = StackMechanics(x_contact_m=0.0, thickness_change_m=lambda: growth[0], cell=cell)
    rig.position_m = 40e-6
    rig.advance(1.0)
    before = rig.force_n()
    growth[0] = 4.85e-6  # 1 mAh/cm² of Li plated
    rig.advance(1.0)
    assert rig.force_n() - before == pytest.approx(5e6 * 4.85e-6, rel=1e-3)
    assert cell.pressure_pa == pytest.approx(rig.force_n() / rig.area_m2)


def test_advance_is_deterministic_and_never_rewinds():
    def run() -> float:
        rig = StackMechanics(x_contact_m=0.0)
        rig.position_m = 100e-6
        rig.advance_to(5000.0)
        rig.advance_to(100.0)
        return rig.force_n()

    assert run() == run()
    with pytest.raises(ValueError):
        StackMechanics().advance(-1.0)


def test_a_thinned_foil_keeps_relaxing_but_more_slowly_and_never_creeps_through():
    def relaxed_fraction(creep_m: float) -> float:
        stack = StackMechanics(x_contact_m=0.0)
        stack.creep_m = creep_m
        stack.position_m = stack.position_for_force(392.0)  # 5 MPa on 0.785 cm² now
        before = stack.force_n()
        stack.advance(4 * 3600.0)
        return 1.0 - stack.force_n() / before

    fresh, thinned = relaxed_fraction(0.0), relaxed_fraction(40e-6)
    assert 0.15 < fresh < 0.8  # τ ≈ 4 h at 5 MPa, longer as the stress falls (power law)
    assert 0.0 < thinned < 0.5 * fresh  # 10 µm of a 50 µm foil left: squeeze flow is slow
    stack = StackMechanics(x_contact_m=0.0)
    stack.position_m = 200e-6  # far more compression than the foil can take up
    stack.advance(1000 * 3600.0)
    assert stack.creep_m < stack.max_creep_m and stack.force_n() > 0.0
