"""Physics model of a Li | sulfide solid electrolyte | Li symmetric cell.

Why mechanisms and not a lookup table: a simulated CCD or cycling test is only useful if the cell
answers to the test variables the way a real one does — stack pressure, temperature, electrolyte,
thickness, area, current density — including combinations nobody tabulated. So every failure below
emerges from a mechanism; the literature numbers (DOMAIN.md §2.1, §2.2) are checks, not inputs.

Sign convention (same as `simulators.base.ElectricalLoad`): positive current flows out of the
instrument's HI terminal into the working electrode (WE). For this symmetric cell that strips Li
from the WE and plates it on the counter electrode (CE); negative current plates the WE and strips
the CE. The terminal voltage V = φ(WE) − φ(CE) is positive for positive current. Two identical Li
electrodes have an open-circuit voltage of exactly 0 V. No measurement noise is added here (the
instrument simulator does that); the flicker of a soft-short filament is cell behaviour, so it is.

Units: the public interface is SI (A, V, s, Pa, K, m). Inside, lab units are used because the
literature quotes them: current density j in mA/cm², areal resistance in Ω·cm², lengths in µm,
pressure in MPa (1 mA/cm² × 1 Ω·cm² = 1 mV).

Marks: [D] DOMAIN.md (the five reviews), [L] a named paper, [T] typical practice / illustrative —
a default chosen to make the checks below come out of the mechanisms, not a measured constant.

Mechanisms (per electrode e ∈ {WE, CE} unless stated):

1. Bulk ion transport.  R_bulk = L / (σ(T)·A), σ(T) = σ25·exp[−Ea/k_B·(1/T − 1/298.15 K)],
   σ25 and Ea per electrolyte from `simulators.materials` [D]. 500 µm Li6PS5Cl: 38.5 Ω·cm² at 25 °C.
2. Contact.  True contact fraction f_e. Stack pressure makes the Li asperities yield, so the
   equilibrium contact is f0(P) = P / (P + P_y), P_y = 0.8 MPa, the yield stress of Li
   ([L] Masias et al. 2019: 0.73–0.81 MPa): f0 = 0.56 at 1 MPa, 0.79 at 3 MPa, 0.90 at 7 MPa.
   Floor 1e-4 with no pressure [T]. Voids never take the last 2 % of contact (f ≥ 0.02 [T]), which
   keeps the polarization finite — a real cell's stays finite until the instrument's compliance.
3. Interphase.  Per nominal area R_sei = (R0 + ΔR)·exp[+Ea_c/k_B·(1/T − 1/T_ref)], R0 a few Ω·cm².
   Passivating electrolytes: d(ΔR²)/dt = g(T)², i.e. ΔR = g·√t at constant T; non-passivating:
   dΔR/dt = g(T). g Arrhenius. Values per electrolyte in `simulators.materials` [D for the growth
   law, T for the numbers]. Current crosses only the true contact: R_int,e = R_sei / f_e.
4. Charge transfer.  Symmetric Butler–Volmer (α = ½) on the true contact:
   η_e = (2RT/F)·asinh[j / (2·j0(T)·f_e)], j0(25 °C) = 2.0 mA/cm², Ea 0.30 eV [T, "~1 mA/cm²
   order"]. Fresh LPSCl cell at 7 MPa, 0.5 mA/cm²: 18 mV beyond the bulk ohmic drop.
5. Voids on stripping ([L] Kasemchainan et al., Nat. Mater. 18, 1105, 2019).  Li reaches the
   stripping contacts by vacancy diffusion in the Li, j_vac = 0.05 mA/cm²·exp[−0.55 eV/k_B·(…)]
   ([T]; 0.55 eV ≈ Li self-diffusion), and by power-law creep pushed by the stack pressure,
   j_creep = 0.35 mA/cm²·C(P, T) with the creep law C = (P / 1 MPa)^2.1·exp[−Q/R·(1/T − 1/T_ref)],
   Q = 37 kJ/mol ([L] LePage et al. 2019). 2.1 is an effective exponent [T]: the bulk creep
   exponent of Li is ~6.6, the contact geometry makes the flux's much smaller. So the supply
   capacity per true contact area is j_cap = j_vac + j_creep. The local stripping flux is j/f; with
   x = j / (f·j_cap) the fraction of it the supply cannot replace is φ(x) = x⁶ / (1 + x⁶) [T]:
   contact spots carry unequal current, so voiding sets in steeply but continuously around x = 1.
   Li removed and not replaced opens voids of depth δ = 0.5 µm (asperity scale [T]):
       df/dt = −(v_Li(j) / δ)·φ(x) + k_r·(f0(P) − f),   v_Li(j) = j·V_m / F = 1.35e-3 µm/s per mA/cm²
   (V_m = 13.0 cm³/mol: 4.85 µm per mAh/cm² [D]). Because x ∝ 1/f, contact loss runs away within a
   half-cycle once j nears f0·j_cap — the critical stripping current, which is not a parameter:
   0.22 mA/cm² at 1 MPa / 25 °C, 2.8 at 1 MPa / 80 °C, 2.8 at 3 MPa, 19 at 7 MPa. The second term
   is creep refilling voids with the same law, k_r = 2e-6 s⁻¹·C(P, T) [T]: time constant 140 h at
   1 MPa, 14 h at 3 MPa, 2.3 h at 7 MPa, so below the critical current small voids (φ ∝ x⁶)
   accumulate from cycle to cycle at 3 MPa and are healed at 7 MPa.
6. Dendrite nucleation on plating.  While an electrode plates, a filament nucleates with hazard
   λ_n = λ0·(j / (f·j_pl(T)))^m, λ0 = 1e-3 s⁻¹, m = 25, j_pl(25 °C) = 2.0 mA/cm² with Ea 0.25 eV
   [T]: voided electrodes (small f) short on their next plating. A filament then needs at least
   L / v_tip (v_tip = 10 µm/s [T]) to cross the separator, so the short hazard is
   λ = λ_n / (1 + λ_n·L / v_tip). Seeded draws: each electrode integrates its hazard and shorts
   when the integral passes an Exp(1) threshold drawn from its own random stream (one stream per
   mechanism), so results depend only on the seed and the sequence of calls, and barely on dt.
7. Shorts.  A filament is an electronic path in parallel with the ionic one. A fresh (soft) one
   touches the far electrode through a few asperities of the same interface that limits the ionic
   path, so its resistance is u × the ionic path's resistance at that moment, u log-uniform in
   0.2–1 [T]; its contact flickers: ln R follows an Ornstein–Uhlenbeck process (σ = 0.4, τ = 20 s
   [T]). Joule heating can burn it out — hazard (I_f / I_fuse)² / 60 s, I_fuse = 1 mA·(d / 1 µm)^1.5
   (Preece's law, d log-uniform in 1–3 µm [T]) — and the cell recovers (its voids stay). After
   0.2 C through it, or at the third filament formation, it becomes a hard short for good: a Li
   wire 4L / (π·d²·σ_Li) with d = 20 µm, σ_Li = 1.1e7 S/m: 0.14 Ω for 500 µm (0.06 mV at
   0.5 mA/cm² on 0.785 cm²) [T].
8. Terminal voltage.  V solves I = I_ion(V) + V / R_fil; the ionic branch V(j) = j·(R_bulk +
   R_int,WE + R_int,CE) + η_WE + η_CE is odd and concave in j ≥ 0, so Newton's method from j = 0
   converges monotonically. Voids and plating hazards are driven by the ionic current only.

Resulting calibration (tests/unit/simulators/test_cell_physics.py; LPSCl, 0.5 mm, 0.785 cm²):
CCD ramp (0.1 mAh/cm² per half-cycle, 0.05 mA/cm² steps) shorts at 0.20 mA/cm² at 1 MPa / 25 °C
(CCD 0.15) and at ~1.45 mA/cm² at 80 °C; 1 mA/cm², 1 mAh/cm² cycling shorts in the 8th cycle at
3 MPa after the polarization rose every cycle (80 → 95 mV), and runs 100 cycles at 7 MPa (+5 %,
the √t interphase). [D]: "< 0.25 at 25 °C, > 0.5 at 80 °C"; "shorts after 8 cycles at 3 MPa, no
polarization increase over 100 cycles at 7 MPa".

9. Cell-to-cell scatter.  Each cell draws, once and from its own seed stream, log-normal factors
   (σ = 0.1 [T]) on j_pl, j0 and R0: different seeds are different pellets, so CCDs limited by
   plating (hot or well-pressed cells) scatter by a step or so, as in a real batch of cells.

10. Small-signal impedance (EIS) and capacitances.  `impedance(f, I)` is Z(ω) of the present
   state around the DC current I, in the math sign convention (capacitive Im Z < 0):
       Z_ion = R_bulk + (R_gb ∥ CPE_gb) + Σ_e [(R_int,e ∥ CPE_dl,e) + W_e],   Z = Z_ion ∥ R_fil,
   CPE admittance Q·(jω)^n, so an R ∥ CPE arc has its apex at ω = (R·Q)^(−1/n).
   - Separator.  σ25 in `simulators.materials` is the total (pellet) conductivity the reviews quote,
     so the DC separator resistance of mechanism 1, R_sep = L/(σ(T)·A), is split, not added to:
     R_gb(T) = x_gb·R_sep(25 °C)·exp[+Ea_gb/k_B·(1/T − 1/T_ref)] with the material's own Ea_gb > Ea
     (capped at 0.9·R_sep), and R_bulk = R_sep − R_gb is the high-frequency intercept. Z(ω → 0) thus
     matches the DC slope except for W below. The boundary capacitance is dielectric, so Q_gb is
     fixed by the material's apex frequency at 25 °C: Q_gb = (2π·f_gb)^(−n_gb) / R_gb(25 °C),
     n_gb = 0.9 [T]; when warm R_gb falls and the arc moves up. LPSCl (x_gb 0.10, Ea_gb 0.40 eV,
     f_gb 500 kHz [T]): 500 µm, 0.785 cm² → R_bulk 44 Ω + a 4.9 Ω arc at the top of a 1 MHz sweep.
   - Interfaces.  R_int,e(j) = [R_sei + 1e3·dη_e/dj] / (f_e·A), dη/dj = b·a_e/√(1 + (a_e·j)²): the
     interphase plus Butler–Volmer linearised at the DC ionic current j (RT/(F·j0·f_e) at j = 0).
     Double-layer CPE on the true contact only: Q_dl,e = 10 µF·s^(n−1)/cm² × f_e·A, n = 0.85 [T].
     R ∝ 1/f_e and Q ∝ f_e, so stack pressure and voids change the arc's diameter, not its apex:
     ~4 kHz for a fresh LPSCl interface at 25 °C (R_sei + R_ct = 15.8 Ω·cm² of contact), lower as
     the interphase grows (∝ √t for LPSCl). Both electrodes share the apex, so the symmetric cell
     shows one arc of diameter R_int,WE + R_int,CE = `interface_resistance_ohm()` at rest.
   - Diffusion.  A finite-length (transmissive) Warburg per electrode for Li (vacancy) diffusion in
     the Li under the constricted contacts: W = R_W·tanh(√(jωτ_W))/√(jωτ_W), R_W = 1.5 Ω·cm² of
     contact and τ_W = 3 s at 25 °C, both ∝ 1/D_Li (Arrhenius, the vacancy Ea 0.55 eV) [T]: a small
     tail below ~10 Hz. The DC model (mechanism 8) leaves out its DC limit R_W (≈ 8 % of the
     interface term, a concentration polarization that would settle within seconds).
   - Left out: the geometric capacitance ε0·εr·A/L (~40 pF: a relaxation near 100 MHz), so the bulk
     intercept is flat to any frequency. A filament is an electronic resistor in parallel with all
     of it: after a hard short |Z| collapses to ~R_fil at every frequency (DOMAIN.md §4).
   `equivalent_circuit()` reports the element values, for fits to compare with.

11. Li extrusion through the separator's pores (DOMAIN.md §2.2: shorts "over time, and even with no
   current flowing").  A cold-pressed pellet keeps surface-connected pore channels; Li enters them
   only when the stack pressure exceeds a pore-entry pressure P_e, a property of the pellet's pore
   throats and of how Li wets their walls (`Electrolyte.pore_entry_pressure_mpa`: 10 MPa for
   LPSCl [T]). Inside, Li flows as the same creeping solid as in mechanism 5, driven by ΔP = P − P_e
   against a resistance that grows with the filled length ℓ:
       dℓ/dt = v_ref·k_mat·s_cell·(ΔP/1 MPa · ℓ_ref/ℓ)^n · exp[−Q/R·(1/T − 1/T_ref)],
   v_ref = 1e-4 µm/s at ℓ_ref = 100 µm, n = 2 [T], Q = 37 kJ/mol (Li creep, [L] as in 5). So
   ℓ^(n+1) grows linearly at constant P and T: any dt, open circuit or not, is one exact step. The
   front never retracts: below P_e it just stops. Chemistry enters through the interphase: a
   non-passivating (LGPS-type) electrolyte reacts with the Li on the pore walls and lines the
   channel with a mixed-conducting, Li-wetted interphase, so Li enters at a lower pressure and the
   channel conducts sooner (P_e 7 MPa, k_mat 3 for LGPS, 2 for LiSiPSCl; 1 for the passivating
   ones [T]). Each pellet draws, from its own stream, s_cell (log-normal, σ = 0.1 [T], like
   mechanism 9) and the tortuosities τ_k of its 3 separator-spanning channels (uniform in 1.2–1.6
   [T]). Both Li faces of a symmetric cell push at the same pressure and temperature into the same
   pellet, so one front ℓ stands for both; a channel open at both ends fills from both and is
   bridged when ℓ ≥ τ_k·L/2 (a full cell's Li anode pushes alone: τ_k·L). Each bridged channel is a
   `Filament.nucleate` of mechanism 7: the first a soft short, the third hard. The time to the
   first short is therefore t = (τ_1·L/2)^(n+1) / [(n+1)·v·ℓ_ref^n·ΔP^n·a(T)] ∝ L^(n+1)/ΔP^n: twice
   the thickness, 8× later; 80 °C, 10× sooner.
   Resulting calibration (LPSCl, 0.5 mm, 25 °C, open circuit, median of 100 seeds, min–max):
   ≤ 10 MPa never; 15 MPa 120 h; 25 MPa 13.5 h (9–23); 50 MPa 1.9 h; 75 MPa 0.72 h (0.47–1.2);
   1 mm at 25 MPa 108 h; 80 °C at 25 MPa 1.3 h; LGPS at 25 MPa 3.1 h, at 10 MPa 113 h; the hard
   short (third channel) ~1.7× the first. [D, T]: "≤ 5 MPa for long life"; first short at 25 MPa
   within ~10–50 h, at 75 MPa in under an hour. The CCD and cycling checks above run at ≤ 10 MPa,
   where LPSCl does not extrude, so they are unchanged. Ignored: P_e falling with temperature (a
   softer Li), Li consumed by the pore-wall reaction, pores closed by the pressure itself.

Code structure: mechanisms 2–6 of one electrode live in `LithiumElectrode` (also a Li-In alloy
electrode via `ElectrodeMetal`), mechanism 7 in `Filament`, mechanism 11 in `PoreExtrusion`, the
element helpers of mechanism 10 in module functions, so the full-cell model (`simulators.fullcell`)
reuses them rather than copies.

Not modelled yet: cracking, cell-to-cell scatter of the contact and creep mechanics; the symmetric
cell is Li | SE | Li only (the Li-In electrode is used by the full cell).
"""

