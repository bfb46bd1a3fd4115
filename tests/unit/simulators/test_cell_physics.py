"""Physics checks of the simulated Li | sulfide SE | Li symmetric cell.

The calibration points (DOMAIN.md §2.1, §2.2) are checked as a lab would run them: the model is
driven in time steps like an instrument would, and a short is recognised from the terminal voltage
alone, then cross-checked against the model's own `is_shorted`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field

import pytest

from simulators.base import ElectricalLoad
from simulators.cell import CellParameters, SymmetricCell
from simulators.materials import electrolyte_names, get_electrolyte

SEEDS = (1, 2, 3, 4, 5)
DT_S = 10.0
# A healthy cell can never show less than the ohmic drop of its electrolyte (R_bulk, known from
# the EIS taken before every test). A voltage below a fifth of it for 3 samples in a row is a short.
SHORT_FRACTION_OF_OHMIC = 0.2
DEBOUNCE_SAMPLES = 3


def make_cell(
    pressure_mpa: float = 1.0, temperature_c: float = 25.0, seed: int = 1, **kwargs: object
) -> SymmetricCell:
    return SymmetricCell(
        CellParameters(
            pressure_pa=pressure_mpa * 1e6,
            temperature_k=temperature_c + 273.15,
            seed=seed,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def current_a(cell: SymmetricCell, j_ma_cm2: float) -> float:
    """Current density (mA/cm²) → current (A) for this cell's area."""
    return j_ma_cm2 * 1e-3 * cell.params.area_m2 * 1e4


@dataclass
class HalfCycle:
    shorted: bool
    v_end: float  # |V| at the last sample (V)
    trace: list[float] = field(default_factory=list)


def half_cycle(cell: SymmetricCell, j_ma_cm2: float, q_mah_cm2: float, dt_s: float = DT_S) -> HalfCycle:
    """Pass `q_mah_cm2` at `j_ma_cm2` (signed; + strips the WE), sampling V every ~dt_s."""
    current = current_a(cell, j_ma_cm2)
    duration = q_mah_cm2 / abs(j_ma_cm2) * 3600.0
    steps = max(1, math.ceil(duration / dt_s))
    h = duration / steps
    below = 0
    trace: list[float] = []
    for _ in range(steps):
        cell.advance(h, current)
        v = cell.voltage(current)
        trace.append(v)
        if abs(v) < SHORT_FRACTION_OF_OHMIC * abs(current) * cell.bulk_resistance_ohm():
            below += 1
            if below >= DEBOUNCE_SAMPLES:
                return HalfCycle(True, abs(v), trace)
        else:
            below = 0
    return HalfCycle(False, abs(trace[-1]), trace)


def ccd_ramp(
    cell: SymmetricCell,
    start: float = 0.05,
    step: float = 0.05,
    q_mah_cm2: float = 0.1,
    j_max: float = 5.0,
) -> float | None:
    """Constant-capacity CCD ramp, one plate/strip cycle of the WE per step.

    Returns the current density (mA/cm²) of the step during which the voltage collapsed, or None.
    """
    n = 0
    while (j := round(start + n * step, 6)) <= j_max:
        for sign in (-1.0, 1.0):  # plate the WE, then strip it
            if half_cycle(cell, sign * j, q_mah_cm2).shorted:
                assert cell.is_shorted, "voltage collapsed but the model says it is not shorted"
                return j
        n += 1
    return None


@dataclass
class Cycling:
    cycles_to_short: int | None
    polarization: list[float]  # |V| at the end of every completed half-cycle (V)


def cycle(cell: SymmetricCell, j_ma_cm2: float, q_mah_cm2: float, cycles: int) -> Cycling:
    """Symmetric cycling: plate then strip the WE; stop at the first detected short."""
    polarization: list[float] = []
    for c in range(1, cycles + 1):
        for sign in (-1.0, 1.0):
            result = half_cycle(cell, sign * j_ma_cm2, q_mah_cm2)
            if result.shorted:
                assert cell.is_shorted, "voltage collapsed but the model says it is not shorted"
                return Cycling(c, polarization)
            polarization.append(result.v_end)
    return Cycling(None, polarization)


def ccd(pressure_mpa: float, temperature_c: float = 25.0, seed: int = 1) -> float:
    """CCD (highest density completed without a short) of a default LPSCl cell."""
    shorted_at = ccd_ramp(make_cell(pressure_mpa, temperature_c, seed))
    assert shorted_at is not None, "the ramp never shorted"
    return shorted_at - 0.05


