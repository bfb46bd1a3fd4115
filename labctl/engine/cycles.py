"""Cycle bookkeeping: charge and discharge capacity per cycle, Coulombic efficiency, retention.

A cycle is one iteration of the innermost `repeat` (the plan's `context["cycle"]`); cycles are
numbered 1, 2, 3 … through the whole run, so a cycle counter that restarts in a nested loop (a rate
test's repeat inside a sweep) still gives each iteration its own number. Positive charge = charge
(for a symmetric cell: stripping the working electrode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Cycle:
    """One finished cycle; capacities in coulombs (positive)."""

    number: int
    charge_c: float
    discharge_c: float
    reference_discharge_c: float | None

    @property
    def efficiency(self) -> float | None:
        """Coulombic efficiency: discharge / charge (None before anything was charged)."""
        return self.discharge_c / self.charge_c if self.charge_c > 0 else None

    @property
    def retention(self) -> float | None:
        """Discharge capacity relative to the reference cycle's."""
        if not self.reference_discharge_c:
            return None
        return self.discharge_c / self.reference_discharge_c

    def as_data(self) -> dict[str, Any]:
        """Event payload."""
        return {
            "cycle": self.number,
            "charge_c": self.charge_c,
            "discharge_c": self.discharge_c,
            "efficiency": self.efficiency,
            "retention": self.retention,
        }


class CycleTracker:
    """Adds up each step's charge into the cycle it belongs to and closes cycles as they end.

    Args:
        reference_cycle: the cycle retention refers to (1 = the first).
    """

    def __init__(self, reference_cycle: int = 1) -> None:
        self.reference_cycle = reference_cycle
        self.finished: list[Cycle] = []
        self._key: Any = None
        self._number = 0
        self._charge = 0.0
        self._discharge = 0.0
        self._reference: float | None = None

    def step_started(self, context: dict[str, Any]) -> Cycle | None:
        """A step begins; returns the cycle it closes, if its loop iteration differs."""
        key = _iteration_key(context)
        if key is None or key == self._key:
            return None
        closed = self.close()
        self._key = key
        self._number += 1
        return closed

    def add(self, charge_c: float) -> None:
        """Charge passed by the step that just ended (signed)."""
        if self._key is None:
            return
        if charge_c > 0:
            self._charge += charge_c
        else:
            self._discharge -= charge_c

    def close(self) -> Cycle | None:
        """Close the open cycle (a loop check, the end of the run); None if nothing is open."""
        if self._key is None or (self._charge == 0 and self._discharge == 0):
            return None
        if self._number == self.reference_cycle:
            self._reference = self._discharge
        cycle = Cycle(self._number, self._charge, self._discharge, self._reference)
        self.finished.append(cycle)
        self._charge = self._discharge = 0.0
        self._key = ("closed", self._key)
        return cycle


def _iteration_key(context: dict[str, Any]) -> Any:
    """What identifies one loop iteration: the cycle counter and every enclosing sweep value."""
    if "cycle" not in context:
        return None
    return tuple(sorted((k, v) for k, v in context.items()))
