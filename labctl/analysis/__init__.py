"""Analysis of journaled runs: CCD, impedance fits, cycling metrics, figures and the run report.

The names below load their module on first use (PEP 562): the EIS fit needs scipy and the figures
matplotlib, and `labctl run` (which imports the CCD analysis) should not pay for either at start-up.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labctl.analysis.ccd import CcdResult, analyse_ccd
    from labctl.analysis.cycling import (
        CycleMetrics,
        HalfCyclePolarization,
        ImpedancePoint,
        ImpedanceSeries,
        PolarizationTrend,
        SymmetricCycling,
        full_cell_cycles,
        impedance_series,
        symmetric_cycling,
    )
    from labctl.analysis.eis import (
        EisFit,
        EisFitError,
        EisSignError,
        Parameter,
        Spectrum,
        circuit_impedance,
        fit_spectrum,
        spectra_from_journal,
    )
    from labctl.analysis.report import write_report

_HOMES = {
    "CcdResult": "ccd",
    "CycleMetrics": "cycling",
    "EisFit": "eis",
    "EisFitError": "eis",
    "EisSignError": "eis",
    "HalfCyclePolarization": "cycling",
    "ImpedancePoint": "cycling",
    "ImpedanceSeries": "cycling",
    "Parameter": "eis",
    "PolarizationTrend": "cycling",
    "Spectrum": "eis",
    "SymmetricCycling": "cycling",
    "analyse_ccd": "ccd",
    "circuit_impedance": "eis",
    "fit_spectrum": "eis",
    "full_cell_cycles": "cycling",
    "impedance_series": "cycling",
    "spectra_from_journal": "eis",
    "symmetric_cycling": "cycling",
    "write_report": "report",
}

__all__ = [
    "CcdResult",
    "CycleMetrics",
    "EisFit",
    "EisFitError",
    "EisSignError",
    "HalfCyclePolarization",
    "ImpedancePoint",
    "ImpedanceSeries",
    "Parameter",
    "PolarizationTrend",
    "Spectrum",
    "SymmetricCycling",
    "analyse_ccd",
    "circuit_impedance",
    "fit_spectrum",
    "full_cell_cycles",
    "impedance_series",
    "spectra_from_journal",
    "symmetric_cycling",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
