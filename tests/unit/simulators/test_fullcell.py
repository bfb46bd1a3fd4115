"""Physics checks of the simulated composite cathode | sulfide SE | Li or Li-In full cell.

The calibration points (DOMAIN.md §2.3) are checked as a lab would run them: the model is driven in
time steps like a cycler would (CC-CV charge, CC discharge between cut-off voltages), capacities are
counted from the current the "instrument" passed, and shorts are recognised from the voltage alone,
then cross-checked against the model's own `is_shorted`.
"""

from __future__ import annotations

import cmath
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from simulators.base import ElectricalLoad, ImpedanceLoad
from simulators.fullcell import FullCell, FullCellParameters

# NMC811 windows vs Li (DOMAIN.md §2.3): 2.5–4.3 V, i.e. 1.88–3.68 V vs Li-In.
V_MIN_LI, V_MAX_LI = 2.5, 4.3
CV_CUTOFF_C = 0.05  # CV until C/20, whatever the CC rate (typical practice)
SHORT_V = 0.5  # a full cell below 0.5 V under charging current is shorted
DEBOUNCE_SAMPLES = 3


def make_cell(
    pressure_mpa: float = 5.0, temperature_c: float = 25.0, seed: int = 1, **kwargs: object
) -> FullCell:
    return FullCell(
        FullCellParameters(
            pressure_pa=pressure_mpa * 1e6,
            temperature_k=temperature_c + 273.15,
            seed=seed,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def active_mass_g(cell: FullCell) -> float:
    """Active mass from what the user stated (mg/cm² × fraction × area), not from the model."""
    p = cell.params
    return p.cathode_loading_mg_cm2 * p.active_fraction * p.area_m2 * 1e4 * 1e-3


@dataclass
class Cycle:
    charge_mah_g: float
    discharge_mah_g: float
    mean_discharge_v: float  # vs the anode
    shorted: bool

    @property
    def efficiency(self) -> float:
        return self.discharge_mah_g / self.charge_mah_g


def cv_current(cell: FullCell, v_max: float, i_max: float) -> float:
    """The current that holds the cell at v_max, by bisection (V rises with I, as in the instrument)."""
    lo, hi = 0.0, i_max
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cell.voltage(mid) < v_max else (lo, mid)
    return lo


def step(dt: float, v: float, v_limit: float, slope: float) -> float:
    """Shorter steps when the voltage runs toward a cut-off, so the overshoot past it stays small.

    Args:
        dt: The nominal step (s).
        v: The last voltage (V).
        v_limit: The cut-off (V).
        slope: |dV/dt| over the last step (V/s).
    """
    if slope <= 0.0:
        return dt
    return min(dt, max(dt / 100.0, 0.2 * abs(v - v_limit) / slope))


def charge(cell: FullCell, i: float, v_max: float, i_cut: float | None, dt: float) -> tuple[float, bool]:
    """CC to v_max, then CV until the current falls below i_cut (None: CC only). Returns (C, shorted).

    Every coulomb the instrument passed counts, the last step's too.
    """
    q, low = 0.0, 0
    limit = 4.0 * cell.nominal_capacity_ah() * 3600.0  # a cell that never gets there is broken
    v, slope = cell.voltage(i), 0.0
    while True:
        h = step(dt, v, v_max, slope)
        v_before = v
        cell.advance(h, i)
        q += i * h
        v = cell.voltage(i)
        slope = abs(v - v_before) / h
        low = low + 1 if v < SHORT_V else 0
        if low >= DEBOUNCE_SAMPLES or q > limit:
            return q, True
        if v >= v_max:
            break
    if i_cut is None:
        return q, False
    while (i_cv := cv_current(cell, v_max, i)) > i_cut:
        cell.advance(dt, i_cv)
        q += i_cv * dt
        if q > limit:
            return q, True
    return q, False


def discharge(cell: FullCell, i: float, v_min: float, dt: float) -> tuple[float, float]:
    """CC discharge to v_min. Returns (charge C, mean voltage V)."""
    q, energy = 0.0, 0.0
    v, slope = cell.voltage(-i), 0.0
    while True:
        h = step(dt, v, v_min, slope)
        v_before = v
        cell.advance(h, -i)
        v = cell.voltage(-i)
        slope = abs(v - v_before) / h
        q += i * h
        energy += 0.5 * (v + v_before) * i * h
        if v <= v_min or q > 4.0 * cell.nominal_capacity_ah() * 3600.0:
            return q, energy / q


def cycle(
    cell: FullCell,
    c_rate: float,
    cycles: int,
    v_max_li: float = V_MAX_LI,
    v_min_li: float = V_MIN_LI,
    samples: int = 200,
    charge_c_rate: float | None = None,
) -> list[Cycle]:
    """CC-CV charge / CC discharge between cut-offs stated vs Li; stops at a detected short.

    `samples` per nominal capacity sets the time step: 200 samples a 0.5 % resolution of capacity.
    """
    offset = cell.anode_metal.potential_v  # vs Li-In the cut-offs are 0.62 V lower
    i_dis = cell.c_rate_current_a(c_rate)
    i_ch = cell.c_rate_current_a(charge_c_rate or c_rate)
    dt = 3600.0 / samples / max(c_rate, charge_c_rate or 0.0)
    mass = active_mass_g(cell)
    result: list[Cycle] = []
    for _ in range(cycles):
        q_ch, shorted = charge(cell, i_ch, v_max_li - offset, cell.c_rate_current_a(CV_CUTOFF_C), dt)
        if shorted:
            assert cell.is_shorted, "voltage collapsed but the model says it is not shorted"
            result.append(Cycle(q_ch / 3.6 / mass, 0.0, 0.0, True))
            return result
        q_dis, v_mean = discharge(cell, i_dis, v_min_li - offset, dt)
        result.append(Cycle(q_ch / 3.6 / mass, q_dis / 3.6 / mass, v_mean, False))
    return result


def retention(cycles: list[Cycle]) -> float:
    """Last discharge capacity over the second (the first includes the formation losses)."""
    return cycles[-1].discharge_mah_g / cycles[1].discharge_mah_g


# --- protocol, sign conventions, state ------------------------------------------------------------


def test_full_cell_is_an_electrical_and_impedance_load_with_a_state() -> None:
    cell = make_cell()
    assert isinstance(cell, ElectricalLoad)
    assert isinstance(cell, ImpedanceLoad)
    assert not cell.is_shorted
    # 12 mg/cm² of NMC811 at 200 mAh/g on 0.785 cm²: 1 C = 2.4 mA/cm² (DOMAIN.md §2.3: 1.15–3.1).
    assert active_mass_g(cell) == pytest.approx(9.4e-3, rel=0.01)
    assert cell.c_rate_current_a(1.0) / 0.785 * 1e3 == pytest.approx(2.4, rel=0.01)
    # As made: discharged, OCV of fully lithiated NMC811 vs Li-In, no charge passed.
    state = cell.state
    assert state.extracted_mah_g == 0.0 and state.state_of_charge == 0.0
    assert 2.5 < state.ocv_v < 3.0
    assert cell.voltage(0.0) == pytest.approx(state.ocv_v)
    # Positive current charges: Li leaves the cathode, the voltage rises above the OCV.
    i = cell.c_rate_current_a(0.1)
    assert cell.voltage(i) > cell.voltage(0.0) > cell.voltage(-i)
    cell.advance(3600.0, i)
    assert cell.state.extracted_mah_g > 10.0
    assert cell.state.charge_passed_c == pytest.approx(i * 3600.0)
    assert cell.state.ionic_charge_c == pytest.approx(i * 3600.0)  # no short: all of it is ionic


def test_voltage_rises_with_current_in_every_state() -> None:
    # The instrument simulator finds the current of a voltage set-point by bisection.
    cell = make_cell()
    currents = [cell.c_rate_current_a(c) for c in np.linspace(-3.0, 3.0, 61)]
    for _ in range(3):
        for _ in range(4):
            volts = [cell.voltage(i) for i in currents]
            assert all(b > a for a, b in itertools.pairwise(volts))
            cell.advance(2 * 3600.0, cell.c_rate_current_a(0.1))
        discharge(cell, cell.c_rate_current_a(0.5), V_MIN_LI - 0.62, 120.0)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(KeyError, match="NMC811"):
        make_cell(cathode="NMC999")
    with pytest.raises(KeyError, match="Li-In"):
        make_cell(anode="Na")
    with pytest.raises(KeyError, match="Li6PS5Cl"):
        make_cell(electrolyte="unobtainium")
    with pytest.raises(ValueError):
        make_cell(active_fraction=0.0)
    with pytest.raises(ValueError):
        make_cell(cathode_loading_mg_cm2=-1.0)
    with pytest.raises(ValueError):
        make_cell().advance(-1.0, 0.0)
    with pytest.raises(ValueError):
        make_cell().pressure_pa = -1.0
    with pytest.raises(ValueError):
        make_cell().impedance(0.0)
    assert make_cell(cathode="ncm811", anode="LiIn").cathode.name == "NMC811"


# --- calibration: DOMAIN.md §2.3 -----------------------------------------------------------------


def test_nmc811_li_in_first_cycles_at_5mpa_and_0p1c() -> None:
    cell = make_cell(5.0, anode="Li-In")
    first = cycle(cell, 0.1, 1, samples=400)[0]
    side_first = cell.state.side_charge_mah_cm2
    later = cycle(cell, 0.1, 4, samples=400)
    # "150 mAh/g at 5 MPa (LPSCl full cell)" [D], ±15 %.
    assert 150.0 * 0.85 < first.discharge_mah_g < 150.0 * 1.15
    # First-cycle Coulombic efficiency 75–90 %, then > 99 %, and > 99.5 % once formed.
    assert 0.75 < first.efficiency < 0.90
    assert all(c.efficiency > 0.99 for c in later)
    assert all(c.efficiency > 0.995 for c in later[1:])
    # ~30 % of the first-cycle loss goes to the cathode/SE interface (SE oxidation) [D].
    loss_mah_cm2 = (first.charge_mah_g - first.discharge_mah_g) * active_mass_g(cell) / 0.785
    assert 0.2 < side_first / loss_mah_cm2 < 0.45
    # Mean discharge voltage: ~3.8 V vs Li, i.e. ~3.2 V vs Li-In.
    assert 3.6 < first.mean_discharge_v + 0.62 < 3.95
    # The cathode/SE interface grew in the first cycles.
    fresh = make_cell().state.cathode_interface_resistance_ohm
    assert cell.state.cathode_interface_resistance_ohm > 1.5 * fresh


def test_li_in_voltages_are_0p62_v_below_li() -> None:
    li, li_in = make_cell(5.0, anode="Li"), make_cell(5.0, anode="Li-In")
    i = li.c_rate_current_a(0.1)
    for _ in range(5):
        assert li.state.ocv_v - li_in.state.ocv_v == pytest.approx(0.62, abs=1e-9)
        # Under current the two anodes' small overpotentials differ by a few mV at most.
        assert li.voltage(i) - li_in.voltage(i) == pytest.approx(0.62, abs=0.01)
        assert li.voltage(-i) - li_in.voltage(-i) == pytest.approx(0.62, abs=0.01)
        li.advance(3600.0, i)
        li_in.advance(3600.0, i)


def test_capacity_retention_after_100_cycles_is_lower_at_1mpa_than_at_5mpa() -> None:
    low = cycle(make_cell(1.0), 0.1, 100, samples=100)
    high = cycle(make_cell(5.0), 0.1, 100, samples=100)
    assert len(low) == len(high) == 100
    assert not any(c.shorted for c in low + high)
    assert retention(low) < retention(high) - 0.03
    assert 0.85 < retention(high) < 0.99
    # Less stack pressure also wires less of the cathode from the start.
    assert low[1].discharge_mah_g < high[1].discharge_mah_g


def test_rate_capability_capacity_falls_with_c_rate_and_recovers() -> None:
    cell = make_cell(5.0)
    cycle(cell, 0.1, 1)  # formation
    capacities, voltages = [], []
    for rate in (0.1, 0.2, 0.5, 1.0, 2.0, 0.1):
        last = cycle(cell, rate, 2, charge_c_rate=0.1)[-1]
        capacities.append(last.discharge_mah_g)
        voltages.append(last.mean_discharge_v)
    assert all(b < a for a, b in itertools.pairwise(capacities[:5]))
    assert all(b < a for a, b in itertools.pairwise(voltages[:5]))
    assert capacities[3] < 0.92 * capacities[0]  # 1 C vs 0.1 C
    assert capacities[5] == pytest.approx(capacities[0], rel=0.03)  # back at 0.1 C: recovered


def test_fade_is_faster_at_1c_than_at_0p1c() -> None:
    slow = cycle(make_cell(5.0), 0.1, 60, samples=100)
    fast = cycle(make_cell(5.0), 1.0, 60, samples=100)
    assert fast[1].discharge_mah_g < slow[1].discharge_mah_g
    assert retention(fast) < retention(slow)


def test_higher_cut_off_gives_more_capacity_but_faster_fade() -> None:
    normal = cycle(make_cell(5.0), 0.1, 100, v_max_li=4.3, samples=100)
    high = cycle(make_cell(5.0), 0.1, 100, v_max_li=4.5, samples=100)
    assert high[1].discharge_mah_g > normal[1].discharge_mah_g + 8.0
    assert retention(high) < retention(normal) - 0.03


def test_licoo2_gives_about_132_mah_g_at_0p1c() -> None:
    cell = make_cell(5.0, cathode="LiCoO2", anode="Li-In")
    cycles = cycle(cell, 0.1, 3, v_max_li=4.2, v_min_li=3.0, samples=400)
    # "131.7 mAh/g at 0.1 C (LCO)" [D], ±15 %; the 3.9 V plateau vs Li.
    assert 131.7 * 0.85 < cycles[1].discharge_mah_g < 131.7 * 1.15
    assert 3.85 < cycles[1].mean_discharge_v + 0.62 < 4.0
    assert cycles[0].efficiency > 0.8


def test_warmer_cell_gives_more_capacity_at_1c() -> None:
    cold = cycle(make_cell(5.0, 25.0), 1.0, 2, charge_c_rate=0.1)
    warm = cycle(make_cell(5.0, 60.0), 1.0, 2, charge_c_rate=0.1)
    assert warm[1].discharge_mah_g > cold[1].discharge_mah_g + 5.0


def test_raising_stack_pressure_wires_more_of_the_cathode() -> None:
    cell = make_cell(0.5)
    before = cell.state.wired_fraction
    cell.pressure_pa = 10e6
    assert cell.state.wired_fraction > before + 0.05
    cell.pressure_pa = 0.5e6
    assert cell.state.wired_fraction == pytest.approx(before)


# --- the Li anode: shared with the symmetric cell ------------------------------------------------


def test_li_metal_voids_at_low_pressure_then_shorts_on_the_next_charge() -> None:
    # 1 MPa: 0.1 C (0.24 mA/cm²) is above the critical stripping current of Li | LPSCl (~0.22).
    cell = make_cell(1.0, anode="Li", seed=2)
    cycles = cycle(cell, 0.1, 5)
    assert cycles[-1].shorted
    assert len(cycles) >= 2  # the first charge plates a healthy interface
    assert cell.state.anode_void_fraction > 0.5  # the discharge stripped it into voids
    assert cell.state.short_kind is not None


def test_li_metal_shorts_at_high_current_density_even_at_5mpa() -> None:
    # 1 C = 2.4 mA/cm² plates above the CCD of Li | LPSCl (< 2 mA/cm² at 5 MPa, 25 °C).
    cell = make_cell(5.0, anode="Li", seed=2)
    cycles = cycle(cell, 1.0, 3)
    assert cycles[0].shorted


@pytest.mark.parametrize(("pressure_mpa", "c_rate"), [(1.0, 0.1), (5.0, 1.0), (1.0, 1.0)])
def test_li_in_does_not_short_where_li_metal_does(pressure_mpa: float, c_rate: float) -> None:
    cell = make_cell(pressure_mpa, anode="Li-In", seed=2)
    cycles = cycle(cell, c_rate, 10)
    assert len(cycles) == 10
    assert not any(c.shorted for c in cycles)
    assert not cell.is_shorted
    assert cell.state.filament_formations == 0
    assert cell.state.anode_void_fraction < 0.1


def test_li_metal_is_fine_at_5mpa_and_0p1c() -> None:
    cell = make_cell(5.0, anode="Li", seed=2)
    cycles = cycle(cell, 0.1, 5, samples=100)
    assert not any(c.shorted for c in cycles)
    assert 150.0 * 0.85 < cycles[0].discharge_mah_g < 150.0 * 1.15


def test_hard_short_drains_the_cell_and_collapses_the_voltage_and_impedance() -> None:
    cell = make_cell(5.0, anode="Li", seed=2)
    healthy = abs(cell.impedance(100.0))
    cycle(cell, 1.0, 1)
    for _ in range(100):
        if cell.state.short_kind == "hard":
            break
        cell.advance(60.0, cell.c_rate_current_a(1.0))
    assert cell.state.short_kind == "hard"
    r_short = cell.state.short_resistance_ohm
    assert r_short is not None and r_short < 1.0
    cell.advance(3600.0, 0.0)  # at rest the short discharges the cell through itself
    assert abs(cell.voltage(0.0)) < 0.01
    assert abs(cell.voltage(cell.c_rate_current_a(0.1))) < 0.01
    z = [cell.impedance(float(f)) for f in np.logspace(6, -1, 36)]
    assert all(abs(v) < 1.01 * r_short for v in z)
    assert abs(z[25]) < healthy / 100


# --- impedance -----------------------------------------------------------------------------------


def test_impedance_is_the_circuit_of_equivalent_circuit() -> None:
    cell = make_cell(5.0)
    cycle(cell, 0.1, 1)
    cell.advance(5 * 3600.0, cell.c_rate_current_a(0.1))  # mid state of charge
    ec = cell.equivalent_circuit()

    def model(f: float) -> complex:
        jw = 2j * math.pi * f
        s = cmath.sqrt(jw * ec["tau_diffusion_s"])
        sw = cmath.sqrt(jw * ec["tau_W_anode_s"])
        return (
            ec["R_bulk_ohm"]
            + ec["R_composite_ohm"]
            + ec["R_gb_ohm"] / (1 + ec["R_gb_ohm"] * ec["Q_gb"] * jw ** ec["n_gb"])
            + ec["R_cathode_ohm"] / (1 + ec["R_cathode_ohm"] * ec["Q_cathode"] * jw ** ec["n_cathode"])
            + ec["R_anode_ohm"] / (1 + ec["R_anode_ohm"] * ec["Q_anode"] * jw ** ec["n_anode"])
            + ec["R_W_anode_ohm"] * cmath.tanh(sw) / sw
            + ec["K_diffusion_ohm"] * cmath.tanh(s) / (s - cmath.tanh(s))
        )

    for f in np.logspace(6, -1, 29):
        z = cell.impedance(float(f))
        assert z.imag < 0
        assert z == pytest.approx(model(float(f)), rel=1e-6)
    # The diffusion element ends in the intercalation capacitance: a vertical line at low frequency.
    z_low = cell.impedance(1e-5)
    assert -z_low.imag == pytest.approx(1 / (2 * math.pi * 1e-5 * ec["C_intercalation_F"]), rel=0.01)


def test_cathode_arc_grows_with_cycling() -> None:
    cell = make_cell(5.0)
    offset = cell.anode_metal.potential_v
    r_cathode, low_f_real, apex = [], [], []
    for n in range(1, 41):
        cycle(cell, 0.2, 1)
        if n in (1, 10, 40):
            # EIS in the charged state after a rest, as a periodic check would take it.
            charge(cell, cell.c_rate_current_a(0.2), V_MAX_LI - offset, cell.c_rate_current_a(0.05), 90.0)
            cell.advance(3600.0, 0.0)
            ec = cell.equivalent_circuit()
            r_cathode.append(ec["R_cathode_ohm"])
            apex.append(ec["f_cathode_hz"])
            low_f_real.append(cell.impedance(1.0).real)
            discharge(cell, cell.c_rate_current_a(0.2), V_MIN_LI - offset, 90.0)
    assert all(b > a for a, b in itertools.pairwise(r_cathode))
    assert r_cathode[-1] > 1.3 * r_cathode[0]
    assert all(b > a for a, b in itertools.pairwise(low_f_real))
    assert all(b < a for a, b in itertools.pairwise(apex))  # a thicker interphase: a slower arc
    # Apex frequencies: cathode arc (tens to hundreds of Hz) well below the anode arc (kHz).
    assert 10.0 < apex[0] < 1e3
    assert ec["f_anode_hz"] > 10 * apex[0]


# --- volume change and determinism ---------------------------------------------------------------


def test_thickness_change_follows_the_electrodes_volume_change() -> None:
    um_per_mah_cm2 = 4.85  # Li, DOMAIN.md §3
    for cathode, sign in (("NMC811", -1.0), ("LiCoO2", +1.0)):
        cell = make_cell(5.0, cathode=cathode, anode="Li")
        i = cell.c_rate_current_a(0.1)
        cell.advance(5 * 3600.0, i)
        q_mah_cm2 = cell.state.ionic_charge_c / 3.6 / 0.785
        anode_um = um_per_mah_cm2 * q_mah_cm2
        cathode_um = cell.thickness_change_m() * 1e6 - anode_um
        assert math.copysign(1.0, cathode_um) == sign  # NMC shrinks on charge, LiCoO2 expands
        assert abs(cathode_um) < 0.5 * anode_um  # the Li anode dominates
    # Ni-rich NMC shrinks more near the top of charge than at mid state of charge.
    cell = make_cell(5.0, anode="Li")
    mid, top = [], []
    for sink in (mid, top):
        cell.advance(5 * 3600.0, cell.c_rate_current_a(0.1))
        sink.append(cell.thickness_change_m() * 1e6 - 4.85 * cell.state.ionic_charge_c / 3.6 / 0.785)
    assert top[0] < 2 * mid[0] < 0
    # Li-In moves less per charge than Li.
    li_in = make_cell(5.0, anode="Li-In")
    li_in.advance(5 * 3600.0, li_in.c_rate_current_a(0.1))
    li = make_cell(5.0, anode="Li")
    li.advance(5 * 3600.0, li.c_rate_current_a(0.1))
    assert 0 < li_in.thickness_change_m() < li.thickness_change_m()


def _trace(seed: int) -> list[float]:
    cell = make_cell(1.0, anode="Li", seed=seed)
    volts: list[float] = []
    i = cell.c_rate_current_a(0.2)
    for sign in (1.0, -1.0, 1.0, -1.0):
        for _ in range(150):
            cell.advance(60.0, sign * i)
            volts.append(cell.voltage(sign * i))
    return volts


def test_same_seed_same_calls_give_identical_voltages() -> None:
    assert _trace(7) == _trace(7)
    assert _trace(7) != _trace(8)