from __future__ import annotations

import cmath
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from simulators.materials import Electrolyte, get_electrolyte

# --- constants ----------------------------------------------------------------------------------
FARADAY_C_MOL = 96485.33212
GAS_J_MOL_K = 8.314462618
BOLTZMANN_EV_K = 8.617333262e-5
T_REF_K = 298.15

ShortKind = Literal["soft", "hard"]
LI_MOLAR_VOLUME_CM3_MOL = 13.0  # DOMAIN.md §3
# Li thickness moved per second per mA/cm²: (1e-3 A/cm²)·(13.0 cm³/mol)/F = 1.347e-7 cm/s
# = 1.347e-3 µm/s; i.e. 4.85 µm per mAh/cm² (DOMAIN.md §3).
LI_UM_PER_S_PER_MA_CM2 = 1e-3 * LI_MOLAR_VOLUME_CM3_MOL / FARADAY_C_MOL * 1e4
GB_CPE_EXPONENT = 0.9  # n of the grain-boundary CPE (mechanism 10) [T]
GB_MAX_SHARE = 0.9  # R_gb never exceeds this share of the separator resistance (very cold cells)


@dataclass(frozen=True)
class LithiumMechanics:
    """Parameters of the Li-metal/SE interface mechanisms shared by all electrolytes.

    Lab units (MPa, µm, mA/cm²) because that is how the literature quotes them. The defaults are
    the values listed in the module docstring; change them to explore, not to calibrate a result.
    """

    # Contact (mechanism 2)
    yield_pressure_mpa: float = 0.8  # P_y in f0 = P/(P + P_y); Li yield stress [L]
    min_contact: float = 0.02  # voids never take the last contact points [T]
    pressureless_contact: float = 1e-4  # f0 floor with no stack pressure [T]
    # Voids (mechanism 5)
    void_depth_um: float = 0.5  # δ: depth of Li lost per unit of contact lost (µm) [T]
    void_onset_exponent: float = 6.0  # p in φ(x) = x^p/(1 + x^p) [T]
    vacancy_supply_ma_cm2: float = 0.05  # vacancy-diffusion supply at 25 °C (mA/cm²) [T]
    vacancy_ea_ev: float = 0.55  # its activation energy, ≈ Li self-diffusion (eV) [T]
    creep_supply_ma_cm2: float = 0.35  # creep supply at 1 MPa, 25 °C (mA/cm²) [T]
    creep_pressure_exponent: float = 2.1  # effective n in (P/1 MPa)^n [T]
    creep_activation_j_mol: float = 37e3  # Q of Li power-law creep (J/mol) [L]
    void_refill_rate_per_s: float = 2e-6  # k_r at 1 MPa, 25 °C (1/s) [T]
    # Dendrite nucleation (mechanism 6)
    nucleation_rate_per_s: float = 1e-3  # λ0: hazard at j/f = j_pl (1/s) [T]
    nucleation_exponent: float = 25.0  # m [T]
    filament_tip_speed_um_s: float = 10.0  # fastest crossing of the separator (µm/s) [T]
    # Cell-to-cell scatter (mechanism 9): log-normal σ of per-cell factors on j_pl, j0 and R0 [T]
    cell_to_cell_spread: float = 0.1
    # Filaments (mechanism 7)
    li_conductivity_s_m: float = 1.1e7  # σ of Li metal at room temperature (S/m)
    soft_resistance_fraction: tuple[float, float] = (0.2, 1.0)  # u range, × ionic path [T]
    soft_diameter_um: tuple[float, float] = (1.0, 3.0)  # soft filament d range (µm) [T]
    hard_diameter_um: float = 20.0  # d of the permanent Li bridge (µm) [T]
    flicker_sigma_ln: float = 0.4  # stationary std of ln R of a soft filament [T]
    flicker_time_s: float = 20.0  # correlation time of that flicker (s) [T]
    fuse_current_ma: float = 1.0  # fusing current of a 1 µm filament (mA) [T]
    fuse_time_s: float = 60.0  # mean burn-out time at the fusing current (s) [T]
    hardening_charge_c: float = 0.2  # charge through a soft filament that makes it hard (C) [T]
    hardening_formations: int = 3  # the n-th filament formation is hard [T]
    # Li extrusion into the SE's pores (mechanism 11)
    pore_flow_speed_um_s: float = 1.0e-4  # v_ref: front speed at ΔP = 1 MPa, ℓ = ℓ_ref, 25 °C [T]
    pore_flow_ref_length_um: float = 100.0  # ℓ_ref (µm)
    pore_flow_exponent: float = 2.0  # n in dℓ/dt = v_ref·(ΔP·ℓ_ref/ℓ)^n [T]
    pore_channels: int = 3  # separator-spanning channels per pellet [T]
    pore_tortuosity: tuple[float, float] = (1.2, 1.6)  # range of their tortuosities τ_k (uniform) [T]
    pore_flow_spread: float = 0.1  # log-normal σ of the per-cell factor on v_ref [T]
    # Small-signal elements of the interface (mechanism 10)
    double_layer_q_f_cm2: float = 10e-6  # CPE Q per cm² of true contact (F·s^(n−1)/cm²) [T]
    double_layer_exponent: float = 0.85  # CPE n [T]
    warburg_ohm_cm2: float = 1.5  # R_W per cm² of true contact at 25 °C (Ω·cm²) [T]
    warburg_time_s: float = 3.0  # τ_W at 25 °C (s) [T]
    # Numerics
    max_substep_s: float = 10.0  # longest internal step under current (s)
    max_contact_change: float = 0.02  # largest relative change of f per internal step


