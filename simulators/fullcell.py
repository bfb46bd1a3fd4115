"""Physics model of a composite cathode | sulfide solid electrolyte | Li or Li-In full cell.

Why mechanisms and not a capacity-fade curve: a simulated cycling, rate or pressure test is only
useful if the cell answers to the test variables (C-rate, cut-off voltages, stack pressure,
temperature, loading, anode) the way a real one does, including combinations nobody tabulated. So
capacity, Coulombic efficiency, fade and resistance growth all emerge from the mechanisms below; the
literature numbers (DOMAIN.md §2.3) are checks, not inputs.

Sign convention (same as `simulators.base.ElectricalLoad` and DOMAIN.md §1): positive current
charges the cell: Li leaves the cathode (the WE, instrument HI) and is plated on / alloyed into the
anode. The terminal voltage V = φ(cathode) − φ(anode) is the cell voltage vs the anode: vs Li-In it
is 0.62 V lower than vs Li. No measurement noise is added here (the instrument simulator does that).

Units: the public interface is SI (A, V, s, Pa, K, m). Inside, lab units: current density j in
mA/cm² of nominal area, specific current i in mA/g of active material, capacity q in mAh/g
extracted from the as-made cathode (`simulators.cathodes`), areal resistance in Ω·cm².
Marks: [D] DOMAIN.md, [L] a named paper, [T] typical practice / illustrative — a default chosen to
make the checks below come out of the mechanisms, not a measured constant.

Geometry (from the stated loading): active mass m = loading·active fraction per cm²; the rest of the
composite is SE (1.9 g/cm³ [T]); 10 % porosity [T] gives the composite thickness L_c (~58 µm for
17 mg/cm² NMC811), the active volume fraction φ and the SE fraction ε. 1 C = m·(specific capacity)
/ 1 h, so 12 mg/cm² NMC811 is 2.4 mAh/cm² and 1 C = 2.4 mA/cm² [D: 1.15–3.1 mA/cm²].

Mechanisms:

F1. Open-circuit voltage.  E_c(q) vs Li from the cathode's smooth tabulated curve, plus a small
    hysteresis ±h/2 (h = 10–15 mV [T]) whose branch variable m follows the direction of
    intercalation over q_h = 5 mAh/g [T]. Anode at 0 V (Li) or +0.62 V (Li-In) [D]:
    OCV = E_c(q) + m·h/2 − E_anode.
F2. Wired active material.  Only particles touching both the SE and the carbon take part: the
    wired share w = w_max·(P + P_res)/(P + P_res + P_u)·(1 − d), P_u = 0.2 MPa, P_res = 0.05 MPa
    (contact left from fabrication at 300–400 MPa) [T], w_max per cathode (NMC811 0.81, NMC622
    0.88, LiCoO2 0.92 [T]), d the mechanical damage of F6: 0.77 of NMC811 at 5 MPa, 0.68 at 1 MPa.
    Particles that lose contact keep their Li (lost to cycling); particles that regain it (pressure
    raised) bring theirs back. Capacity ∝ w, so it rises with stack pressure.
F3. Li diffusion in the particles (the concentration overpotential).  Quasi-steady sphere: the
    surface state is q_s = q + i_w·τ/15 (i_w in mA/g of wired material, τ = R_p²/D in h: the
    parabolic-profile result c_s − c_avg = j·R_p/5D). τ is ~0.2 h at mid state of charge and grows
    steeply near full lithiation, τ(q) = τ0·(1 + A·e^(−q/w)) (NMC811: A = 800, w = 13 mAh/g)
    [L/T: the kinetic hindrance of Ni-rich NMC]. Insertion (discharge) is governed by the slow
    lithiated state, τ(q): the surface fills up while Li stays out of the cores, ~26 mAh/g at 0.1 C,
    ~50 at 1 C — most of the first-cycle loss, regained by slow cycling, and the rate capability.
    Extraction (charge) by the delithiated surface, τ(q_s), solved self-consistently: a ~0.4 V bump
    at the very start of the first charge that fades within ~20 mAh/g. D is Arrhenius (0.40 eV).
F4. Ohmic and interfacial overpotentials.  Separator L/(σ(T)·A) [D] + composite ionic resistance
    L_c/(3·σ(T)·ε^1.5) (Bruggeman, ion-limited electrode average; ~5 Ω·cm²) + the cathode/SE
    interface on the true contact area A_t = w·s·3·φ·L_c/R_p (R_p = 2.5 µm, SE coverage s = 0.3
    [T]; ~7 cm² per cm²): interphase r_cei = r0 + ρ·Q_t (r0 = 150 Ω·cm² of contact, a coated-oxide
    interface; ρ = 3e4 Ω·cm² per mAh/cm² of side charge Q_t, both per contact area [T]; Ea 0.35 eV)
    and Butler–Volmer charge transfer with j0 = 0.2 mA/cm² of contact [T], + the anode interface
    (`simulators.cell.LithiumElectrode`, mechanisms 2–4 of the symmetric model). Fresh NMC811 cell
    at 5 MPa: cathode interface 40 Ω·cm², ~100 after the first cycle, ~210 after 100 [D: cathode
    side 150–2600 Ω·cm²]; 1 C polarization ~0.4 V at mid state of charge.
F5. Side reaction: SE oxidation at the cathode (Coulombic inefficiency and the interface growth).
    Per cm² of contact, i_side = k·exp[(E_s − 4.0 V)/0.1 V]·(θ + r_p·Q_f/(Q_f + Q_t)), saturating
    at 1 mA/cm² (transport through the interphase), k = 4 µA/cm² at 25 °C (Ea 0.5 eV) [T],
    E_s = E_c(q_s). θ is the fresh interface (Q_f = 0.015 mAh/cm² of contact), consumed by its own
    share, dθ/dt = −i_fresh/Q_f: it oxidises on the first charge; the passivated rest (r_p = 0.007)
    thins as the interphase grows [T]. The electrons it delivers lithiate the cathode, so it costs
    charge in both directions and self-discharges a charged cell at rest; its products are the
    interphase of F4. A higher cut-off oxidises more and grows the interface faster. NMC811 at
    0.1 C: ~10 mAh/g in the first cycle, 31 % of the first-cycle loss [D: "~30 %"], then ~0.2 %
    per cycle.
F6. Mechanical contact loss.  The active material breathes (`Cathode.volume`: NMC811 −5 % by
    4.3 V, LiCoO2 +2 %), and every strain excursion cracks or delaminates some particles from the
    SE, less so under a stack pressure that keeps the SE following the particles [T]:
        dd = k_d·|dε|·|ε|·[1 + (i_w·τ0/15 / δq_c)²]·P_d/(P + P_d)·(1 − d),
    k_d = 1, δq_c = 3 mAh/g, P_d = 2 MPa. |dε|·|ε| sums to ε_max² per cycle, so a higher cut-off
    (NMC's H2→H3 collapse) is much more damaging; the bracket is diffusion-induced stress, the
    core–surface difference of F3 at mid state of charge (×2.3 at 1 C): high rates are more
    damaging. d unwires material (F2) and so also shrinks the true contact (F4: resistance grows).
F7. The anode is a `LithiumElectrode` (shared with the symmetric cell): Li metal loses contact to
    voids when stripped (discharge) above its critical stripping current (0.22 mA/cm² at 1 MPa,
    25 °C, so even 0.1 C of a 2.4 mAh/cm² cathode), nucleates dendrites when plated (charge) on a
    voided contact or above its CCD, and grows filaments (`Filament`: soft, noisy, burn-out;
    hard). A Li-In alloy (`LI_IN_ALLOY`) takes plated Li into the alloy and resupplies stripped Li
    by diffusion through it, so it neither voids nor grows filaments at these currents.
F8. Terminal voltage.  V(i) = OCV(q_s(i)) − E_anode + i·R_ohm + η_ct,c(i) + η_anode(i), rising with
    i (as instrument bisection assumes). With a filament, I = I_ion + V/R_fil is solved by a
    bracketing (Illinois) iteration: at zero terminal current the ionic current discharges the cell
    through the short, so a hard short drains it to ~0 V.
F9. Thickness.  Cathode: L_c·φ·ε(q) of laterally constrained particles (wired and isolated, each at
    its own state); anode: +4.85 µm per mAh/cm² plated on Li [D] (3.0 for Li-In [T]). NMC cells
    with a Li anode thicken on charge (Li wins), which a fixed-gap pressure rig sees as a pressure
    rise (Δp = −ε_vol·K, DOMAIN.md §2.2).
F10. Impedance (math sign convention, capacitive Im Z < 0): R_bulk + (R_gb ∥ CPE_gb) (separator,
    `simulators.cell.separator_elements`) + R_composite + (R_cat ∥ CPE_cat) (F4 linearised at the DC
    current; Q = 10 µF·s^(n−1)/cm² of contact, n = 0.85 [T]; apex ~150 Hz fresh, ~50 Hz after the
    first cycle, ~20 Hz after 100) + anode (R_int ∥ CPE_dl) + W_anode (`LithiumElectrode.impedance`,
    ~10 kHz) + a spherical finite-space diffusion element K·tanh(s)/(s − tanh(s)), s = √(jωτ),
    K = τ/(3·C_int), C_int the intercalation capacitance dQ/dE (low frequency: K/5 + 1/(jωC_int),
    the K/5 being exactly the quasi-steady diffusion resistance of F3). A filament shunts it all.

F11. Li extrusion into the separator's pores (`simulators.cell.PoreExtrusion`, mechanism 11 of the
    symmetric model): above the pore-entry pressure a Li-metal anode creeps into the separator's pore
    channels, current or not, and each channel it bridges is a filament formation (F7). Only the
    anode pushes Li in, so a channel is bridged when the front has run its whole length, τ·L, not
    half of it as in a symmetric cell: 2^(n+1) = 8 times later at the same conditions. Li-In does
    not extrude (an intermetallic, far harder than Li). 500 µm LPSCl, Li anode, open circuit,
    25 °C: first short after ~115 h at 25 MPa, ~6 h at 75 MPa (median of seeds); none ≤ 10 MPa.

Seeded randomness as in `simulators.cell`: one stream each for nucleation, new filaments, flicker,
fuse, the pores and the once-per-cell scatter (anode: j_pl, j0, R0 ±10 %; cathode: w_max ±3 %, r0 ±10 % [T]).
Same seed and same calls give the same results.

Resulting calibration (tests/unit/simulators/test_fullcell.py; NMC811 | 500 µm LPSCl | Li-In,
12 mg/cm², 0.785 cm², 25 °C, CC-CV (C/20) / CC, 2.5–4.3 V vs Li): at 5 MPa and 0.1 C, first
charge 189 and discharge 158 mAh/g (CE 83 %) [D: 150 mAh/g], then CE 99.8 %, mean discharge
voltage 3.84 V vs Li; retention after 100 cycles 94 % at 5 MPa, 87 % at 1 MPa; discharge at
0.1/0.2/0.5/1/2 C: 158/152/144/137/129 mAh/g; retention after 60 cycles 96 % at 0.1 C, 93 % at
1 C; 4.5 V cut-off: 174 mAh/g but 87 % after 100 cycles (4.3 V: 158, 94 %). LiCoO2, 3.0–4.2 V:
132 mAh/g [D: 131.7]. Li metal instead of Li-In shorts at 1 MPa and 0.1 C (voids on the first
discharge, filament on the second charge) and at 5 MPa and 1 C (plating above the CCD); Li-In does
not.

Not modelled: Li inventory loss at the anode (Li and Li-In are in excess), electrolyte reduction at
the anode beyond the interphase, cathode particle cracking exposing fresh surface to F5, carbon
decomposition, the composite's ionic resistance as a transmission line (a resistor here), pressure
dependence of the OCV (−0.13 mV/MPa), heat.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, field

from simulators.cathodes import Cathode, get_cathode
from simulators.cell import (
    FARADAY_C_MOL,
    GAS_J_MOL_K,
    GB_CPE_EXPONENT,
    ElectrodeMetal,
    Filament,
    LithiumElectrode,
    LithiumMechanics,
    PoreExtrusion,
    ShortKind,
    apex_frequency_hz,
    arrhenius_ev,
    get_electrode_metal,
    r_cpe_impedance,
    random_streams,
    separator_elements,
)
from simulators.materials import Electrolyte, get_electrolyte

MAH_C = 3.6  # coulombs per mAh


@dataclass(frozen=True)
class CompositeMechanics:
    """Parameters of the composite cathode and its interface with the SE. Lab units.

    The defaults are the values in the module docstring (all [T]); change them to explore, not to
    calibrate a result.
    """

    # Wiring (F2)
    max_wired_fraction: float | None = None  # w_max; None: the cathode's typical `wired_fraction`
    wiring_pressure_mpa: float = 0.2  # P_u
    residual_pressure_mpa: float = 0.05  # P_res: contact left from fabrication
    # Geometry (F4)
    se_density_g_cm3: float = 1.9  # the non-active part of the composite, taken as SE
    porosity: float = 0.10
    particle_radius_um: float = 2.5
    se_coverage: float = 0.3  # share of a wired particle's surface touching SE
    # Cathode/SE interface per cm² of true contact (F4)
    interphase_r0_ohm_cm2: float = 150.0
    interphase_per_side_charge: float = 3e4  # ρ: Ω·cm² per mAh/cm² of side charge
    interphase_ea_ev: float = 0.35  # of ion conduction through the interphase
    exchange_current_ma_cm2: float = 0.2
    exchange_ea_ev: float = 0.35
    # Side reaction (F5)
    side_rate_ma_cm2: float = 4e-3  # k at side_reference_v on a fresh interface
    side_reference_v: float = 4.0  # vs Li
    side_tafel_v: float = 0.1  # potential per e-fold of the rate
    side_ea_ev: float = 0.5
    side_limit_ma_cm2: float = 1.0  # transport limit of the oxidation through the interphase
    fresh_side_capacity_mah_cm2: float = 0.015  # Q_f
    passivated_side_fraction: float = 0.007  # r_p
    # Mechanical damage (F6)
    damage_rate: float = 1.0  # k_d
    critical_mismatch_mah_g: float = 3.0  # δq_c: core–surface difference that doubles the damage
    damage_pressure_mpa: float = 2.0  # P_d
    # Hysteresis (F1)
    hysteresis_capacity_mah_g: float = 5.0  # q_h
    # Impedance (F10)
    double_layer_q_f_cm2: float = 10e-6  # CPE Q per cm² of true contact (F·s^(n−1)/cm²)
    double_layer_exponent: float = 0.85
    # Cell-to-cell scatter: log-normal σ on w_max and on r0
    wiring_spread: float = 0.03
    interphase_spread: float = 0.10
    # Numerics
    max_substep_s: float = 60.0  # under current
    max_rest_substep_s: float = 3600.0
    max_capacity_step_mah_g: float = 1.0  # largest change of q per internal step


@dataclass(frozen=True)
class FullCellParameters:
    """What a user states about a full cell when building it. SI units except the loading.

    Attributes:
        cathode: Cathode active material name or alias (see `simulators.cathodes`).
        electrolyte: Separator (and composite) electrolyte formula or alias (`simulators.materials`).
        anode: ``"Li"`` or ``"Li-In"`` (or an alias, see `simulators.cell.get_electrode_metal`).
        area_m2: Electrode area; default a 10 mm pellet, 0.785 cm².
        separator_thickness_m: Separator thickness; default 0.5 mm.
        cathode_loading_mg_cm2: Areal mass of the composite cathode (mg/cm²).
        active_fraction: Mass share of active material in the composite; the default 0.7 × 17.1
            mg/cm² is 12 mg/cm² of active material.
        specific_capacity_mah_g: Capacity of the active material at its nominal cut-off (mAh/g),
            which defines 1 C; None takes the cathode's (NMC811: 200). Scales the capacity axis.
        pressure_pa: Initial stack pressure; default 5 MPa.
        temperature_k: Initial temperature; default 25 °C.
        seed: Seed of every random draw the cell makes.
        composite: Cathode mechanism parameters (`CompositeMechanics`).
        mechanics: Anode (Li/SE interface) and filament parameters (`LithiumMechanics`).
    """

    cathode: str = "NMC811"
    electrolyte: str = "Li6PS5Cl"
    anode: str = "Li-In"
    area_m2: float = 0.785e-4
    separator_thickness_m: float = 500e-6
    cathode_loading_mg_cm2: float = 17.1
    active_fraction: float = 0.7
    specific_capacity_mah_g: float | None = None
    pressure_pa: float = 5e6
    temperature_k: float = 298.15
    seed: int = 0
    composite: CompositeMechanics = field(default_factory=CompositeMechanics)
    mechanics: LithiumMechanics = field(default_factory=LithiumMechanics)

    def __post_init__(self) -> None:
        # Fail early, with the lists of valid names.
        get_cathode(self.cathode)
        get_electrolyte(self.electrolyte)
        get_electrode_metal(self.anode)
        for name in ("area_m2", "separator_thickness_m", "cathode_loading_mg_cm2", "temperature_k"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.active_fraction <= 1:
            raise ValueError(f"active_fraction must be in (0, 1], got {self.active_fraction!r}")
        if self.specific_capacity_mah_g is not None and not self.specific_capacity_mah_g > 0:
            raise ValueError(f"specific_capacity_mah_g must be > 0, got {self.specific_capacity_mah_g!r}")
        if not self.pressure_pa >= 0:
            raise ValueError(f"pressure_pa must be >= 0, got {self.pressure_pa!r}")


@dataclass(frozen=True)
class FullCellState:
    """Read-only snapshot of the full cell's internal state, for tests, plots and other simulators.

    Attributes:
        extracted_mah_g: Capacity extracted from the wired particles, q (mAh/g of active material).
        state_of_charge: Charge stored in the wired particles over the nominal capacity (0 = as made).
        wired_fraction: Share of the active material wired to SE and carbon, w (0..1).
        isolated_extracted_mah_g: q of the particles that lost contact (their Li is stranded).
        damage: Mechanical damage d (0..1) of F6.
        side_charge_mah_cm2: Charge consumed by SE oxidation so far, per nominal area (mAh/cm²).
        cathode_potential_v: Equilibrium cathode potential vs Li at the present state (V).
        ocv_v: Open-circuit cell voltage vs the anode, what a long rest would show (V).
        cathode_interface_resistance_ohm: Interphase + charge transfer of the cathode at zero current (Ω).
        anode_interface_resistance_ohm: Same for the anode (Ω).
        anode_contact: True contact fraction of the anode.
        anode_void_fraction: Share of the anode's equilibrium contact lost to voids (≥ 0).
        short_resistance_ohm: Resistance of the filament short, or None.
        short_kind: ``"soft"``, ``"hard"`` or None.
        filament_formations: How many filaments have nucleated so far.
        thickness_change_m: Cell thickness change since assembly (m), see `FullCell.thickness_change_m`.
        elapsed_s: Time integrated by `advance` (s).
        charge_passed_c: Net terminal charge ∫I dt (C); positive = charged.
        charge_throughput_c: ∫|I| dt (C).
        ionic_charge_c: Net charge carried by Li⁺ through the separator (C), the filament excluded.
        pore_front_um: How far the anode's Li has extruded into the separator's pores (µm, F11).
        pore_channels_connected: How many pore channels the anode's Li has bridged so far.
    """

    extracted_mah_g: float
    state_of_charge: float
    wired_fraction: float
    isolated_extracted_mah_g: float
    damage: float
    side_charge_mah_cm2: float
    cathode_potential_v: float
    ocv_v: float
    cathode_interface_resistance_ohm: float
    anode_interface_resistance_ohm: float
    anode_contact: float
    anode_void_fraction: float
    short_resistance_ohm: float | None
    short_kind: ShortKind | None
    filament_formations: int
    thickness_change_m: float
    elapsed_s: float
    charge_passed_c: float
    charge_throughput_c: float
    ionic_charge_c: float
    pore_front_um: float = 0.0
    pore_channels_connected: int = 0


class FullCell:
    """A composite cathode | SE | Li or Li-In full cell: an `ElectricalLoad` and an `ImpedanceLoad`.

    Why a stateful object with `advance`/`voltage`: the instrument simulator owns the clock and the
    current; the cell integrates its state over the time it is told and reports the voltage.
    `pressure_pa` and `temperature_k` may be set at any time (by a pressure rig or heater model):
    the composite's wiring follows the pressure at once, the anode contact creeps toward it.
    """

    def __init__(self, params: FullCellParameters | None = None) -> None:
        self.params = p = params or FullCellParameters()
        self.cathode: Cathode = get_cathode(p.cathode)
        self.electrolyte: Electrolyte = get_electrolyte(p.electrolyte)
        self.anode_metal: ElectrodeMetal = get_electrode_metal(p.anode)
        self._cm = cm = p.composite
        self._mech = p.mechanics
        self._area_cm2 = p.area_m2 * 1e4
        self._sep_cm = p.separator_thickness_m * 1e2
        # Capacity axis: the cathode's table in "table mAh/g"; a stated capacity scales the mass.
        self._capacity_mah_g = p.specific_capacity_mah_g or self.cathode.specific_capacity_mah_g
        self._scale = self._capacity_mah_g / self.cathode.specific_capacity_mah_g
        # Geometry per cm² of nominal area (module docstring): masses in g, volumes in cm³ = cm.
        active_g_cm2 = p.cathode_loading_mg_cm2 * p.active_fraction * 1e-3
        se_g_cm2 = p.cathode_loading_mg_cm2 * (1.0 - p.active_fraction) * 1e-3
        v_active = active_g_cm2 / self.cathode.density_g_cm3
        v_se = se_g_cm2 / cm.se_density_g_cm3
        self._cathode_thickness_cm = (v_active + v_se) / (1.0 - cm.porosity)
        self._active_volume_fraction = v_active / self._cathode_thickness_cm
        self._se_volume_fraction = v_se / self._cathode_thickness_cm
        # True contact area per nominal area with every particle wired: s·(3/R_p)·V_active.
        self._contact_area_full = cm.se_coverage * 3.0 * v_active / (cm.particle_radius_um * 1e-4)
        # Capacity-equivalent active mass of the cell (g): m·scale, in table units.
        self._active_g = active_g_cm2 * self._area_cm2
        self._mass_eq_g = self._active_g * self._scale
        # Random streams: nucleation, new filaments, flicker, fuse, per-cell scatter, pores (added
        # last, so the others' draws are unchanged).
        rng_nuc, rng_fil, rng_flicker, rng_fuse, rng_cell, rng_pores = random_streams(p.seed, 6)
        spread = self._mech.cell_to_cell_spread
        scatter_plating, scatter_exchange, scatter_interphase = (
            math.exp(rng_cell.gauss(0.0, spread)) for _ in range(3)
        )
        self._scatter_wiring = math.exp(rng_cell.gauss(0.0, cm.wiring_spread))
        self._scatter_cei = math.exp(rng_cell.gauss(0.0, cm.interphase_spread))
        self._pressure_pa = float(p.pressure_pa)
        self._temperature_k = float(p.temperature_k)
        self._anode = LithiumElectrode(
            self.electrolyte,
            self._mech,
            p.separator_thickness_m * 1e6,
            rng_nuc,
            pressure_pa=self._pressure_pa,
            temperature_k=self._temperature_k,
            metal=self.anode_metal,
            scatter_plating=scatter_plating,
            scatter_exchange=scatter_exchange,
            scatter_interphase=scatter_interphase,
        )
        self._filament = Filament(self._mech, p.separator_thickness_m, rng_fil, rng_flicker, rng_fuse)
        # Li extrusion into the separator's pores (F11): from the anode face only.
        self._pores = PoreExtrusion(
            self.electrolyte,
            self._mech,
            p.separator_thickness_m * 1e6,
            rng_pores,
            pressure_pa=self._pressure_pa,
            temperature_k=self._temperature_k,
            metal=self.anode_metal,
            sides=1,
        )
        # Cathode state (table units): q of wired particles, the isolated pool, hysteresis branch.
        self._q = 0.0
        self._damage = 0.0
        self._wired = 0.0
        self._q_iso = 0.0
        self._branch = 0.0
        self._fresh = 1.0  # θ: share of the fresh cathode/SE interface not yet oxidised (F5)
        self._side_t = 0.0  # side charge per cm² of true contact (mAh/cm²)
        self._side_nominal = 0.0  # side charge per cm² of nominal area (mAh/cm²)
        # Book-keeping.
        self._elapsed_s = 0.0
        self._charge_c = 0.0
        self._throughput_c = 0.0
        self._ionic_c = 0.0
        self._refresh_conditions()
        self._wired = self._wired_target()

    # --- conditions ---------------------------------------------------------------------------
    @property
    def pressure_pa(self) -> float:
        """Stack pressure (Pa). Settable: wiring follows at once, the anode contact creeps."""
        return self._pressure_pa

    @pressure_pa.setter
    def pressure_pa(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"pressure must be >= 0 Pa, got {value!r}")
        self._pressure_pa = float(value)
        self._refresh_conditions()
        self._rewire()

    @property
    def temperature_k(self) -> float:
        """Cell temperature (K). Settable: every Arrhenius rate follows at once."""
        return self._temperature_k

    @temperature_k.setter
    def temperature_k(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"temperature must be > 0 K, got {value!r}")
        self._temperature_k = float(value)
        self._refresh_conditions()

    def _refresh_conditions(self) -> None:
        """Recompute everything that depends only on P and T (cached: advance() is hot)."""
        cm, el, t = self._cm, self.electrolyte, self._temperature_k
        p_mpa = self._pressure_pa / 1e6
        self._anode.set_conditions(self._pressure_pa, t)
        self._pores.set_conditions(self._pressure_pa, t)
        sigma = el.sigma_25_s_cm * arrhenius_ev(el.ea_ev, t)  # S/cm
        # Separator L/σ and composite L_c/(3·σ·ε^1.5), both Ω·cm².
        self._r_sep_cm2 = self._sep_cm / sigma
        self._r_comp_cm2 = self._cathode_thickness_cm / (3.0 * sigma * self._se_volume_fraction**1.5)
        # Wiring at this pressure (F2), before damage.
        p_eff = p_mpa + cm.residual_pressure_mpa
        self._wiring_p = p_eff / (p_eff + cm.wiring_pressure_mpa)
        # Damage pressure factor P_d/(P + P_d) (F6).
        self._damage_p = cm.damage_pressure_mpa / (p_mpa + cm.damage_pressure_mpa)
        # Interface (F4): interphase conduction factor, j0, b = 2RT/F.
        self._cei_factor = 1.0 / arrhenius_ev(cm.interphase_ea_ev, t)
        self._j0_c = cm.exchange_current_ma_cm2 * arrhenius_ev(cm.exchange_ea_ev, t)
        self._bv_b = 2.0 * GAS_J_MOL_K * t / FARADAY_C_MOL
        # Side reaction prefactor (F5) and diffusion time factor (F3).
        self._side_k = cm.side_rate_ma_cm2 * arrhenius_ev(cm.side_ea_ev, t)
        self._tau_factor = 1.0 / arrhenius_ev(self.cathode.diffusion_ea_ev, t)
        self._tau_mid_h = self.cathode.diffusion_time_h * self._tau_factor

    def _wired_target(self) -> float:
        """W = w_max·wiring(P)·(1 − d) (F2)."""
        w_max = self._cm.max_wired_fraction or self.cathode.wired_fraction
        w = w_max * self._scatter_wiring * self._wiring_p * (1.0 - self._damage)
        return min(1.0, max(1e-6, w))

    def _rewire(self) -> None:
        """Move particles between the wired and isolated pools, each keeping its Li (F2)."""
        target = self._wired_target()
        moved = target - self._wired
        if moved < 0.0:
            # Particles lose contact at the wired state q.
            iso_old = 1.0 - self._wired
            self._q_iso = (iso_old * self._q_iso - moved * self._q) / (iso_old - moved)
        elif moved > 0.0:
            # Particles regain contact with their stranded Li and equilibrate with the rest.
            self._q = (self._wired * self._q + moved * self._q_iso) / target
        self._wired = target

    # --- derived quantities -----------------------------------------------------------------------
    def nominal_capacity_ah(self) -> float:
        """Capacity that defines the C-rate: active mass × specific capacity (Ah)."""
        return self._active_g * self._capacity_mah_g * 1e-3

    def c_rate_current_a(self, c_rate: float) -> float:
        """Current (A) of a C-rate: 1 C = nominal capacity / 1 h."""
        return c_rate * self.nominal_capacity_ah()

    def _contact_area(self) -> float:
        """True cathode/SE contact per nominal area (cm²/cm²): w·s·3·φ·L_c/R_p (F4)."""
        return self._wired * self._contact_area_full

    def _cei_true(self) -> float:
        """Cathode interphase resistance per cm² of true contact at T (Ω·cm²): r0 + ρ·Q_t (F4)."""
        cm = self._cm
        r = cm.interphase_r0_ohm_cm2 * self._scatter_cei + cm.interphase_per_side_charge * self._side_t
        return r * self._cei_factor

    def _tau_h(self, q: float) -> float:
        """R_p²/D at q and T (h) (F3)."""
        return self.cathode.diffusion_time_h_at(q) * self._tau_factor

    def _surface_q(self, i_ma: float) -> float:
        """Surface state q_s (table mAh/g) of the wired particles while i_ma (mA) flows (F3).

        Discharge: q_s = q + i_w·τ(q)/15, the slow lithiated state governs insertion. Charge: the
        surface delithiates first and its own faster diffusion governs, q_s = q + i_w·τ(q_s)/15.
        Both branches meet with the same slope at i = 0, and q_s rises with i.
        """
        c = i_ma / (self._mass_eq_g * self._wired) / 15.0  # i_w/15 (mAh/g per h of τ)
        q = self._q
        if c <= 0.0:
            return q + c * self._tau_h(q)
        # Solve x − q − c·τ(x) = 0, τ(x) = τ0·(1 + A·e^(−x/w)) for x > 0 (τ(0) below): the residual
        # is increasing and concave, so Newton from x = q rises monotonically to the root.
        cat = self.cathode
        tau0 = cat.diffusion_time_h * self._tau_factor
        a, w = cat.hindrance_factor, cat.hindrance_width_mah_g
        x = q
        for _ in range(50):
            hindrance = a * math.exp(-x / w) if x > 0.0 else a
            slope = 1.0 + (c * tau0 * hindrance / w if x > 0.0 else 0.0)
            step = (x - q - c * tau0 * (1.0 + hindrance)) / slope
            x -= step
            if abs(step) <= 1e-9:
                break
        return x

    def _hysteresis_v(self) -> float:
        return 0.5 * self.cathode.hysteresis_v * self._branch

    def _side_rate(self, e_surface: float) -> tuple[float, float]:
        """SE oxidation at surface potential e_surface (F5), per cm² of true contact.

        Returns:
            (i_side, fresh_share): the current density (mA/cm²) and the share of it that consumes
            the fresh interface θ. Kinetics k·exp[(E − E_ref)/b]·(θ + passivated rest), saturating
            at the transport limit through the interphase, so an abusive overcharge plateaus
            instead of running away.
        """
        cm = self._cm
        q_f = cm.fresh_side_capacity_mah_cm2
        # Tafel factor, its exponent capped only to stay finite far beyond any real cut-off.
        rate = self._side_k * math.exp(min((e_surface - cm.side_reference_v) / cm.side_tafel_v, 30.0))
        fresh = rate * self._fresh
        # The passivated rest thins as the interphase grows (∝ 1/Q_t: parabolic growth).
        kinetic = fresh + rate * cm.passivated_side_fraction * q_f / (q_f + self._side_t)
        limited = kinetic * cm.side_limit_ma_cm2 / (kinetic + cm.side_limit_ma_cm2)
        return limited, (fresh / kinetic if kinetic > 0.0 else 0.0)

    def ocv_v(self) -> float:
        """Open-circuit cell voltage vs the anode after a long rest at the present state (V)."""
        return self.cathode.ocv_v(self._q) + self._hysteresis_v() - self.anode_metal.potential_v

    def thickness_change_m(self) -> float:
        """Change of the cell's thickness since assembly (m); positive = thicker (F9).

        The sum of the composite cathode (its active particles' volume strain, laterally
        constrained, wired and isolated particles each at their own state) and the anode (Li moved
        into it: 4.85 µm per mAh/cm² for Li). What a fixed-gap pressure rig converts into pressure.
        """
        cat = self.cathode
        strain = self._wired * cat.volume_strain(self._q) + (1.0 - self._wired) * cat.volume_strain(
            self._q_iso
        )
        cathode_cm = self._cathode_thickness_cm * self._active_volume_fraction * strain
        anode_um = self.anode_metal.um_per_mah_cm2 * self._ionic_c / MAH_C / self._area_cm2
        return cathode_cm * 1e-2 + anode_um * 1e-6

    @property
    def is_shorted(self) -> bool:
        """True while a soft or hard filament bridges the electrodes."""
        return self._filament.kind is not None

    @property
    def state(self) -> FullCellState:
        """A snapshot of the internal state (a copy: changing it changes nothing)."""
        an = self._anode
        r_short = self._filament.resistance_ohm()
        stored = self._wired * self._q * self._scale  # mAh/g of all active material
        return FullCellState(
            extracted_mah_g=self._q * self._scale,
            state_of_charge=stored / self._capacity_mah_g,
            wired_fraction=self._wired,
            isolated_extracted_mah_g=self._q_iso * self._scale,
            damage=self._damage,
            side_charge_mah_cm2=self._side_nominal,
            cathode_potential_v=self.cathode.ocv_v(self._q) + self._hysteresis_v(),
            ocv_v=self.ocv_v(),
            cathode_interface_resistance_ohm=self._cathode_interface_cm2(0.0) / self._area_cm2,
            anode_interface_resistance_ohm=an.interface_resistance_cm2(0.0) / self._area_cm2,
            anode_contact=an.contact,
            anode_void_fraction=max(0.0, 1.0 - an.contact / an.f0),
            short_resistance_ohm=None if math.isinf(r_short) else r_short,
            short_kind=self._filament.kind,
            filament_formations=self._filament.formations,
            thickness_change_m=self.thickness_change_m(),
            elapsed_s=self._elapsed_s,
            charge_passed_c=self._charge_c,
            charge_throughput_c=self._throughput_c,
            ionic_charge_c=self._ionic_c,
            pore_front_um=self._pores.front_um,
            pore_channels_connected=self._pores.connected,
        )

    # --- electrical solution --------------------------------------------------------------------
    def _cathode_bv_a(self) -> float:
        """Butler–Volmer a = 1/(2·j0·A_t) (cm²/mA of nominal j): η = b·asinh(a·j) on the true contact."""
        return 0.5 / (self._j0_c * self._contact_area())

    def _cathode_interface_cm2(self, j: float) -> float:
        """Small-signal cathode interface resistance per nominal area at DC density j (Ω·cm²)."""
        a = self._cathode_bv_a()
        aj = a * j
        return self._cei_true() / self._contact_area() + 1e3 * self._bv_b * a / math.sqrt(1.0 + aj * aj)

    def _ionic_voltage(self, i_a: float) -> float:
        """Voltage (V) of the ionic path while i_a (A) crosses the separator (F8)."""
        j = i_a / self._area_cm2 * 1e3  # mA/cm²
        area_t = self._contact_area()
        # F1 + F3: equilibrium potential of the particle surface, hysteresis branch, minus the anode.
        e = (
            self.cathode.ocv_v(self._surface_q(i_a * 1e3))
            + self._hysteresis_v()
            - self.anode_metal.potential_v
        )
        # F4: ohmic (separator, composite, cathode interphase on the true contact), Ω·cm² × mA/cm² = mV.
        r_cm2 = self._r_sep_cm2 + self._r_comp_cm2 + self._cei_true() / area_t
        e += 1e-3 * r_cm2 * j
        # F4: cathode charge transfer (on A_t) and the anode interface (interphase + Butler–Volmer).
        e += self._bv_b * math.asinh(0.5 * j / (self._j0_c * area_t))
        return e + self._anode.overpotential_v(j)

    def _split(self, i_total: float) -> tuple[float, float]:
        """Split the terminal current (A) between the ionic path and a filament: (I_ion, V)."""
        r_short = self._filament.resistance_ohm()
        if math.isinf(r_short):
            return i_total, self._ionic_voltage(i_total)

        # I = I_ion + V(I_ion)/R_fil: h(x) = x + V(x)/R − I rises with x (V does). Bracket, then
        # Illinois regula falsi (robust with the steep OCV walls, no derivative needed).
        def h(x: float) -> float:
            return x + self._ionic_voltage(x) / r_short - i_total

        h0 = h(i_total)
        if h0 == 0.0:
            return i_total, self._ionic_voltage(i_total)
        step = max(abs(h0), 1e-9)
        if h0 > 0.0:
            hi, f_hi = i_total, h0
            lo = i_total - step
            while (f_lo := h(lo)) > 0.0:
                step *= 2.0
                lo = i_total - step
        else:
            lo, f_lo = i_total, h0
            hi = i_total + step
            while (f_hi := h(hi)) < 0.0:
                step *= 2.0
                hi = i_total + step
        side = 0
        x = lo
        for _ in range(100):
            x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
            fx = h(x)
            if fx == 0.0 or hi - lo <= 1e-12 * max(1.0, abs(x)) + 1e-15:
                break
            if fx > 0.0:
                hi, f_hi = x, fx
                if side == 1:
                    f_lo *= 0.5
                side = 1
            else:
                lo, f_lo = x, fx
                if side == -1:
                    f_hi *= 0.5
                side = -1
            if abs(fx) <= 1e-12 * max(abs(i_total), 1e-6):
                break
        return x, self._ionic_voltage(x)

    def voltage(self, current_a: float) -> float:
        """Terminal voltage (V) vs the anode at the present state while `current_a` (A) flows. No noise."""
        return self._split(current_a)[1]

    def _ionic_ohm(self, i_ion: float, v: float) -> float:
        """Resistance of the ionic path (Ω): polarization chord (V − OCV)/I, or dV/dI at zero current."""
        if i_ion != 0.0:
            chord = (v - self._ionic_voltage(0.0)) / i_ion
            if chord > 0.0:
                return chord
        di = 1e-6 * self.nominal_capacity_ah()
        return (self._ionic_voltage(di) - self._ionic_voltage(-di)) / (2.0 * di)

    # --- small-signal impedance (F10) -----------------------------------------------------------
    def impedance(self, frequency_hz: float, current_a: float = 0.0) -> complex:
        """Small-signal impedance (Ω) at `frequency_hz` around the DC current `current_a` (A), now.

        Math sign convention: capacitive Im(Z) < 0. Element values: `equivalent_circuit`.

        Raises:
            ValueError: If the frequency is not > 0.
        """
        if not frequency_hz > 0:
            raise ValueError(f"frequency must be > 0 Hz, got {frequency_hz!r}")
        omega = 2.0 * math.pi * frequency_hz
        i_ion = self._split(current_a)[0]
        j = i_ion / self._area_cm2 * 1e3
        el = self._elements(j, i_ion)
        z = el["R_bulk_ohm"] + el["R_composite_ohm"]
        z += r_cpe_impedance(el["R_gb_ohm"], el["Q_gb"], GB_CPE_EXPONENT, omega)
        z += r_cpe_impedance(el["R_cathode_ohm"], el["Q_cathode"], el["n_cathode"], omega)
        z += self._anode.impedance(omega, j, self._area_cm2)
        z += _sphere_diffusion(el["K_diffusion_ohm"], el["tau_diffusion_s"], omega)
        r_short = self._filament.resistance_ohm()
        if math.isinf(r_short):
            return complex(z)
        return complex(z * r_short / (z + r_short))

    def equivalent_circuit(self) -> dict[str, float]:
        """Present element values at zero current (SI; Q in F·s^(n−1)).

        Keys: ``R_bulk_ohm``, ``R_gb_ohm``, ``Q_gb``, ``n_gb`` (separator); ``R_composite_ohm``;
        ``R_cathode_ohm``, ``Q_cathode``, ``n_cathode``, ``f_cathode_hz`` (cathode interface arc);
        ``R_anode_ohm``, ``Q_anode``, ``n_anode``, ``f_anode_hz``, ``R_W_anode_ohm``,
        ``tau_W_anode_s`` (anode arc and Warburg); ``K_diffusion_ohm``, ``tau_diffusion_s``,
        ``C_intercalation_F`` (cathode solid diffusion, F10); ``R_short_ohm`` (inf: no short).
        """
        return self._elements(0.0, 0.0)

    def _elements(self, j: float, i_ion: float) -> dict[str, float]:
        cm = self._cm
        r_bulk, r_gb, q_gb = separator_elements(
            self.electrolyte, self._sep_cm, self._area_cm2, self._temperature_k
        )
        area_t = self._contact_area() * self._area_cm2  # cm² of true cathode contact
        r_cat = self._cathode_interface_cm2(j) / self._area_cm2
        q_cat = cm.double_layer_q_f_cm2 * area_t
        r_an, q_an, r_w, tau_w = self._anode.elements(self._area_cm2, j)
        n_an = self._mech.double_layer_exponent
        # Intercalation capacitance dQ/dE (F) of the wired particles at the surface state.
        q_s = self._surface_q(i_ion * 1e3)
        slope = max(self.cathode.ocv_slope_v_per_mah_g(q_s), 1e-6)  # V per table mAh/g
        c_int = self._mass_eq_g * self._wired * MAH_C / slope
        tau_s = self._tau_h(self._q) * 3600.0
        return {
            "R_bulk_ohm": r_bulk,
            "R_gb_ohm": r_gb,
            "Q_gb": q_gb,
            "n_gb": GB_CPE_EXPONENT,
            "R_composite_ohm": self._r_comp_cm2 / self._area_cm2,
            "R_cathode_ohm": r_cat,
            "Q_cathode": q_cat,
            "n_cathode": cm.double_layer_exponent,
            "f_cathode_hz": apex_frequency_hz(r_cat, q_cat, cm.double_layer_exponent),
            "R_anode_ohm": r_an,
            "Q_anode": q_an,
            "n_anode": n_an,
            "f_anode_hz": apex_frequency_hz(r_an, q_an, n_an),
            "R_W_anode_ohm": r_w,
            "tau_W_anode_s": tau_w,
            "K_diffusion_ohm": tau_s / (3.0 * c_int),
            "tau_diffusion_s": tau_s,
            "C_intercalation_F": c_int,
            "R_short_ohm": self._filament.resistance_ohm(),
        }

    # --- time integration ---------------------------------------------------------------------
    def advance(self, dt: float, current_a: float) -> None:
        """Integrate the cell state over `dt` seconds at constant terminal current `current_a` (A).

        Explicit sub-steps of at most `max_substep_s` under current (`max_rest_substep_s` at rest),
        `max_capacity_step_mah_g` of cathode state and the anode's `max_contact_change`; the
        filament flicker is updated once per call. Deterministic: the same seed and the same
        sequence of calls give the same state.
        """
        if not dt >= 0:
            raise ValueError(f"dt must be >= 0 s, got {dt!r}")
        if dt == 0:
            return
        remaining = dt
        while remaining > 0.0:
            remaining -= self._substep(remaining, current_a)
        # Li extrusion into the separator's pores (F11), current or not; each bridged channel is a
        # filament formation across the ionic path as it is now.
        for _ in range(self._pores.advance(dt)):
            i_ion, v = self._split(current_a)
            self._filament.nucleate(self._ionic_ohm(i_ion, v))
        self._elapsed_s += dt
        self._charge_c += current_a * dt
        self._throughput_c += abs(current_a) * dt
        self._filament.flicker(dt)

    def _substep(self, remaining: float, current_a: float) -> float:
        """One explicit step of at most `remaining` seconds; returns its length (s)."""
        cm, an, cat, mech = self._cm, self._anode, self.cathode, self._mech
        i_ion, v = self._split(current_a)
        j = i_ion / self._area_cm2 * 1e3  # mA/cm², + = Li to the anode
        # Cathode (F3, F5): surface state and potential, side reaction on the true contact.
        q_s = self._surface_q(i_ion * 1e3)
        side_t, fresh_share = self._side_rate(cat.ocv_v(q_s))  # mA/cm² of contact
        side_ma = side_t * self._contact_area() * self._area_cm2
        # dq/dt (table mAh/g per s): the ionic current delithiates, the side reaction lithiates.
        dq_dt = (i_ion * 1e3 - side_ma) / (3600.0 * self._mass_eq_g * self._wired)
        # Anode (F7): voids while stripping (discharge), plating hazard while plating (charge).
        rate_an = an.contact_rate(-j if j < 0.0 else 0.0)
        f_lo = an.min_contact
        if rate_an < 0.0 and an.contact <= f_lo:
            rate_an = 0.0
        # Step length.
        h = min(remaining, cm.max_substep_s if i_ion != 0.0 else cm.max_rest_substep_s)
        if abs(dq_dt) * h > cm.max_capacity_step_mah_g:
            h = max(cm.max_capacity_step_mah_g / abs(dq_dt), 1e-3)
        if abs(rate_an) * h > mech.max_contact_change * an.contact:
            h = max(mech.max_contact_change * an.contact / abs(rate_an), 1e-3)
        h = min(h, remaining)
        # Anode update.
        if j > 0.0:
            an.hazard += an.plating_hazard(j) * h
        if i_ion == 0.0:
            an.rest(h)
        else:
            an.contact = min(1.0, max(f_lo, an.contact + rate_an * h))
            an.grow(h)
        # Cathode update: state, side charge, hysteresis branch (F1), damage (F6).
        q_old = self._q
        self._q += dq_dt * h
        self._side_t += side_t * h / 3600.0
        # θ is consumed by its own share of the side current: dθ/dt = −i_fresh/Q_f, i_fresh ∝ θ.
        fresh_rate = side_t * fresh_share / max(self._fresh, 1e-300)  # per unit θ (mA/cm²)
        self._fresh *= math.exp(-fresh_rate * h / 3600.0 / cm.fresh_side_capacity_mah_cm2)
        self._side_nominal += side_ma * h / 3600.0 / self._area_cm2
        dq = self._q - q_old
        if dq != 0.0:
            target = 1.0 if dq > 0.0 else -1.0
            self._branch = target + (self._branch - target) * math.exp(
                -abs(dq) / cm.hysteresis_capacity_mah_g
            )
            eps_old, eps_new = cat.volume_strain(q_old), cat.volume_strain(self._q)
            d_eps = abs(eps_new - eps_old)
            if d_eps > 0.0:
                # Diffusion-induced stress: the core–surface difference i_w·τ0/15 at mid state of charge.
                mismatch = abs(dq_dt) * 3600.0 * self._tau_mid_h / 15.0 / cm.critical_mismatch_mah_g
                dd = (
                    cm.damage_rate
                    * d_eps
                    * 0.5
                    * abs(eps_new + eps_old)
                    * (1.0 + mismatch * mismatch)
                    * self._damage_p
                )
                self._damage = min(0.99, self._damage + dd * (1.0 - self._damage))
                self._rewire()
        self._ionic_c += i_ion * h
        # Filament (F7): burn-out and hardening, then nucleation from the plating hazard.
        self._filament.carry(v, h)
        if an.nucleated():
            self._filament.nucleate(self._ionic_ohm(i_ion, v))
        return h


def _sphere_diffusion(k_ohm: float, tau_s: float, omega: float) -> complex:
    """Finite-space diffusion into a sphere: K·tanh(s)/(s − tanh(s)), s = √(jωτ) (Ω) (F10).

    Low frequency: 3K/(jωτ) + K/5, the intercalation capacitance τ/3K in series with the
    quasi-steady diffusion resistance K/5 of F3. High frequency: K/s, a Warburg line.
    """
    s = cmath.sqrt(1j * omega * tau_s)
    if abs(s) < 0.05:
        return k_ohm * (3.0 / (s * s) + 0.2)
    if s.real > 20.0:
        return k_ohm / (s - 1.0)
    t = cmath.tanh(s)
    return k_ohm * t / (s - t)
