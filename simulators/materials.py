"""Sulfide solid electrolytes the cell simulator knows: transport numbers and how each meets lithium.

Why a table and not constants in the cell model: the same Li | SE | Li mechanisms (contact, voids,
dendrites, interphase) apply to every electrolyte, only the material numbers change. Keeping the
numbers here lets a protocol name the electrolyte it was run on and get a matching cell.

Sources (see /work/shared/DOMAIN.md §3):
- σ at 25 °C and the activation energy Ea of every entry: the review table in DOMAIN.md §3.
- Passivating vs non-passivating Li interphase: DOMAIN.md §2.4 (LPSCl, Li7P3S11 passivate, √t
  growth; LGPS keeps growing, linear) and the brief for Li3PS4 (passivating: Li2S + Li3P) and the
  Si-substituted LGPS-type Li9.54Si1.74P1.44S11.7Cl0.3 (non-passivating, like LGPS).
- Interphase resistance, its growth rate, the exchange current density and the critical plating
  density: no review gives them per material. They are "typical practice" values chosen so that a
  fresh Li | SE interface shows a few Ω·cm² and ~10–20 mV of overpotential at moderate current, and
  so that the growth is visible by EIS within hours (non-passivating) or days (passivating).
  Treat them as defaults, never as constants of nature.
- Grain boundaries (used only by the small-signal impedance): the σ25 above is the *total* (pellet)
  conductivity the reviews quote, so a grain-boundary share of the separator resistance, its own (higher)
  activation energy and the relaxation frequency of the grain-boundary arc are "typical practice" values
  too: sulfides have a small grain-boundary arc at high frequency, near or above 1 MHz at 25 °C, higher
  for the faster conductors, more pronounced in glass-ceramics (Li3PS4, Li7P3S11).
- Li extrusion into the pellet's pores (mechanism 11 of `simulators.cell`): the pore-entry pressure
  and the flow factor are "typical practice" values too. A cold-pressed sulfide pellet keeps some
  per cent of porosity with sub-µm throats; Li has to be pushed well above its bulk yield stress
  (~0.8 MPa) to enter them, ~10 MPa for Li6PS5Cl [T]. A non-passivating electrolyte (LGPS-type)
  reacts with the Li on the pore walls and lines the channel with a mixed-conducting,
  Li-wetted interphase (Li-Ge/Li-Si alloys, Li2S, Li3P): the Li enters at a lower pressure and the
  channel conducts electrons sooner, so its channels short several times faster [T].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Electrolyte:
    """One solid electrolyte and its interface with lithium metal, in lab units.

    Lab units (S/cm, Ω·cm², mA/cm²) because that is how the literature quotes them; the cell model
    converts to SI at its public interface.

    Attributes:
        name: Canonical formula, e.g. ``"Li6PS5Cl"``.
        sigma_25_s_cm: Ionic conductivity at 25 °C (S/cm).
        ea_ev: Activation energy of the ionic conductivity (eV).
        passivating: True if the Li/SE interphase self-limits (resistance grows ∝ √t), False if it
            keeps growing (∝ t) because the interphase conducts electrons.
        interphase_r0_ohm_cm2: Interphase resistance of one fresh Li/SE interface per nominal area at
            25 °C (Ω·cm²), for perfect contact.
        interphase_growth: Growth of that resistance at 25 °C: Ω·cm²/√s if passivating, else
            Ω·cm²/s.
        interphase_growth_ea_ev: Activation energy of the interphase growth (eV).
        interphase_conduction_ea_ev: Activation energy of ion transport through the interphase (eV).
        exchange_current_ma_cm2: Exchange current density j0 of Li ⇌ Li⁺ + e⁻ at 25 °C (mA/cm²).
        exchange_current_ea_ev: Activation energy of j0 (eV).
        critical_plating_ma_cm2: Local plating current density at which dendrite nucleation becomes
            likely within minutes, at 25 °C, on a perfect interface (mA/cm²).
        critical_plating_ea_ev: Activation energy of that critical density (eV): a warmer, softer Li
            relaxes the stress at plating hot spots faster.
        electronic_sigma_s_cm: Electronic conductivity (S/cm); informational, not used by the cell.
        gb_resistance_fraction: Share of the total ionic resistance of a pellet at 25 °C that sits in its
            grain boundaries (0..1). The impedance splits the DC separator resistance into a bulk
            (high-frequency intercept) part and this grain-boundary arc; the DC model is unchanged.
        gb_ea_ev: Activation energy of the grain-boundary resistance (eV), above `ea_ev`: the boundary
            share grows when cold.
        gb_frequency_hz: Apex frequency of the grain-boundary arc at 25 °C (Hz). In the brick-layer
            model it is σ_gb/(2π·ε0·ε_gb), a material constant independent of the pellet's geometry.
        pore_entry_pressure_mpa: Stack pressure above which Li metal enters the pellet's
            surface-connected pores (MPa): set by the pore throat size of a dense cold-pressed pellet
            and by how well Li wets the pore walls (mechanism 11 of `simulators.cell`).
        pore_flow_factor: Factor on the speed of the Li front in those pores (1 for a passivating
            interphase). A mixed-conducting interphase grows along the pore walls ahead of the Li,
            so the electronic path through a channel closes sooner: > 1.
        aliases: Other names users type for this material (case-insensitive).
    """

    name: str
    sigma_25_s_cm: float
    ea_ev: float
    passivating: bool
    interphase_r0_ohm_cm2: float
    interphase_growth: float
    interphase_growth_ea_ev: float = 0.40
    interphase_conduction_ea_ev: float = 0.35
    exchange_current_ma_cm2: float = 2.0
    exchange_current_ea_ev: float = 0.30
    critical_plating_ma_cm2: float = 2.0
    critical_plating_ea_ev: float = 0.25
    electronic_sigma_s_cm: float | None = None
    gb_resistance_fraction: float = 0.10
    gb_ea_ev: float = 0.40
    gb_frequency_hz: float = 1e6
    pore_entry_pressure_mpa: float = 10.0
    pore_flow_factor: float = 1.0
    aliases: tuple[str, ...] = ()


# The table. σ25 and Ea: DOMAIN.md §3. Interphase and grain-boundary numbers: typical practice (see
# module docstring); the grain-boundary frequency scales roughly with σ25 (σ_gb/ε_gb, same ε_gb).
# A passivating growth of 0.004 Ω·cm²/√s adds ~1.2 Ω·cm² after 1 day and ~3.4 Ω·cm² after 200 h;
# a linear 2 Ω·cm²/h (5.6e-4 Ω·cm²/s) adds ~48 Ω·cm² per day, which EIS sees within hours.
# Pores (mechanism 11): every pellet 10 MPa entry pressure and flow factor 1 [T], except the
# non-passivating LGPS-type ones (7 MPa; ×3 for LGPS, whose interphase grows twice as fast as
# LiSiPSCl's, ×2 for LiSiPSCl) [T].
_TABLE: tuple[Electrolyte, ...] = (
    Electrolyte(
        name="Li6PS5Cl",
        sigma_25_s_cm=1.3e-3,
        ea_ev=0.33,
        passivating=True,
        interphase_r0_ohm_cm2=3.0,
        interphase_growth=0.002,
        gb_resistance_fraction=0.1,
        gb_ea_ev=0.4,
        gb_frequency_hz=5e5,
        aliases=("LPSCl",),
    ),
    Electrolyte(
        name="Li6PS5Br",
        sigma_25_s_cm=1.0e-2,
        ea_ev=0.20,
        passivating=True,
        interphase_r0_ohm_cm2=3.0,
        interphase_growth=0.002,
        gb_resistance_fraction=0.1,
        gb_ea_ev=0.27,
        gb_frequency_hz=3e6,
        aliases=("LPSBr",),
    ),
    Electrolyte(
        name="Li3PS4",
        sigma_25_s_cm=2.8e-4,
        ea_ev=0.356,
        passivating=True,
        interphase_r0_ohm_cm2=8.0,
        interphase_growth=0.008,
        electronic_sigma_s_cm=1e-8,
        gb_resistance_fraction=0.2,
        gb_ea_ev=0.43,
        gb_frequency_hz=1.5e5,
        aliases=("LPS", "75Li2S-25P2S5", "beta-Li3PS4"),
    ),
    Electrolyte(
        name="Li7P3S11",
        sigma_25_s_cm=1.7e-2,
        ea_ev=0.18,
        passivating=True,
        interphase_r0_ohm_cm2=5.0,
        interphase_growth=0.008,
        gb_resistance_fraction=0.25,
        gb_ea_ev=0.26,
        gb_frequency_hz=5e6,
        aliases=("LPS711", "70Li2S-30P2S5"),
    ),
    Electrolyte(
        name="Li10GeP2S12",
        sigma_25_s_cm=1.2e-2,
        ea_ev=0.21,
        passivating=False,
        interphase_r0_ohm_cm2=5.0,
        interphase_growth=2.0 / 3600.0,
        gb_resistance_fraction=0.15,
        gb_ea_ev=0.28,
        gb_frequency_hz=4e6,
        pore_entry_pressure_mpa=7.0,
        pore_flow_factor=3.0,
        aliases=("LGPS",),
    ),
    Electrolyte(
        name="Li9.54Si1.74P1.44S11.7Cl0.3",
        sigma_25_s_cm=2.5e-2,
        ea_ev=0.238,
        passivating=False,
        interphase_r0_ohm_cm2=5.0,
        interphase_growth=1.0 / 3600.0,
        gb_resistance_fraction=0.15,
        gb_ea_ev=0.3,
        gb_frequency_hz=8e6,
        pore_entry_pressure_mpa=7.0,
        pore_flow_factor=2.0,
        aliases=("LiSiPSCl", "LSiPSCl"),
    ),
)

ELECTROLYTES: Mapping[str, Electrolyte] = MappingProxyType({e.name: e for e in _TABLE})
"""Canonical name → electrolyte, read-only."""

_LOOKUP: Mapping[str, Electrolyte] = MappingProxyType(
    {key.casefold(): e for e in _TABLE for key in (e.name, *e.aliases)}
)


def electrolyte_names() -> list[str]:
    """Every name `get_electrolyte` accepts: canonical formulas first, then aliases."""
    return [e.name for e in _TABLE] + [a for e in _TABLE for a in e.aliases]


def get_electrolyte(name: str) -> Electrolyte:
    """Find an electrolyte by formula or alias, ignoring case and surrounding spaces.

    Args:
        name: A formula (``"Li6PS5Cl"``) or an alias (``"LPSCl"``, ``"lgps"``).

    Returns:
        The matching electrolyte.

    Raises:
        KeyError: If nothing matches; the message lists every valid name so a typo in a protocol
            file can be fixed without reading this module.
    """
    try:
        return _LOOKUP[name.strip().casefold()]
    except (KeyError, AttributeError):
        valid = ", ".join(electrolyte_names())
        raise KeyError(f"unknown solid electrolyte {name!r}; valid names: {valid}") from None