@dataclass(frozen=True)
class ElectrodeMetal:
    """What a lithium-source electrode is made of, as factors on the Li-metal mechanisms 2–6.

    Why factors and not a second electrode model: Li metal and a Li-In alloy meet the electrolyte
    through the same contact, interphase and charge-transfer physics; what differs is how fast Li
    reaches or leaves the interface. In an alloy, plated Li diffuses into the bulk instead of piling
    up at hot spots (so filaments need a far higher local current) and stripped Li is resupplied by
    diffusion through the alloy, not only by creep (so voids need a far higher current).

    Attributes:
        name: Canonical name, ``"Li"`` or ``"Li-In"``.
        potential_v: Equilibrium potential vs Li/Li⁺ (V): 0 for Li, 0.62 for Li-In [D].
        plating_limit_factor: Factor on the critical plating density j_pl (mechanism 6).
        diffusion_supply_ma_cm2: Li supply to stripping contacts by diffusion in the electrode at
            25 °C (mA/cm² of true contact), added to the vacancy and creep supply (mechanism 5).
        diffusion_supply_ea_ev: Activation energy of that supply (eV).
        interphase_factor: Factor on the interphase resistance R0 and its growth rate (mechanism 3):
            a less reducing electrode grows a thinner interphase on a sulfide.
        exchange_factor: Factor on the exchange current density j0 (mechanism 4).
        molar_volume_cm3_mol: Partial molar volume of Li in the electrode (cm³/mol): how much its
            thickness moves per charge.
        pore_entry_factor: Factor on the electrolyte's pore-entry pressure (mechanism 11): how much
            harder the electrode metal is to extrude into the SE's pores than Li; inf never does.
        aliases: Other names users type (case-insensitive).
    """

    name: str
    potential_v: float = 0.0
    plating_limit_factor: float = 1.0
    diffusion_supply_ma_cm2: float = 0.0
    diffusion_supply_ea_ev: float = 0.30
    interphase_factor: float = 1.0
    exchange_factor: float = 1.0
    molar_volume_cm3_mol: float = LI_MOLAR_VOLUME_CM3_MOL
    pore_entry_factor: float = 1.0
    aliases: tuple[str, ...] = ()

    @property
    def um_per_mah_cm2(self) -> float:
        """Thickness change per areal capacity moved into the electrode (µm per mAh/cm²)."""
        # 1 mAh = 3.6 C; (3.6 C/F)·V_m cm³ per cm² = thickness in cm; ×1e4 → µm. Li: 4.85 µm.
        return 3.6 / FARADAY_C_MOL * self.molar_volume_cm3_mol * 1e4


LI_METAL = ElectrodeMetal(name="Li", aliases=("lithium", "Li metal"))
"""Lithium metal: the reference the mechanisms were written for."""

LI_IN_ALLOY = ElectrodeMetal(
    name="Li-In",
    potential_v=0.62,  # DOMAIN.md §2.3, §3
    plating_limit_factor=25.0,  # j_pl 50 mA/cm² of contact at 25 °C: no filaments at full-cell rates [T]
    diffusion_supply_ma_cm2=25.0,  # fast Li diffusion in LiIn refills stripped contacts [T]
    interphase_factor=0.5,  # 0.62 V vs Li: a less reducing, thinner interphase [T]
    exchange_factor=2.0,  # [T]
    molar_volume_cm3_mol=8.0,  # LiIn minus In per Li, from the lattice volumes: 3.0 µm per mAh/cm² [T]
    # LiIn is an intermetallic, far harder than Li and barely creeping at room temperature: it does
    # not extrude into the SE's pores at any stack pressure a rig applies [T].
    pore_entry_factor=math.inf,
    aliases=("LiIn", "Li-In alloy", "In-Li", "InLi"),
)
"""Li-In alloy: +0.62 V vs Li, and far more forgiving to plating and stripping than Li metal."""

ELECTRODE_METALS: Mapping[str, ElectrodeMetal] = MappingProxyType(
    {m.name: m for m in (LI_METAL, LI_IN_ALLOY)}
)
"""Canonical name → lithium-source electrode, read-only."""


def get_electrode_metal(name: str) -> ElectrodeMetal:
    """Find a lithium-source electrode by name or alias, ignoring case and surrounding spaces.

    Raises:
        KeyError: If nothing matches; the message lists every valid name.
    """
    key = name.strip().casefold() if isinstance(name, str) else None
    for metal in ELECTRODE_METALS.values():
        if key in {n.casefold() for n in (metal.name, *metal.aliases)}:
            return metal
    valid = ", ".join(n for m in ELECTRODE_METALS.values() for n in (m.name, *m.aliases))
    raise KeyError(f"unknown electrode {name!r}; valid names: {valid}")


