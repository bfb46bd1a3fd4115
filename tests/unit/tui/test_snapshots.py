"""Screenshots of the TUI's main views with deterministic fake data (pytest-textual-snapshot).

Update after an intended change with `pytest tests/unit/tui/test_snapshots.py --snapshot-update` and
look at the SVGs under __snapshots__/ before committing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from labctl.tui.app import LabApp
from tests.unit.tui.fakes import FakeConnection, lab, protocols

SIZES = [(80, 24), (120, 40)]


def make_app(tmp_path: Path, stations: int = 4) -> LabApp:
    return LabApp(FakeConnection(lab(stations)), protocols=protocols(tmp_path))


async def settle(pilot: Pilot) -> None:
    await pilot.pause(0.2)  # a redraw tick, and the station view's plots (drawn at most twice a second)
    pilot.app.redraw()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_lab_view(snap_compare, tmp_path, size):
    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_station_view(snap_compare, tmp_path, size):
    async def open_station(pilot: Pilot) -> None:
        await pilot.press("enter")
        await pilot.press("w")  # 1 h window: the CCD staircase
        await settle(pilot)

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=open_station)


def test_lab_view_with_16_stations_acknowledged(snap_compare, tmp_path):
    async def acknowledge(pilot: Pilot) -> None:
        await pilot.press("k")
        await settle(pilot)

    assert snap_compare(make_app(tmp_path, 16), terminal_size=(80, 24), run_before=acknowledge)
