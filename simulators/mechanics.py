"""Mechanics of a screw-driven stack-pressure rig: actuator position → stack force, with Li creep.

The rig (DOMAIN.md §2.2): a motorised screw closes on a pellet die (optionally through a softer disc
spring). Position x is in metres, closing positive; contact happens at `x_contact_m`. Beyond it the
stack is a spring of stiffness k (the die, the SE pellet, the spring in series) in series with a
Maxwell dashpot, the lithium, that creeps:

    F = k · max(0, x − x_contact + Δh − c)

where Δh is the cell's thickness change (m, growth positive: a cathode that expands on charge, an
interphase that swells; a thicker cell is touched earlier, so at a fixed gap growth raises the
force) and c ≥ 0 is the creep displacement of the lithium. At a fixed gap the force
therefore relaxes, as a constant-gap rig relaxes over hours (DOMAIN.md §2.2 "Li itself creeps").

Creep law (a power-law Maxwell element, the simplest shape with the right trends):

    dc/dt = (F/k) / τ,    τ = τ_ref · exp[Q/R · (1/T − 1/T_ref)] · (σ_ref/σ)^(n−1)

so relaxation is faster when hot (Arrhenius, Q ≈ 37 kJ/mol for Li self-diffusion-controlled creep)
and faster at higher stress σ = F/A (power-law creep, stress exponent n; Li's measured n is ≈ 6.5,
the default here is a milder 2 so that τ stays in hours across 0.1–20 MPa). The Li flows out
sideways from between the plates, so a thinning foil creeps ever slower (squeeze flow: the rate
goes as the cube of the remaining thickness): τ is multiplied by (L/(L − c))³, L = `max_creep_m`,
the foil thickness; c never reaches L. A constant-pressure hold thus keeps creeping (the loop keeps
compensating) and a fixed gap keeps relaxing, both more slowly as the foil thins. Each sub-step
integrates the creep exactly for τ frozen at the start of the step (u ← u·exp(−h/τ)), which is
stable for any step.

Coupling: an actuator simulator attaches itself as the `drive`; each sub-step asks it for the
position at the end of the step (it may clamp the position where the force would exceed its
thrust, see `position_for_force`). If `cell` is given (any object with a settable `pressure_pa`),
every advance sets `cell.pressure_pa = F / area_m2`, and if it has a `temperature_k` (set by a
heater simulator) the creep follows that temperature.

The model is deterministic (no noise; the gauge adds its own).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

GAS_CONSTANT = 8.314462618
"""J/(mol·K)."""


class Drive(Protocol):
    """What moves the screw: an actuator simulator attached to `StackMechanics.drive`."""

    @property
    def moving(self) -> bool:
        """Whether the position changes now (the mechanics then takes short motion sub-steps)."""
        ...

    def step(self, t: float, mechanics: StackMechanics) -> float:
        """Move to time `t` (s) and return the position (m) there; may read the mechanics' force."""
        ...


class PressureTarget(Protocol):
    """Anything whose stack pressure follows the rig, e.g. `simulators.cell.SymmetricCell`."""

    pressure_pa: float