@dataclass(frozen=True)
class CellParameters:
    """What a user states about a symmetric cell when building it. SI units.

    Attributes:
        material: Electrolyte formula or alias (see `simulators.materials`).
        area_m2: Electrode area; default a 10 mm pellet, 0.785 cm².
        thickness_m: Separator thickness; default 0.5 mm.
        pressure_pa: Initial stack pressure; default 1 MPa. The contact starts at equilibrium here.
        temperature_k: Initial temperature; default 25 °C.
        seed: Seed of every random draw the cell makes (dendrites, filaments).
        mechanics: Interface mechanism parameters (see `LithiumMechanics`).
    """

    material: str = "Li6PS5Cl"
    area_m2: float = 0.785e-4
    thickness_m: float = 500e-6
    pressure_pa: float = 1e6
    temperature_k: float = 298.15
    seed: int = 0
    mechanics: LithiumMechanics = field(default_factory=LithiumMechanics)

    def __post_init__(self) -> None:
        get_electrolyte(self.material)  # fail early, with the list of valid names
        for name in ("area_m2", "thickness_m", "temperature_k"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.pressure_pa >= 0:
            raise ValueError(f"pressure_pa must be >= 0, got {self.pressure_pa!r}")


@dataclass(frozen=True)
class CellState:
    """Read-only snapshot of the cell's internal state, for tests, plots and EIS simulators.

    Attributes:
        contact_we: True contact fraction of the working electrode (0..1).
        contact_ce: True contact fraction of the counter electrode (0..1).
        equilibrium_contact: f0(P) at the present stack pressure.
        void_fraction_we: Share of the equilibrium contact lost to voids at the WE, 1 − f/f0 (≥ 0).
        void_fraction_ce: Same for the CE.
        interphase_resistance_ohm: Interphase resistance of one electrode per nominal area at the
            present temperature, as if contact were perfect (Ω).
        short_resistance_ohm: Resistance of the filament short, or None.
        short_kind: ``"soft"``, ``"hard"`` or None.
        filament_formations: How many filaments have nucleated so far.
        elapsed_s: Time integrated by `advance` (s).
        charge_passed_c: Net charge passed, ∫I dt (C); positive = Li moved from WE to CE.
        charge_throughput_c: ∫|I| dt (C).
        pore_front_um: How far Li has extruded into the SE's pore channels from each electrode, ℓ
            (µm along the channel; mechanism 11). Never decreases.
        pore_channels_connected: How many pore channels Li has bridged so far (each one a filament
            formation).
    """

    contact_we: float
    contact_ce: float
    equilibrium_contact: float
    void_fraction_we: float
    void_fraction_ce: float
    interphase_resistance_ohm: float
    short_resistance_ohm: float | None
    short_kind: ShortKind | None
    filament_formations: int
    elapsed_s: float
    charge_passed_c: float
    charge_throughput_c: float
    pore_front_um: float = 0.0
    pore_channels_connected: int = 0


def arrhenius_ev(ea_ev: float, temperature_k: float) -> float:
    """Rate factor relative to 25 °C for an activation energy in eV: exp[−Ea/k_B·(1/T − 1/T_ref)]."""
    return math.exp(-ea_ev / BOLTZMANN_EV_K * (1.0 / temperature_k - 1.0 / T_REF_K))


def random_streams(seed: int, n: int) -> list[random.Random]:
    """Independent random streams from one seed, so one mechanism's draws never shift another's."""
    # SeedSequence wants non-negative entropy; keep negative seeds distinct from positive ones.
    states = np.random.SeedSequence([abs(seed), int(seed < 0)]).spawn(n)
    return [random.Random(int(s.generate_state(2, dtype=np.uint64)[0])) for s in states]


_arrhenius_ev = arrhenius_ev
_streams = random_streams


# --- small-signal elements (mechanism 10) --------------------------------------------------------
def r_cpe_impedance(r_ohm: float, q: float, n: float, omega: float) -> complex:
    """Impedance of a resistor in parallel with a CPE, R/(1 + R·Q·(jω)^n) (Ω).

    Args:
        r_ohm: Resistance (Ω); inf gives the bare CPE.
        q: CPE coefficient (F·s^(n−1)); 0 gives the bare resistor.
        n: CPE exponent (1 = ideal capacitor).
        omega: Angular frequency (rad/s, > 0).
    """
    y_cpe = q * (1j * omega) ** n  # admittance of the CPE (S)
    if math.isinf(r_ohm):
        return 1.0 / y_cpe
    return r_ohm / (1.0 + r_ohm * y_cpe)


def warburg_short_impedance(r_ohm: float, tau_s: float, omega: float) -> complex:
    """Finite-length, transmissive Warburg: R_W·tanh(√(jωτ))/√(jωτ) (Ω); → R_W as ω → 0."""
    s = cmath.sqrt(1j * omega * tau_s)
    if abs(s) < 1e-4:
        return complex(r_ohm)  # tanh(s)/s = 1 − s²/3 + …
    if s.real > 20.0:
        return r_ohm / s  # tanh(s) = 1 to double precision
    return r_ohm * cmath.tanh(s) / s


def separator_elements(
    electrolyte: Electrolyte, thickness_cm: float, area_cm2: float, temperature_k: float
) -> tuple[float, float, float]:
    """Bulk and grain-boundary elements of a separator (mechanism 10).

    The reviews quote total (pellet) conductivities, so the DC separator resistance
    R_sep = L/(σ(T)·A) is split into a bulk part (the high-frequency intercept) and a grain-boundary
    arc with its own activation energy, never added to: Z(ω → 0) stays R_sep.

    Returns:
        (R_bulk, R_gb, Q_gb): Ω, Ω and the grain-boundary CPE coefficient in F·s^(n−1)
        (n = `GB_CPE_EXPONENT`).
    """
    el = electrolyte
    # Total: R_sep(T) = L/(σ25·arr(Ea)·A) (Ω); at 25 °C arr = 1.
    r_sep_25 = thickness_cm / (el.sigma_25_s_cm * area_cm2)
    r_sep = r_sep_25 / _arrhenius_ev(el.ea_ev, temperature_k)
    # Grain boundaries: R_gb(T) = x_gb·R_sep(25 °C)/arr(Ea_gb), capped so the bulk stays positive.
    r_gb_25 = el.gb_resistance_fraction * r_sep_25
    r_gb = min(r_gb_25 / _arrhenius_ev(el.gb_ea_ev, temperature_k), GB_MAX_SHARE * r_sep)
    # CPE from the apex at 25 °C, ω0 = (R·Q)^(−1/n) ⇒ Q = ω0^(−n)/R_gb(25 °C); dielectric, T-independent.
    q_gb = (2.0 * math.pi * el.gb_frequency_hz) ** -GB_CPE_EXPONENT / r_gb_25 if r_gb_25 > 0 else 0.0
    return r_sep - r_gb, r_gb, q_gb


def apex_frequency_hz(r_ohm: float, q: float, n: float) -> float:
    """Apex frequency of an R ∥ CPE arc, (R·Q)^(−1/n)/2π (Hz); inf for an empty element."""
    if r_ohm <= 0.0 or q <= 0.0:
        return math.inf
    return (r_ohm * q) ** (-1.0 / n) / (2.0 * math.pi)


# --- one Li | SE interface (mechanisms 2–6) -----------------------------------------------------
class LithiumElectrode:
    """One lithium-metal (or Li-alloy) electrode against a solid electrolyte: mechanisms 2–6.

    Why a component: the contact, void, interphase, charge-transfer and plating-hazard physics of a
    Li | SE interface is the same in a symmetric cell (two of them) and in a full cell (the anode);
    keeping it in one place means a recalibration reaches both. The owner decides which electrode
    plates or strips, chooses the common time step, and owns the filament (mechanism 7).

    Units as in the module docstring: current density j in mA/cm² of nominal area, areal
    resistances in Ω·cm², pressure in Pa at the interface of this class.

    Attributes:
        contact: True contact fraction f (0..1).
        hazard: Integrated plating hazard since the last nucleation (dimensionless).
        threshold: The Exp(1) threshold that hazard must pass for the next nucleation.
    """

    def __init__(
        self,
        electrolyte: Electrolyte,
        mechanics: LithiumMechanics,
        separator_thickness_um: float,
        rng_nucleation: random.Random,
        *,
        pressure_pa: float,
        temperature_k: float,
        metal: ElectrodeMetal = LI_METAL,
        scatter_plating: float = 1.0,
        scatter_exchange: float = 1.0,
        scatter_interphase: float = 1.0,
    ) -> None:
        self.electrolyte = electrolyte
        self.metal = metal
        self._mech = mechanics
        self._thickness_um = separator_thickness_um
        self._rng = rng_nucleation
        self._scatter_plating = scatter_plating
        self._scatter_exchange = scatter_exchange
        self._scatter_interphase = scatter_interphase
        self.set_conditions(pressure_pa, temperature_k)
        # Contact starts at equilibrium with the initial stack pressure.
        self.contact = self.f0
        # Interphase growth state: ΔR² (Ω·cm²)² if passivating, ΔR (Ω·cm²) if not.
        self.growth = 0.0
        # Plating hazard integral and its Exp(1) threshold.
        self.hazard = 0.0
        self.threshold = self._rng.expovariate(1.0)

    def set_conditions(self, pressure_pa: float, temperature_k: float) -> None:
        """Recompute everything that depends only on P and T (cached: the owner's advance() is hot)."""
        m, el, metal, t = self._mech, self.electrolyte, self.metal, temperature_k
        p_mpa = pressure_pa / 1e6
        # Contact equilibrium f0(P) = P/(P + P_y).
        self.f0 = max(m.pressureless_contact, p_mpa / (p_mpa + m.yield_pressure_mpa))
        # Creep law C(P, T) = (P/1 MPa)^n·exp[−Q/R·(1/T − 1/T_ref)], shared by supply and refill.
        creep = (p_mpa**m.creep_pressure_exponent) * math.exp(
            -m.creep_activation_j_mol / GAS_J_MOL_K * (1.0 / t - 1.0 / T_REF_K)
        )
        # Supply capacity per true contact area (mA/cm²): vacancy diffusion + creep (+ alloy diffusion).
        supply = m.vacancy_supply_ma_cm2 * _arrhenius_ev(m.vacancy_ea_ev, t) + m.creep_supply_ma_cm2 * creep
        if metal.diffusion_supply_ma_cm2:
            supply += metal.diffusion_supply_ma_cm2 * _arrhenius_ev(metal.diffusion_supply_ea_ev, t)
        self.j_cap = max(1e-9, supply)
        # Void refill rate toward f0 (1/s).
        self.k_refill = m.void_refill_rate_per_s * creep
        # Interphase: conduction factor on resistance, and growth rate at T.
        self._sei_factor = 1.0 / _arrhenius_ev(el.interphase_conduction_ea_ev, t)
        g = el.interphase_growth * _arrhenius_ev(el.interphase_growth_ea_ev, t) * metal.interphase_factor
        # Passivating: d(ΔR²)/dt = g² (so ΔR = g·√t at constant T); else dΔR/dt = g.
        self._growth_rate = g * g if el.passivating else g
        # Charge transfer: b = 2RT/F (V) and j0(T) (mA/cm²).
        self.bv_b = 2.0 * GAS_J_MOL_K * t / FARADAY_C_MOL
        self.j0 = (
            el.exchange_current_ma_cm2
            * self._scatter_exchange
            * _arrhenius_ev(el.exchange_current_ea_ev, t)
            * metal.exchange_factor
        )
        # Plating: critical local density j_pl(T) (mA/cm²); minimum crossing time L/v_tip (s).
        self.j_pl = (
            el.critical_plating_ma_cm2
            * self._scatter_plating
            * _arrhenius_ev(el.critical_plating_ea_ev, t)
            * metal.plating_limit_factor
        )
        self._t_cross = self._thickness_um / m.filament_tip_speed_um_s
        # Warburg (mechanism 10): R_W and τ_W ∝ 1/D_Li, D_Li Arrhenius with the vacancy Ea.
        d_factor = _arrhenius_ev(m.vacancy_ea_ev, t)
        self._warburg_cm2 = m.warburg_ohm_cm2 / d_factor
        self._warburg_tau_s = m.warburg_time_s / d_factor

    @property
    def min_contact(self) -> float:
        """Lowest contact voids can leave: the last contact points, or f0 if pressure gives less."""
        return min(self._mech.min_contact, self.f0)

    def sei_cm2(self) -> float:
        """Interphase resistance per nominal area at T, perfect contact (Ω·cm²)."""
        el = self.electrolyte
        dr = math.sqrt(self.growth) if el.passivating else self.growth
        r0 = el.interphase_r0_ohm_cm2 * self._scatter_interphase * self.metal.interphase_factor
        return (r0 + dr) * self._sei_factor

    def bv_a(self) -> float:
        """Butler–Volmer coefficient a = 1/(2·j0·f) (cm²/mA), so that η = b·asinh(a·j) on the true contact."""
        return 0.5 / (self.j0 * self.contact)

    def overpotential_v(self, j: float) -> float:
        """Interphase drop plus charge-transfer overpotential at nominal density j (V, odd in j)."""
        return 1e-3 * j * self.sei_cm2() / self.contact + self.bv_b * math.asinh(self.bv_a() * j)

    def interface_resistance_cm2(self, j: float = 0.0) -> float:
        """Small-signal interface resistance per nominal area at DC density j (Ω·cm²).

        Interphase plus linearised charge transfer, dη/dj = b·a/√(1 + (a·j)²) (V per mA/cm² → ×1e3),
        both on the true contact: RT/(F·j0·f) + R_sei/f at j = 0.
        """
        a = self.bv_a()
        aj = a * j
        r_ct = 1e3 * self.bv_b * a / math.sqrt(1.0 + aj * aj)
        return self.sei_cm2() / self.contact + r_ct

    def impedance(self, omega: float, j: float, area_cm2: float) -> complex:
        """Small-signal impedance of this interface at DC density j (Ω): (R_int ∥ CPE_dl) + W."""
        m = self._mech
        true_area = self.contact * area_cm2  # cm² of true contact
        r_int = self.interface_resistance_cm2(j) / area_cm2
        q_dl = m.double_layer_q_f_cm2 * true_area
        z = r_cpe_impedance(r_int, q_dl, m.double_layer_exponent, omega)
        return z + warburg_short_impedance(self._warburg_cm2 / true_area, self._warburg_tau_s, omega)

    def elements(self, area_cm2: float, j: float = 0.0) -> tuple[float, float, float, float]:
        """(R_int Ω, Q_dl F·s^(n−1), R_W Ω, τ_W s) of this interface at DC density j."""
        true_area = self.contact * area_cm2
        return (
            self.interface_resistance_cm2(j) / area_cm2,
            self._mech.double_layer_q_f_cm2 * true_area,
            self._warburg_cm2 / true_area,
            self._warburg_tau_s,
        )

    def contact_rate(self, j_strip: float) -> float:
        """df/dt (1/s): void formation while stripping, creep refill always.

        Args:
            j_strip: Nominal stripping current density at this electrode (mA/cm², ≥ 0).
        """
        f = self.contact
        # Creep refills voids toward f0(P) (and lets contact relax down if P was lowered).
        rate = self.k_refill * (self.f0 - f)
        if j_strip > 0.0:
            # x = local stripping flux / supply capacity, both per true contact area.
            x = j_strip / (f * self.j_cap)
            xp = x**self._mech.void_onset_exponent
            unreplaced = xp / (1.0 + xp) if xp < 1e300 else 1.0
            # Li removed faster than supplied opens a void of depth δ: df/dt = −v_Li·φ/δ.
            rate -= LI_UM_PER_S_PER_MA_CM2 * j_strip * unreplaced / self._mech.void_depth_um
        return rate

    def plating_hazard(self, j_plate: float) -> float:
        """Hazard (1/s) that plating at `j_plate` (mA/cm², nominal) on this contact shorts the cell."""
        m = self._mech
        ratio = min(j_plate / (self.contact * self.j_pl), 1e6)
        nucleation = m.nucleation_rate_per_s * ratio**m.nucleation_exponent
        # Nucleation then crossing the separator: the rate saturates at v_tip/L.
        return nucleation / (1.0 + nucleation * self._t_cross)

    def nucleated(self) -> bool:
        """True (once) when the integrated plating hazard passed its threshold; draws the next one."""
        if self.hazard < self.threshold:
            return False
        self.hazard = 0.0
        self.threshold = self._rng.expovariate(1.0)
        return True

    def grow(self, dt: float) -> None:
        """Interphase growth over dt (s): ΔR² += g²·dt (passivating) or ΔR += g·dt, exact at constant T."""
        self.growth += self._growth_rate * dt

    def rest(self, dt: float) -> None:
        """Open circuit for dt (s): creep relaxes the contact toward f0 and the interphase grows."""
        # df/dt = k_r·(f0 − f)  ⇒  f(t) = f0 + (f − f0)·exp(−k_r·t).
        self.contact = self.f0 + (self.contact - self.f0) * math.exp(-self.k_refill * dt)
        self.grow(dt)


# --- the filament (mechanism 7) ----------------------------------------------------------------
class Filament:
    """The electronic path a dendrite opens across the separator: none, soft or hard (mechanism 7).

    Why a component: a Li filament shorts a symmetric cell and a full cell alike; only the ionic
    path it bridges differs, and the owner passes that path's resistance in.

    Attributes:
        kind: ``"soft"``, ``"hard"`` or None.
        formations: How many filaments have nucleated so far.
    """

    def __init__(
        self,
        mechanics: LithiumMechanics,
        separator_thickness_m: float,
        rng_new: random.Random,
        rng_flicker: random.Random,
        rng_fuse: random.Random,
    ) -> None:
        self._mech = mechanics
        self._thickness_m = separator_thickness_m
        self._rng_fil = rng_new
        self._rng_flicker = rng_flicker
        self._rng_fuse = rng_fuse
        self.kind: ShortKind | None = None
        self._base_ohm = math.inf  # resistance without flicker
        self._fuse_a = math.inf  # Preece fusing current of the present soft filament
        self._ln = 0.0  # flicker state, ln(R/R_base)
        self._charge_c = 0.0
        self.formations = 0
        self._fuse_hazard = 0.0
        self._fuse_threshold = self._rng_fuse.expovariate(1.0)

    def resistance_ohm(self) -> float:
        """Present filament resistance (Ω), inf without a short."""
        if self.kind is None:
            return math.inf
        if self.kind == "hard":
            return self._base_ohm
        return self._base_ohm * math.exp(self._ln)

    def wire_ohm(self, diameter_um: float) -> float:
        """Resistance of a Li wire spanning the separator: 4L/(π·d²·σ_Li) (Ω)."""
        d_m = diameter_um * 1e-6
        return 4.0 * self._thickness_m / (math.pi * d_m * d_m * self._mech.li_conductivity_s_m)

    def nucleate(self, r_ionic_ohm: float) -> None:
        """A filament reaches the other electrode: a new soft short, or a harder existing one.

        Args:
            r_ionic_ohm: Resistance of the ionic path at this moment; a fresh filament touches the
                far electrode through a few asperities of the same interface, so its resistance is
                a random fraction u ∈ [u_min, u_max] (log-uniform) of it.
        """
        m = self._mech
        self.formations += 1
        if self.kind == "hard":
            return
        if self.formations >= m.hardening_formations:
            self.harden()
            return
        lo, hi = m.soft_resistance_fraction
        r_new = r_ionic_ohm * math.exp(self._rng_fil.uniform(math.log(lo), math.log(hi)))
        # Preece: the fusing current of a thin wire grows as d^1.5.
        d_lo, d_hi = m.soft_diameter_um
        d = math.exp(self._rng_fil.uniform(math.log(d_lo), math.log(d_hi)))
        fuse_new = 1e-3 * m.fuse_current_ma * d**1.5  # A
        if self.kind == "soft":
            # Another path in parallel: conductances add, and so (roughly) do fusing currents.
            self._base_ohm = 1.0 / (1.0 / self._base_ohm + 1.0 / r_new)
            self._fuse_a += fuse_new
        else:
            self.kind = "soft"
            self._base_ohm = r_new
            self._fuse_a = fuse_new
            self._ln = 0.0
            self._charge_c = 0.0
            self._fuse_hazard = 0.0
            self._fuse_threshold = self._rng_fuse.expovariate(1.0)

    def carry(self, voltage_v: float, dt: float) -> None:
        """A soft filament carries V/R for dt (s): Joule burn-out hazard and hardening by charge."""
        if self.kind != "soft":
            return
        m = self._mech
        i_fil = voltage_v / self.resistance_ohm()  # A
        self._charge_c += abs(i_fil) * dt
        self._fuse_hazard += (i_fil / self._fuse_a) ** 2 / m.fuse_time_s * dt
        if self._charge_c >= m.hardening_charge_c:
            self.harden()
        elif self._fuse_hazard >= self._fuse_threshold:
            self.fuse()

    def flicker(self, dt: float) -> None:
        """Contact flicker of a soft filament: exact Ornstein–Uhlenbeck update of ln(R/R_base) over dt."""
        if self.kind != "soft":
            return
        m = self._mech
        decay = math.exp(-dt / m.flicker_time_s)
        spread = m.flicker_sigma_ln * math.sqrt(1.0 - decay * decay)
        self._ln = self._ln * decay + spread * self._rng_flicker.gauss(0.0, 1.0)

    def harden(self) -> None:
        """The filament thickens into a permanent Li bridge."""
        self.kind = "hard"
        self._base_ohm = self.wire_ohm(self._mech.hard_diameter_um)
        self._ln = 0.0

    def fuse(self) -> None:
        """Joule heating burns the soft filament out; the cell recovers (voids stay)."""
        self.kind = None
        self._base_ohm = math.inf
        self._fuse_a = math.inf
        self._ln = 0.0


# --- Li extrusion into the separator's pores (mechanism 11) -------------------------------------
class PoreExtrusion:
    """Li metal creeping into the separator's pore channels under stack pressure (mechanism 11).

    Why a component: any cell with a Li-metal electrode pressed against a porous pellet extrudes Li
    into it, current or not; a symmetric cell pushes from both faces, a full cell from its anode
    only. The owner passes the conditions in and turns each bridged channel into a filament
    formation (`Filament.nucleate`).

    The front ℓ (µm along the channels, the same in each of them and from each Li face: same
    pressure, temperature and pellet) obeys dℓ/dt = v·(ΔP·ℓ_ref/ℓ)^n with ΔP = P − P_e, so
    s = ℓ^(n+1) grows at the constant rate (n+1)·v·ℓ_ref^n·ΔP^n while P and T hold: `advance` is exact
    for any dt. Channel k connects the electrodes when ℓ ≥ τ_k·L / sides.

    Attributes:
        front_um: ℓ (µm); never decreases.
        connected: How many channels have been bridged so far.
        tortuosities: τ_k of this pellet's channels, ascending.
    """

    def __init__(
        self,
        electrolyte: Electrolyte,
        mechanics: LithiumMechanics,
        separator_thickness_um: float,
        rng: random.Random,
        *,
        pressure_pa: float,
        temperature_k: float,
        metal: ElectrodeMetal = LI_METAL,
        sides: int = 2,
    ) -> None:
        m = mechanics
        self._mech = m
        self._n = m.pore_flow_exponent
        # Pore-entry pressure (MPa): a property of the pellet's pores and of the metal pushed in.
        factor = metal.pore_entry_factor
        self.entry_pressure_mpa = (
            math.inf if math.isinf(factor) else electrolyte.pore_entry_pressure_mpa * factor
        )
        # This pellet: one factor on v_ref, then the channels' tortuosities (own stream, drawn once).
        scatter = math.exp(rng.gauss(0.0, m.pore_flow_spread))
        self._coefficient = (
            (self._n + 1.0)
            * m.pore_flow_speed_um_s
            * electrolyte.pore_flow_factor
            * scatter
            * m.pore_flow_ref_length_um**self._n
        )
        lo, hi = m.pore_tortuosity
        self.tortuosities = tuple(sorted(rng.uniform(lo, hi) for _ in range(m.pore_channels)))
        # A channel filled from both of its ends is bridged when each front is half-way.
        self._s_connect = tuple(
            (tau * separator_thickness_um / sides) ** (self._n + 1.0) for tau in self.tortuosities
        )
        self._s = 0.0  # ℓ^(n+1) (µm^(n+1))
        self.front_um = 0.0
        self.connected = 0
        self._rate = 0.0
        self.set_conditions(pressure_pa, temperature_k)

    def set_conditions(self, pressure_pa: float, temperature_k: float) -> None:
        """Recompute ds/dt at the stack pressure and temperature (zero at or below P_e)."""
        excess = pressure_pa / 1e6 - self.entry_pressure_mpa
        if not excess > 0.0:
            self._rate = 0.0
            return
        # Same Li creep activation as the contact (mechanism 5).
        q_r = self._mech.creep_activation_j_mol / GAS_J_MOL_K
        creep = math.exp(-q_r * (1.0 / temperature_k - 1.0 / T_REF_K))
        self._rate = self._coefficient * excess**self._n * creep

    def advance(self, dt: float) -> int:
        """Move the front for dt (s), exactly; returns how many channels it newly bridged."""
        if self._rate == 0.0 or dt <= 0.0:
            return 0
        self._s += self._rate * dt
        self.front_um = self._s ** (1.0 / (self._n + 1.0))
        before = self.connected
        while self.connected < len(self._s_connect) and self._s >= self._s_connect[self.connected]:
            self.connected += 1
        return self.connected - before

    def time_to_next_s(self) -> float:
        """Time (s) until the next channel is bridged at the present conditions; inf if never."""
        if self.connected >= len(self._s_connect) or self._rate == 0.0:
            return math.inf
        return (self._s_connect[self.connected] - self._s) / self._rate


# --- the symmetric cell --------------------------------------------------------------------------
class SymmetricCell:
    """A Li | SE | Li symmetric cell under stack pressure: an `ElectricalLoad` and an `ImpedanceLoad`.

    Why a stateful object with `advance`/`voltage`: the instrument simulator owns the clock and the
    current; the cell only integrates its state over the time it is told and reports the voltage.
    `pressure_pa` and `temperature_k` may be set at any time (by a pressure rig or heater model);
    the contact then creeps toward the new equilibrium instead of jumping.
    """

    def __init__(self, params: CellParameters | None = None) -> None:
        self.params = params or CellParameters()
        self.electrolyte: Electrolyte = get_electrolyte(self.params.material)
        self._mech = self.params.mechanics
        self._area_cm2 = self.params.area_m2 * 1e4
        self._thickness_um = self.params.thickness_m * 1e6
        # Random streams: nucleation WE, nucleation CE, new filaments, flicker, fuse, per-cell
        # scatter, pores (a stream added at the end leaves the others' draws unchanged).
        rng_nuc_we, rng_nuc_ce, rng_fil, rng_flicker, rng_fuse, rng_cell, rng_pores = _streams(
            self.params.seed, 7
        )
        # No two pellets are alike: defects, surface films and the interphase's starting state
        # scatter from cell to cell. One factor each, drawn once per cell from its seed.
        spread = self._mech.cell_to_cell_spread
        scatter_plating, scatter_exchange, scatter_interphase = (
            math.exp(rng_cell.gauss(0.0, spread)) for _ in range(3)
        )
        self._pressure_pa = float(self.params.pressure_pa)
        self._temperature_k = float(self.params.temperature_k)
        self._we, self._ce = (
            LithiumElectrode(
                self.electrolyte,
                self._mech,
                self._thickness_um,
                rng,
                pressure_pa=self._pressure_pa,
                temperature_k=self._temperature_k,
                scatter_plating=scatter_plating,
                scatter_exchange=scatter_exchange,
                scatter_interphase=scatter_interphase,
            )
            for rng in (rng_nuc_we, rng_nuc_ce)
        )
        self._filament = Filament(self._mech, self.params.thickness_m, rng_fil, rng_flicker, rng_fuse)
        self._pores = PoreExtrusion(
            self.electrolyte,
            self._mech,
            self._thickness_um,
            rng_pores,
            pressure_pa=self._pressure_pa,
            temperature_k=self._temperature_k,
            sides=2,
        )
        self._refresh_conditions()
        # Book-keeping.
        self._elapsed_s = 0.0
        self._charge_c = 0.0
        self._throughput_c = 0.0

    # --- conditions ---------------------------------------------------------------------------
    @property
    def pressure_pa(self) -> float:
        """Stack pressure (Pa). Settable: the contact then creeps toward the new f0(P)."""
        return self._pressure_pa

    @pressure_pa.setter
    def pressure_pa(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"pressure must be >= 0 Pa, got {value!r}")
        self._pressure_pa = float(value)
        self._refresh_conditions()

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
        t = self._temperature_k
        # Bulk: R_bulk·A = L/σ(T) (Ω·cm²), L in cm.
        sigma = self.electrolyte.sigma_25_s_cm * _arrhenius_ev(self.electrolyte.ea_ev, t)
        self._r_bulk_cm2 = (self._thickness_um * 1e-4) / sigma
        for electrode in (self._we, self._ce):
            electrode.set_conditions(self._pressure_pa, t)
        self._pores.set_conditions(self._pressure_pa, t)

    # --- resistances ----------------------------------------------------------------------------
    def bulk_resistance_ohm(self) -> float:
        """Ionic resistance of the separator at the present temperature, L/(σ(T)·A) (Ω).

        This is the DC (total: bulk + grain boundaries) resistance; `equivalent_circuit()` splits it
        into the high-frequency intercept R_bulk_ohm and the grain-boundary arc R_gb_ohm.
        """
        return self._r_bulk_cm2 / self._area_cm2

    def interface_resistance_ohm(self) -> float:
        """Small-signal resistance of both Li/SE interfaces at zero current (Ω).

        Interphase plus charge-transfer resistance (dη/dj at j = 0 is RT/(F·j0)), each acting on
        the true contact area only, so voids show up here as they would in an EIS arc.
        """
        we, ce = self._we, self._ce
        r_ct = 0.5 * we.bv_b / (we.j0 * 1e-3)  # RT/(F·j0) in Ω·cm² (j0 in A/cm²)
        per_contact = we.sei_cm2() + r_ct
        return per_contact * (1.0 / we.contact + 1.0 / ce.contact) / self._area_cm2

    @property
    def is_shorted(self) -> bool:
        """True while a soft or hard filament bridges the electrodes."""
        return self._filament.kind is not None

    @property
    def state(self) -> CellState:
        """A snapshot of the internal state (a copy: changing it changes nothing)."""
        we, ce = self._we, self._ce
        r_short = self._filament.resistance_ohm()
        return CellState(
            contact_we=we.contact,
            contact_ce=ce.contact,
            equilibrium_contact=we.f0,
            void_fraction_we=max(0.0, 1.0 - we.contact / we.f0),
            void_fraction_ce=max(0.0, 1.0 - ce.contact / ce.f0),
            interphase_resistance_ohm=we.sei_cm2() / self._area_cm2,
            short_resistance_ohm=None if math.isinf(r_short) else r_short,
            short_kind=self._filament.kind,
            filament_formations=self._filament.formations,
            elapsed_s=self._elapsed_s,
            charge_passed_c=self._charge_c,
            charge_throughput_c=self._throughput_c,
            pore_front_um=self._pores.front_um,
            pore_channels_connected=self._pores.connected,
        )

    # --- electrical solution --------------------------------------------------------------------
    def _ionic_coefficients(self) -> tuple[float, float, float, float]:
        """Coefficients of the ionic branch V(j) = r·j + b·[asinh(a_we·j) + asinh(a_ce·j)].

        Returns (r, b, a_we, a_ce): r in V per mA/cm² (bulk + both interphases on true contact,
        Ω·cm² × 1e-3), b = 2RT/F in V, a_e = 1/(2·j0·f_e) in cm²/mA.
        """
        we, ce = self._we, self._ce
        r = 1e-3 * (self._r_bulk_cm2 + we.sei_cm2() / we.contact + ce.sei_cm2() / ce.contact)
        return r, we.bv_b, we.bv_a(), ce.bv_a()

    def _split(self, j_total: float) -> tuple[float, float]:
        """Split a total current density between the ionic path and the filament.

        Args:
            j_total: Terminal current density (mA/cm² of nominal area), signed.

        Returns:
            (j_ion, V): the ionic current density (mA/cm²) and the terminal voltage (V).
        """
        r, b, a_w, a_c = self._ionic_coefficients()
        r_short = self._filament.resistance_ohm()
        if math.isinf(r_short):
            # No filament: all current is ionic, V(j) in closed form.
            return j_total, r * j_total + b * (math.asinh(a_w * j_total) + math.asinh(a_c * j_total))
        if j_total == 0.0:
            return 0.0, 0.0
        # Filament conductance per nominal area in (mA/cm²)/V: 1e3/(R·A).
        g = 1e3 / (r_short * self._area_cm2)
        # V(j) is odd, so solve for |J| and restore the sign. h(j) = j + g·V(j) − |J| is increasing
        # and concave for j ≥ 0: Newton from j = 0 approaches the root monotonically from below.
        target = abs(j_total)
        j = 0.0
        for _ in range(50):
            aw, ac = a_w * j, a_c * j
            v = r * j + b * (math.asinh(aw) + math.asinh(ac))
            dv = r + b * (a_w / math.sqrt(1.0 + aw * aw) + a_c / math.sqrt(1.0 + ac * ac))
            step = (j + g * v - target) / (1.0 + g * dv)
            j -= step
            if abs(step) <= 1e-13 * target:
                break
        v = r * j + b * (math.asinh(a_w * j) + math.asinh(a_c * j))
        return math.copysign(j, j_total), math.copysign(v, j_total)

    def voltage(self, current_a: float) -> float:
        """Terminal voltage (V) at the present state while `current_a` (A) flows. No noise."""
        return self._split(current_a / self._area_cm2 * 1e3)[1]

    # --- small-signal impedance (mechanism 10) ----------------------------------------------------
    def impedance(self, frequency_hz: float, current_a: float = 0.0) -> complex:
        """Small-signal impedance (Ω) at `frequency_hz` around the DC current `current_a` (A), now.

        Math sign convention: capacitive Im(Z) < 0. The interface resistances are linearised at the
        DC ionic current (part of a DC current flows through a filament, if there is one), and a
        filament shunts the whole ionic impedance. No noise: the EIS instrument adds it.

        Raises:
            ValueError: If the frequency is not > 0.
        """
        if not frequency_hz > 0:
            raise ValueError(f"frequency must be > 0 Hz, got {frequency_hz!r}")
        omega = 2.0 * math.pi * frequency_hz
        j_ion = self._split(current_a / self._area_cm2 * 1e3)[0]
        r_bulk, r_gb, q_gb = self._separator_elements()
        z = r_bulk + r_cpe_impedance(r_gb, q_gb, GB_CPE_EXPONENT, omega)
        z += self._we.impedance(omega, j_ion, self._area_cm2)
        z += self._ce.impedance(omega, j_ion, self._area_cm2)
        r_short = self._filament.resistance_ohm()
        if math.isinf(r_short):
            return complex(z)
        return complex(z * r_short / (z + r_short))  # Z_ion ∥ R_fil

    def _separator_elements(self) -> tuple[float, float, float]:
        return separator_elements(
            self.electrolyte, self._thickness_um * 1e-4, self._area_cm2, self._temperature_k
        )

    def equivalent_circuit(self) -> dict[str, float]:
        """Present element values of R_bulk + (R_gb ∥ CPE_gb) + (R_int ∥ CPE_int) + W, at zero current.

        For tests and fits to compare a fitted spectrum with the truth. Keys (SI; Q in F·s^(n−1)):

        - ``R_bulk_ohm``: bulk (grain) resistance, the high-frequency intercept. With ``R_gb_ohm``
          it adds up to `bulk_resistance_ohm()`, the DC separator resistance.
        - ``R_gb_ohm``, ``Q_gb``, ``n_gb``, ``f_gb_hz``: grain-boundary arc and its apex frequency.
        - ``R_int_ohm``: both interfaces summed (= `interface_resistance_ohm()`), ``R_int_we_ohm``
          and ``R_int_ce_ohm`` each; ``Q_int_we``, ``Q_int_ce``, ``n_int``: their double-layer CPEs;
          ``Q_int``: the single CPE of the one arc the two make (they share the apex frequency,
          ``f_int_hz``), R_int_we·Q_int_we/R_int.
        - ``R_W_ohm`` (both electrodes), ``tau_W_s``: finite-length Warburg.
        - ``R_short_ohm``: filament resistance, inf without a short (it shunts everything above).
        """
        r_bulk, r_gb, q_gb = self._separator_elements()
        r_we, q_we, w_we, tau = self._we.elements(self._area_cm2)
        r_ce, q_ce, w_ce, _ = self._ce.elements(self._area_cm2)
        n_dl = self._mech.double_layer_exponent
        r_int = r_we + r_ce
        # Two R ∥ CPE in series with one apex ω0 (R·Q equal) act as one with R_int and R_int·Q = R_we·Q_we.
        q_int = r_we * q_we / r_int
        return {
            "R_bulk_ohm": r_bulk,
            "R_gb_ohm": r_gb,
            "Q_gb": q_gb,
            "n_gb": GB_CPE_EXPONENT,
            "f_gb_hz": apex_frequency_hz(r_gb, q_gb, GB_CPE_EXPONENT),
            "R_int_ohm": r_int,
            "R_int_we_ohm": r_we,
            "R_int_ce_ohm": r_ce,
            "Q_int": q_int,
            "Q_int_we": q_we,
            "Q_int_ce": q_ce,
            "n_int": n_dl,
            "f_int_hz": apex_frequency_hz(r_we, q_we, n_dl),
            "R_W_ohm": w_we + w_ce,
            "tau_W_s": tau,
            "R_short_ohm": self._filament.resistance_ohm(),
        }

    # --- time integration ---------------------------------------------------------------------
    def advance(self, dt: float, current_a: float) -> None:
        """Integrate the cell state over `dt` seconds at constant current `current_a` (A).

        At zero current everything has a closed form (creep relaxation, interphase growth), so a
        rest of any length is one step. Under current the contact ODE is sub-stepped (explicit
        Euler, at most `max_substep_s` and a `max_contact_change` relative change of f per step),
        the hazards are integrated along, and the flicker is updated exactly once per call.
        Deterministic: the same seed and the same sequence of calls give the same state.
        """
        if not dt >= 0:
            raise ValueError(f"dt must be >= 0 s, got {dt!r}")
        if dt == 0:
            return
        j_total = current_a / self._area_cm2 * 1e3  # mA/cm²
        if j_total == 0.0:
            # Open circuit: no current flows, so no voids open, nothing plates and a filament
            # (V = 0) carries nothing; creep relaxes both contacts and the interphase grows.
            self._we.rest(dt)
            self._ce.rest(dt)
        else:
            self._run(dt, j_total)
        # Li extrusion into the pores (mechanism 11), current or not: each bridged channel is a
        # filament formation across the ionic path as it is now.
        for _ in range(self._pores.advance(dt)):
            j_ion, v = self._split(j_total)
            self._filament.nucleate(self._ionic_ohm(j_ion, v))
        self._elapsed_s += dt
        self._charge_c += current_a * dt
        self._throughput_c += abs(current_a) * dt
        self._filament.flicker(dt)

    def _run(self, dt: float, j_total: float) -> None:
        """Under current: sub-stepped voids, plating hazards, filament burn-out and hardening."""
        m = self._mech
        we, ce, filament = self._we, self._ce, self._filament
        f_lo = we.min_contact
        remaining = dt
        while remaining > 0.0:
            j_ion, v = self._split(j_total)
            # +j strips the WE and plates the CE; −j the reverse.
            if j_ion > 0.0:
                rate_we = we.contact_rate(j_ion)
                rate_ce = ce.contact_rate(0.0)
            else:
                rate_we = we.contact_rate(0.0)
                rate_ce = ce.contact_rate(-j_ion)
            # A contact pinned at its lower bound does not shrink further, nor limit the step.
            if rate_we < 0.0 and we.contact <= f_lo:
                rate_we = 0.0
            if rate_ce < 0.0 and ce.contact <= f_lo:
                rate_ce = 0.0
            # Step: at most max_substep_s, and small relative contact changes (the void runaway
            # accelerates as f falls, so a fixed step would overshoot near f_min).
            h = min(remaining, m.max_substep_s)
            fastest = max(abs(rate_we) / we.contact, abs(rate_ce) / ce.contact)  # 1/s
            if fastest * h > m.max_contact_change:
                h = max(m.max_contact_change / fastest, 1e-3)
            # Plating hazard of the electrode receiving Li (f at the start of the step).
            if j_ion < 0.0:
                we.hazard += we.plating_hazard(-j_ion) * h
            elif j_ion > 0.0:
                ce.hazard += ce.plating_hazard(j_ion) * h
            # Contact update, clamped to [f_lo, 1].
            we.contact = min(1.0, max(f_lo, we.contact + rate_we * h))
            ce.contact = min(1.0, max(f_lo, ce.contact + rate_ce * h))
            # Interphase growth: ΔR² += g²·h (passivating) or ΔR += g·h.
            we.grow(h)
            ce.grow(h)
            # Filament: charge through it, Joule burn-out hazard, hardening.
            filament.carry(v, h)
            # Nucleation: the integrated hazard passed this electrode's Exp(1) threshold.
            if we.nucleated():
                filament.nucleate(self._ionic_ohm(j_ion, v))
            if ce.nucleated():
                filament.nucleate(self._ionic_ohm(j_ion, v))
            remaining -= h

    def _ionic_ohm(self, j_ion: float, v: float) -> float:
        """Resistance of the ionic path (Ω): chord V/I under current, small-signal dV/dI at rest."""
        if j_ion != 0.0 and v != 0.0:
            return v / (j_ion * 1e-3 * self._area_cm2)
        r, b, a_w, a_c = self._ionic_coefficients()
        return (r + b * (a_w + a_c)) / (1e-3 * self._area_cm2)