# --- calibration: DOMAIN.md §2.1 ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_ccd_at_1mpa_25c_is_below_0p25(seed: int) -> None:
    cell = make_cell(1.0, 25.0, seed)
    shorted_at = ccd_ramp(cell)
    assert shorted_at is not None
    assert 0.05 <= shorted_at - 0.05 < 0.25
    # The short came from voids: the electrodes had lost most of their contact.
    assert min(cell.state.contact_we, cell.state.contact_ce) < 0.5 * cell.state.equilibrium_contact


@pytest.mark.parametrize("seed", SEEDS)
def test_ccd_at_1mpa_80c_is_above_0p5(seed: int) -> None:
    assert ccd(1.0, 80.0, seed) > 0.5


# --- calibration: DOMAIN.md §2.2 (Kasemchainan et al. 2019) ------------------------------------
# Symmetric cycling at 1.0 mA/cm², 1.0 mAh/cm² per half-cycle, LPSCl, 25 °C.


@pytest.mark.parametrize("seed", SEEDS)
def test_3mpa_cycling_polarization_rises_then_shorts(seed: int) -> None:
    cell = make_cell(3.0, 25.0, seed)
    result = cycle(cell, 1.0, 1.0, cycles=30)
    assert result.cycles_to_short is not None
    assert 3 <= result.cycles_to_short <= 15
    pol = result.polarization
    # Rising from cycle to cycle (compare like with like: every second half-cycle) ...
    strips_we = pol[1::2]
    assert all(b > a for a, b in itertools.pairwise(strips_we))
    # ... and by a clear margin before the short, far beyond the interphase growth seen at 7 MPa.
    assert pol[-1] > 1.12 * pol[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_7mpa_cycling_is_stable_for_100_cycles(seed: int) -> None:
    cell = make_cell(7.0, 25.0, seed)
    result = cycle(cell, 1.0, 1.0, cycles=100)
    assert result.cycles_to_short is None
    assert not cell.is_shorted
    pol = result.polarization
    assert len(pol) == 200
    assert pol[-1] < 1.08 * pol[1]  # only the slow √t interphase growth
    assert cell.state.void_fraction_we < 0.02
    assert cell.state.void_fraction_ce < 0.02


# --- sensible responses --------------------------------------------------------------------------


def test_ccd_rises_with_pressure() -> None:
    means = [statistics.mean(ccd(p, 25.0, s) for s in (1, 2, 3)) for p in (1, 2, 3, 5, 10)]
    assert all(b > a for a, b in itertools.pairwise(means)), means


def test_ccd_rises_with_temperature() -> None:
    means = [statistics.mean(ccd(1.0, t, s) for s in (1, 2)) for t in (25.0, 50.0, 80.0)]
    assert all(b > a for a, b in itertools.pairwise(means)), means


def test_stripping_above_the_supply_opens_voids_within_a_half_cycle() -> None:
    # 1 MPa: 0.3 mA/cm² is above the critical stripping current; 7 MPa: far below it.
    low, high = make_cell(1.0), make_cell(7.0)
    low_strip = half_cycle(low, +0.3, 0.1)
    high_strip = half_cycle(high, +0.3, 0.1)
    assert low.state.void_fraction_we > 0.3
    assert low.state.void_fraction_ce == pytest.approx(0.0, abs=1e-9)  # plating opens no voids
    assert abs(low_strip.trace[-1]) > 1.5 * abs(low_strip.trace[0])  # runaway polarization
    assert high.state.void_fraction_we < 0.01
    assert abs(high_strip.trace[-1]) < 1.02 * abs(high_strip.trace[0])


def test_bulk_resistance_follows_the_arrhenius_formula() -> None:
    cell = make_cell()
    area_cm2 = 0.785
    # 500 µm Li6PS5Cl at 25 °C: 0.05 cm / 1.3e-3 S/cm = 38.5 Ω·cm² (DOMAIN.md §3: ~38 Ω·cm²).
    assert cell.bulk_resistance_ohm() * area_cm2 == pytest.approx(38.0, rel=0.10)
    # σ(T) = σ25·exp[−Ea/k·(1/T − 1/298.15)], computed here independently.
    cell.temperature_k = 353.15
    sigma = 1.3e-3 * math.exp(-0.33 / 8.617333e-5 * (1 / 353.15 - 1 / 298.15))
    assert cell.bulk_resistance_ohm() == pytest.approx(0.05 / sigma / area_cm2, rel=1e-4)
    # Thicker separator: proportionally larger; larger area: inversely smaller.
    thick = make_cell(thickness_m=1e-3)
    big = make_cell(area_m2=2 * 0.785e-4)
    assert thick.bulk_resistance_ohm() == pytest.approx(2 * make_cell().bulk_resistance_ohm())
    assert big.bulk_resistance_ohm() == pytest.approx(0.5 * make_cell().bulk_resistance_ohm())


def test_li7p3s11_conducts_better_than_li3ps4() -> None:
    fast = make_cell(material="Li7P3S11").bulk_resistance_ohm()
    slow = make_cell(material="LPS").bulk_resistance_ohm()
    assert fast < slow / 20


def _interphase_growth(material: str, hours: tuple[float, ...]) -> list[float]:
    cell = make_cell(7.0, material=material)
    r0 = cell.state.interphase_resistance_ohm
    grown = []
    elapsed = 0.0
    for h in hours:
        cell.advance(h * 3600.0 - elapsed, 0.0)
        elapsed = h * 3600.0
        grown.append(cell.state.interphase_resistance_ohm - r0)
    return grown


def test_passivating_interphase_grows_as_sqrt_t_and_lgps_linearly() -> None:
    lpscl = _interphase_growth("LPSCl", (6.0, 24.0))
    lgps = _interphase_growth("LGPS", (6.0, 24.0))
    assert lpscl[0] > 0 and lgps[0] > 0
    assert lpscl[1] / lpscl[0] == pytest.approx(2.0, rel=0.02)  # √4
    assert lgps[1] / lgps[0] == pytest.approx(4.0, rel=0.02)
    # The interphase shows up in the interfacial resistance an EIS would measure.
    cell = make_cell(7.0, material="LGPS")
    before = cell.interface_resistance_ohm()
    cell.advance(24 * 3600.0, 0.0)
    assert cell.interface_resistance_ohm() > 1.5 * before


def test_good_interface_overpotential_and_ocv() -> None:
    cell = make_cell(7.0)
    assert isinstance(cell, ElectricalLoad)
    assert cell.voltage(0.0) == 0.0
    i = current_a(cell, 0.5)
    # Overpotential beyond the bulk ohmic drop at 0.5 mA/cm²: ~10–20 mV for a good interface.
    eta = cell.voltage(i) - i * cell.bulk_resistance_ohm()
    assert 0.010 < eta < 0.025
    assert cell.voltage(-i) == pytest.approx(-cell.voltage(i))  # symmetric cell, odd in current
    # Still no OCV after cycling (identical electrodes).
    half_cycle(cell, 0.5, 0.1)
    assert cell.voltage(0.0) == 0.0


def test_pressure_and_temperature_setters_change_the_cell() -> None:
    cell = make_cell(1.0)
    r_int = cell.interface_resistance_ohm()
    cell.pressure_pa = 7e6
    assert cell.state.equilibrium_contact > 0.85
    cell.advance(10 * 3600.0, 0.0)  # creep closes the gap over hours, not at once
    assert cell.state.contact_we > 0.8
    assert cell.interface_resistance_ohm() < 0.75 * r_int
    r_bulk = cell.bulk_resistance_ohm()
    cell.temperature_k = 333.15
    assert cell.bulk_resistance_ohm() < 0.5 * r_bulk


def test_unknown_material_raises_keyerror_listing_valid_names() -> None:
    with pytest.raises(KeyError) as info:
        get_electrolyte("Li6PS5I-typo")
    message = str(info.value)
    for name in ("Li6PS5Cl", "Li10GeP2S12", "LGPS", "Li9.54Si1.74P1.44S11.7Cl0.3"):
        assert name in message
    with pytest.raises(KeyError):
        make_cell(material="unobtainium")
    assert get_electrolyte("lpscl").name == "Li6PS5Cl"
    assert get_electrolyte(" LGPS ").name == "Li10GeP2S12"
    assert get_electrolyte("LPS").name == "Li3PS4"
    assert len(electrolyte_names()) > 6


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        make_cell().advance(-1.0, 0.0)
    with pytest.raises(ValueError):
        make_cell(thickness_m=0.0)
    with pytest.raises(ValueError):
        make_cell().pressure_pa = -1.0


# --- shorts ----------------------------------------------------------------------------------------


def _voltages_through_first_short(seed: int) -> list[float]:
    """1 MPa CCD ramp, recording every sample, continued 30 min past the detected short."""
    cell = make_cell(1.0, seed=seed)
    volts: list[float] = []
    j = 0.05
    while True:
        for sign in (-1.0, 1.0):
            result = half_cycle(cell, sign * j, 0.1)
            volts += result.trace
            if result.shorted:
                for _ in range(180):
                    cell.advance(DT_S, current_a(cell, sign * j))
                    volts.append(cell.voltage(current_a(cell, sign * j)))
                return volts
        j = round(j + 0.05, 6)


def test_same_seed_same_calls_give_identical_voltages() -> None:
    first = _voltages_through_first_short(7)
    again = _voltages_through_first_short(7)
    other = _voltages_through_first_short(8)
    assert first == again
    assert first != other


def test_hard_short_stays_and_clamps_the_voltage() -> None:
    cell = make_cell(1.0, seed=3)
    assert ccd_ramp(cell) is not None
    # Keep cycling until the filament has hardened (it may have already).
    for _ in range(20):
        if cell.state.short_kind == "hard":
            break
        half_cycle(cell, -0.5, 0.1)
    assert cell.state.short_kind == "hard"
    i = current_a(cell, 0.5)
    for _ in range(10):  # 10 cycles at ±0.5 mA/cm² plus rests: the bridge never lets go
        for sign in (-1.0, 1.0):
            trace = half_cycle(cell, sign * 0.5, 0.5).trace
            assert max(abs(v) for v in trace) < 2e-3
        cell.advance(3600.0, 0.0)
        assert cell.is_shorted
    assert cell.state.short_kind == "hard"
    assert abs(cell.voltage(i)) < 1e-3
    assert cell.state.short_resistance_ohm is not None
    assert cell.state.short_resistance_ohm < 1.0


def _find_soft_short_recovery() -> tuple[list[float], list[str | None]] | None:
    """Cycle 3 MPa cells (1 mA/cm², 1 mAh/cm²) until one shows a soft short that burns out."""
    for seed in range(1, 21):
        cell = make_cell(3.0, seed=seed)
        i = current_a(cell, 1.0)
        volts: list[float] = []
        kinds: list[str | None] = []
        for n in range(30 * 720):  # 15 cycles, 1 h half-cycles sampled every 5 s
            sign = -1.0 if (n // 720) % 2 == 0 else 1.0
            cell.advance(5.0, sign * i)
            volts.append(cell.voltage(sign * i))
            kinds.append(cell.state.short_kind)
            if kinds[-1] == "hard":
                break
        if "soft" in kinds:
            start = kinds.index("soft")
            if None in kinds[start:] and len(kinds) - kinds.index(None, start) >= 5:
                return volts, kinds
    return None


def test_soft_short_is_noisy_partial_and_can_recover() -> None:
    found = _find_soft_short_recovery()
    assert found is not None, "no soft short recovered in 20 seeds"
    volts, kinds = found
    start = kinds.index("soft")
    end = start + kinds[start:].index(None)
    before = abs(volts[start - 1])
    during = [abs(v) for v in volts[start:end]]
    after = [abs(v) for v in volts[end : end + 5]]
    # Partial: well below the healthy polarization but not a dead short.
    assert 0.05 * before < statistics.median(during) < 0.9 * before
    # Noisy: the filament's contact flickers.
    if len(during) >= 3:
        assert statistics.pstdev(during) > 0.05 * statistics.mean(during)
    # Recovered: back to (about) the healthy polarization once the filament burnt out.
    assert all(0.8 * before < v < 1.3 * before for v in after)


def test_each_seed_is_a_different_pellet_within_a_plausible_scatter():
    resistances = [
        SymmetricCell(CellParameters(seed=seed)).interface_resistance_ohm() for seed in range(1, 21)
    ]
    assert SymmetricCell(CellParameters(seed=1)).interface_resistance_ohm() == resistances[0]
    assert len(set(resistances)) == len(resistances)
    median = sorted(resistances)[len(resistances) // 2]
    assert all(0.6 * median < r < 1.6 * median for r in resistances)
    assert max(resistances) / min(resistances) > 1.1
