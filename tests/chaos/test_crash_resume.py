"""Crash and resume: `kill -9` a simulated run at seeded random points, `labctl resume` it, same result.

Each chain starts `labctl run … --sim --seed 1` as a subprocess, watches its journal read-only and
SIGKILLs it when the journal holds a (seeded, random) number of samples; then `labctl resume RUN_DIR
--sim`, killed again at the next point, and so on, until a resume runs to the end. The result must
equal an uninterrupted run's with the same seed: the headline figures (CCD, short density, cycling
failure) exactly, and no sample twice (no two samples with the same time) — a kill lands between
journal batches, and the checkpoint in the last committed batch is where the run goes on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABCTL = [sys.executable, "-m", "labctl"]
HEADLINE = {
    "ccd-constant-capacity": ("ccd_mA_cm2", "short_at_mA_cm2", "critical_stripping_current_mA_cm2", "state"),
    "symmetric-cycling": ("hours_to_failure", "failure", "half_cycles", "state"),
}


def _count_samples(journal: Path) -> int:
    """Samples committed so far (read-only: the writer is never disturbed)."""
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=0.2) as db:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.Error:
        return 0


def _run_until(command: list[str], journal: Path, kill_at: int | None, deadline_s: float = 60.0) -> bool:
    """Run `command`; SIGKILL it once the journal holds `kill_at` samples. True if it was killed."""
    log = journal.parent.with_suffix(".log")
    with log.open("ab") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    start = time.monotonic()
    try:
        while proc.poll() is None:
            if kill_at is not None and _count_samples(journal) >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() - start > deadline_s:
                raise AssertionError(f"{command} did not finish in {deadline_s} s")
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    return False


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _sample_times(run_dir: Path) -> list[int]:
    with sqlite3.connect(f"file:{run_dir / 'journal.sqlite'}?mode=ro", uri=True) as db:
        return [t for (t,) in db.execute("SELECT t_ns FROM samples WHERE kind = 'dc' ORDER BY seq")]


def _short_cycling(tmp_path: Path) -> Path:
    """protocols/symmetric_cycling.yaml with 6 cycles instead of 100 (the same steps, CI-sized)."""
    text = (ROOT / "protocols" / "symmetric_cycling.yaml").read_text()
    assert "times: 100" in text
    path = tmp_path / "cycling.yaml"
    path.write_text(text.replace("times: 100", "times: 6"))
    return path


@pytest.mark.timeout(240)
def test_kill_9_and_resume_gives_the_uninterrupted_result(tmp_path: Path, chaos_figures) -> None:
    rng = random.Random(20261121)
    protocols = [(ROOT / "protocols" / "ccd.yaml", 4), (_short_cycling(tmp_path), 3)]
    kills = resumed = same = chains = 0
    for number, (protocol, kills_in_chain) in enumerate(protocols):
        reference = tmp_path / f"reference-{number}"
        _run_until(
            [*LABCTL, "run", str(protocol), "--sim", "--seed", "1", "--out", str(reference), "--quiet"],
            reference / "journal.sqlite",
            None,
        )
        expected = _result(reference)
        total = len(_sample_times(reference))
        points = sorted(rng.sample(range(20, total - 20), kills_in_chain))
        run_dir = tmp_path / f"crashed-{number}"
        journal = run_dir / "journal.sqlite"
        command = [*LABCTL, "run", str(protocol), "--sim", "--seed", "1", "--out", str(run_dir), "--quiet"]
        for point in [*points, None]:
            killed = _run_until(command, journal, point)
            kills += killed
            assert killed or point is None, f"the run ended before {point} samples"
            command = [*LABCTL, "resume", str(run_dir), "--sim", "--quiet"]
            resumed += killed
        chains += 1
        got = _result(run_dir)
        times = _sample_times(run_dir)
        assert len(times) == len(set(times)), "a sample was journaled twice across a kill"
        assert times == sorted(times), "samples out of time order after a resume"
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            events = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind = 'resumed'")]
        assert sum("checkpoint" in e for e in events) == kills_in_chain  # each resume says from where
        keys = HEADLINE[expected["protocol"]]
        assert {k: got.get(k) for k in keys} == {k: expected.get(k) for k in keys}
        same += got == expected  # the whole result.json, polarizations included
    print(
        f"\ncrash and resume: kills {kills}, resumed {resumed}, same result {chains} of {chains} runs "
        f"({same} with an identical result.json)"
    )
    chaos_figures("crash and resume", kills=kills, resumed=resumed, same_result=chains, identical_result=same)
