"""The chaos suite's figures: each test adds what it injected and survived; they print at the end.

Why a registry and not prints: pytest hides a passing test's output, and the issue asks for the
figures (faults injected/survived, kills/resumes, samples lost) at the end of every CI run.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

FIGURES: dict[str, dict[str, float]] = defaultdict(dict)
"""Area (e.g. "sinks down") → figure name → value, filled by the tests of this run."""


@pytest.fixture
def chaos_figures():
    """Record figures: `chaos_figures("sinks down", samples_lost=0, journaled=1234)`."""

    def record(area: str, **figures: float) -> None:
        for name, value in figures.items():
            previous = FIGURES[area].get(name, 0)
            FIGURES[area][name] = previous + value

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    terminalreporter.section("chaos figures (docs/reliability.md)")
    for area, figures in sorted(FIGURES.items()):
        line = ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in figures.items())
        terminalreporter.write_line(f"{area}: {line}")
