"""Security (issue 7, item 6): secrets stay secret, the run directory is private.

An agent-run with an InfluxDB token (from the environment) forwarding to a server that refuses
connections — so errors get logged — leaves the token in no log line and no file of the run; the
run directory is 0700; a secret written into a bench file is refused.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import pytest

from labctl.agent import AgentConfig
from labctl.errors import ConfigError
from labctl.tui.connection import LocalConnection, new_command

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-3f9c1d2e-never-to-be-seen"
BENCH = """\
[agent]
lab = "sec"
runs_dir = "{runs}"

[influx]
url = "http://127.0.0.1:9"
org = "lab"
bucket = "runs"

[[station]]
name = "s1"
sim = true
allowed_users = ["*"]
"""


async def test_the_influx_token_is_never_logged_or_written_and_runs_are_private(
    tmp_path, caplog, chaos_figures
):
    caplog.set_level(logging.DEBUG)
    bench = tmp_path / "bench.toml"
    bench.write_text(BENCH.format(runs=tmp_path / "runs"))
    connection = LocalConnection(AgentConfig.load(bench), environ={"LABCTL_INFLUX_TOKEN": TOKEN})
    async with connection:
        text = (ROOT / "protocols" / "ccd.yaml").read_text(encoding="utf-8")
        reply = await connection.send("s1", new_command("start", protocol=text))
        assert reply.ok, reply.message
        for _ in range(600):
            if connection.model.stations["s1"].state in ("done", "alarm", "failed"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the forwarder meets the refused connection and logs it
    assert connection.model.stations["s1"].state == "done"
    assert any("127.0.0.1:9" in r.getMessage() for r in caplog.records), "the forwarder should have logged"
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert files and all(TOKEN.encode() not in p.read_bytes() for p in files)
    run_dirs = [p for p in (tmp_path / "runs" / "s1").iterdir() if p.is_dir()]
    assert run_dirs and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in run_dirs)
    chaos_figures(
        "security", files_checked=len(files), log_lines_checked=len(caplog.records), secrets_leaked=0
    )


def test_a_secret_in_a_bench_file_is_refused(tmp_path):
    bench = tmp_path / "bench.toml"
    bench.write_text(
        BENCH.format(runs=tmp_path / "runs").replace('bucket = "runs"', f'bucket = "runs"\ntoken = "{TOKEN}"')
    )
    with pytest.raises(ConfigError) as refused:
        AgentConfig.load(bench)
    assert "LABCTL_INFLUX_TOKEN" in str(refused.value) and TOKEN not in str(refused.value)
