"""The real terminal UI in a real terminal: tmux types the keys and reads the screen.

A new user's path through `labctl tui --config bench.toml` with one simulated station (paced
simulated time, so there is time to pause): start a CCD from the picker, watch it run, pause and
resume it, see the short's alarm, acknowledge it, and read the CCD in the station view.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABCTL = Path(sys.executable).with_name("labctl")

BENCH = """\
[agent]
lab = "tmux"
runs_dir = "runs"

[[station]]
name = "sim-1"
sim = true
seed = 1
speed = 1500
allowed_users = ["*"]
"""


def _tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        message = "tmux is not installed; run scripts/install-test-servers (apt-get install -y tmux)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Terminal:
    """One tmux session running a command in a 100×30 terminal."""

    def __init__(self, tmux: str, socket: Path, command: str) -> None:
        self.base = [tmux, "-S", str(socket)]
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command], check=True
        )

    def screen(self) -> str:
        return subprocess.run(
            [*self.base, "capture-pane", "-t", "t", "-p"], capture_output=True, text=True, check=False
        ).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "t", *keys], check=True)

    def wait_for(self, text: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on the screen within {timeout_s} s:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], check=False, capture_output=True)


@pytest.fixture
def terminal(tmp_path):
    tmux = _tmux()
    (tmp_path / "bench.toml").write_text(BENCH)
    command = f"cd {tmp_path} && {LABCTL} tui --config bench.toml --protocols {ROOT / 'protocols'}; sleep 30"
    term = Terminal(tmux, tmp_path / "tmux.sock", command)
    yield term
    term.close()


def test_a_new_user_starts_watches_pauses_resumes_a_simulated_ccd_and_sees_the_short(terminal, tmp_path):
    terminal.wait_for("sim-1")
    terminal.wait_for("idle")
    terminal.keys("s")  # start: the picker over protocols/, ccd.yaml first and validated
    terminal.wait_for("ccd.yaml is valid")
    terminal.keys("Enter")
    terminal.wait_for("running")
    terminal.keys("p")
    screen = terminal.wait_for("paused")
    time.sleep(1.5)
    assert "paused" in terminal.screen()  # stays paused: nothing runs on by itself
    terminal.keys("r")
    terminal.wait_for("running")
    screen = terminal.wait_for("ALARM", timeout_s=90)  # the short, impossible to miss
    assert "short" in screen
    terminal.keys("k")  # acknowledge
    screen = terminal.wait_for("done", timeout_s=30)
    deadline = time.monotonic() + 10
    while "ALARM" in terminal.screen() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "ALARM" not in terminal.screen()
    terminal.keys("Enter")  # the station view: results so far
    screen = terminal.wait_for("CCD")
    assert "CCD 0.15 mA/cm²" in screen  # seed 1: as `labctl run protocols/ccd.yaml --sim` finds
    journal = next((tmp_path / "runs" / "sim-1").glob("*/journal.sqlite"))
    assert journal.is_file()