class StackMechanics:
    """A screw rig closing on a pellet stack with a creeping Li layer.

    Args:
        stiffness_n_m: stiffness of the stack itself (die, pellet), N/m; a few MN/m for a pellet die.
        spring_n_m: a softer spring in series (disc springs), N/m; None = no spring.
        x_contact_m: actuator position where the stack is first touched, m.
        area_m2: cell area for the pressure, m² (default a 10 mm pellet, 0.785 cm²).
        temperature_k: temperature of the stack, K (settable later).
        tau_ref_s: creep relaxation time at `t_ref_k` and `sigma_ref_pa`, s (hours for Li).
        t_ref_k: reference temperature of `tau_ref_s`, K.
        sigma_ref_pa: reference stress of `tau_ref_s`, Pa.
        creep_activation_j_mol: Q of the Arrhenius creep rate, J/mol (≈ 37 kJ/mol for Li).
        stress_exponent: n of the power-law creep (1 = linear Maxwell).
        max_creep_m: the Li foil thickness, m: creep slows as (L/(L − c))³ and never reaches it.
        thickness_change_m: Δh, a number (m) or a callable returning it (read each sub-step).
        cell: an object whose `pressure_pa` is set to F / area after every advance.
        max_step_s: longest sub-step while nothing moves, s.
        motion_step_s: longest sub-step while the drive moves, s.
        t0: the model's initial time, s (on the time source of whoever advances it).
    """

    def __init__(
        self,
        *,
        stiffness_n_m: float = 5e6,
        spring_n_m: float | None = None,
        x_contact_m: float = 1e-3,
        area_m2: float = 0.785e-4,
        temperature_k: float = 298.15,
        tau_ref_s: float = 4 * 3600.0,
        t_ref_k: float = 298.15,
        sigma_ref_pa: float = 5e6,
        creep_activation_j_mol: float = 37e3,
        stress_exponent: float = 2.0,
        max_creep_m: float = 50e-6,
        thickness_change_m: float | Callable[[], float] = 0.0,
        cell: PressureTarget | None = None,
        max_step_s: float = 10.0,
        motion_step_s: float = 0.01,
        t0: float = 0.0,
    ) -> None:
        if stiffness_n_m <= 0 or (spring_n_m is not None and spring_n_m <= 0):
            raise ValueError("stiffnesses must be positive")
        if area_m2 <= 0 or tau_ref_s <= 0 or temperature_k <= 0 or max_step_s <= 0 or motion_step_s <= 0:
            raise ValueError("area, tau_ref_s, temperature and step sizes must be positive")
        self.stiffness_n_m = stiffness_n_m
        self.spring_n_m = spring_n_m
        self.x_contact_m = x_contact_m
        self.area_m2 = area_m2
        self.temperature_k = temperature_k
        self.tau_ref_s = tau_ref_s
        self.t_ref_k = t_ref_k
        self.sigma_ref_pa = sigma_ref_pa
        self.creep_activation_j_mol = creep_activation_j_mol
        self.stress_exponent = stress_exponent
        self.max_creep_m = max_creep_m
        self.thickness_change_m = thickness_change_m
        self.cell = cell
        self.max_step_s = max_step_s
        self.motion_step_s = motion_step_s
        self.t = t0
        """The model's time, s."""
        self.position_m = 0.0
        """Actuator position, m, closing positive (set it directly when no drive is attached)."""
        self.creep_m = 0.0
        """Creep displacement of the Li, m (≥ 0)."""
        self.drive: Drive | None = None
        """The actuator that moves the screw, if any."""

    @property
    def effective_stiffness_n_m(self) -> float:
        """Series stiffness of the stack and the spring, N/m."""
        if self.spring_n_m is None:
            return self.stiffness_n_m
        return 1.0 / (1.0 / self.stiffness_n_m + 1.0 / self.spring_n_m)

    def delta_h_m(self) -> float:
        """The cell's present thickness change Δh, m."""
        value = self.thickness_change_m
        return float(value() if callable(value) else value)

    def _offset_m(self) -> float:
        """Position where the force starts rising now, m."""
        return self.x_contact_m - self.delta_h_m() + self.creep_m

    def force_n(self) -> float:
        """Compressive force on the stack now, N (≥ 0)."""
        return self.effective_stiffness_n_m * max(0.0, self.position_m - self._offset_m())

    def pressure_pa(self) -> float:
        """Stack pressure now, Pa."""
        return self.force_n() / self.area_m2

    def position_for_force(self, force_n: float) -> float:
        """The actuator position (m) at which the stack force would be `force_n`, now."""
        return self._offset_m() + max(0.0, force_n) / self.effective_stiffness_n_m

    def relaxation_time_s(self, force_n: float | None = None) -> float:
        """Creep relaxation time τ at the present temperature and a force (default: now), s."""
        force = self.force_n() if force_n is None else force_n
        sigma = max(force / self.area_m2, 1.0)  # 1 Pa floor: τ is finite, the force is ~0 anyway
        arrhenius = math.exp(
            self.creep_activation_j_mol / GAS_CONSTANT * (1 / self.temperature_k - 1 / self.t_ref_k)
        )
        return self.tau_ref_s * arrhenius * (self.sigma_ref_pa / sigma) ** (self.stress_exponent - 1.0)

    def advance_to(self, t: float) -> None:
        """Integrate up to time `t` (s); a time in the past is ignored (the model never rewinds)."""
        if t > self.t:
            self.advance(t - self.t)

    def advance(self, dt: float) -> None:
        """Integrate `dt` seconds (≥ 0) in sub-steps: drive motion, then creep at the new position."""
        if dt < 0:
            raise ValueError(f"dt must be >= 0, got {dt!r}")
        end = self.t + dt
        # the stack sits on the cell's heater: creep follows the temperature the heater gives it
        self.temperature_k = getattr(self.cell, "temperature_k", self.temperature_k)
        while self.t < end:
            moving = self.drive is not None and self.drive.moving
            h = min(self.motion_step_s if moving else self.max_step_s, end - self.t)
            if end - (self.t + h) < 1e-12:
                h = end - self.t
            t_next = end if h == end - self.t else self.t + h
            if self.drive is not None:
                self.position_m = self.drive.step(t_next, self)
            self._creep(t_next - self.t)
            self.t = t_next
        self._couple()

    def _creep(self, h: float) -> None:
        force = self.force_n()
        if force <= 0.0 or h <= 0.0:
            return
        u = force / self.effective_stiffness_n_m  # elastic compression, m
        left = max(self.max_creep_m - self.creep_m, 1e-3 * self.max_creep_m)  # foil thickness left
        squeeze = (self.max_creep_m / left) ** 3  # thinner foil, slower sideways flow
        u_new = u * math.exp(-h / (self.relaxation_time_s(force) * squeeze))
        self.creep_m = min(self.max_creep_m - 1e-3 * self.max_creep_m, self.creep_m + (u - u_new))

    def _couple(self) -> None:
        if self.cell is not None:
            self.cell.pressure_pa = self.pressure_pa()
