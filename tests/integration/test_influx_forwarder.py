"""Store-and-forward to a real InfluxDB-v2-write server (VictoriaMetrics) and to a scripted HTTP server.

Counts are checked per series in the server against the journal: every record once, no duplicates,
also when the server is stopped and restarted in the middle and the journal keeps growing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from labctl.clock import SimulatedClock
from labctl.data import Bus, Event, EventKind, Journal, Sample
from labctl.data.influx import CURSOR_FILE, InfluxForwarder, InfluxSettings
from labctl.protocol import compile_file
from labctl.session import run_protocol
from tests.servers import VictoriaMetrics

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-that-must-not-leak"
START_NS = time.time_ns() - 3 * 86_400 * 10**9  # recent past: inside any retention, never "future"
PERIOD_NS = 10_000_000  # 10 ms: VictoriaMetrics keeps Influx timestamps to the millisecond


def _settings(url: str, **changes: object) -> InfluxSettings:
    values = dict(
        url=url, org="lab-org", bucket="runs", token=TOKEN, lab="test lab",
        backoff_initial_s=0.02, backoff_max_s=0.2, poll_interval_s=0.02, timeout_s=2.0,
    )
    values.update(changes)
    return InfluxSettings(**values)


def _journal(tmp_path: Path, name: str = "run-1") -> Journal:
    run_dir = tmp_path / name
    run_dir.mkdir()
    journal = Journal(run_dir / "journal.sqlite")
    journal.set_meta("protocol", "ccd")
    journal.set_meta("station", {"name": "bench 1"})
    journal.set_meta("cell", {"kind": "symmetric", "material": "Li6PS5Cl"})
    return journal


async def _append(journal: Journal, first: int, count: int) -> None:
    """`count` records from index `first`: dc samples, every 25th an EIS point, every 100th an event."""
    samples, events = [], []
    for i in range(first, first + count):
        t_ns, step = START_NS + i * PERIOD_NS, i // 1000
        if i % 25 == 0:
            values = {"frequency_hz": 1e6 / (1 + i), "z_real_ohm": 50.0 + i, "z_imag_ohm": -3.0}
            values["spectrum"] = 1
            samples.append(Sample(t_ns, step, values, kind="eis"))
        else:
            values = {"voltage_v": 0.01 + i * 1e-7, "current_a": 1e-4, "pressure_pa": 5e6}
            values["temperature_k"] = 298.15
            samples.append(Sample(t_ns, step, values))
        if i % 100 == 0:
            events.append(Event(t_ns, step, EventKind.NOTE, {"text": f'note "{i}", ok', "index": i}))
    await journal.append(samples, events)


def _journal_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        dc = db.execute("SELECT COUNT(*) FROM samples WHERE kind = 'dc'").fetchone()[0]
        eis = db.execute("SELECT COUNT(*) FROM samples WHERE kind = 'eis'").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        last = (db.execute("SELECT MAX(seq) FROM samples").fetchone()[0] or 0,
                db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0)
    finally:
        db.close()
    return {"dc": dc, "eis": eis, "event": events, "last": last}


def _assert_all_once(server: VictoriaMetrics, journal_path: Path) -> dict[str, int]:
    """Every journaled record is in the server exactly once (per series: no repeated timestamps)."""
    expected = _journal_counts(journal_path)
    series = server.export()
    for one in series:
        stamps = one["timestamps"]
        assert len(stamps) == len(set(stamps)), f"duplicates in {one['metric']}"
    counts = server.counts()
    assert counts["dc_voltage_v"] == counts["dc_current_a"] == expected["dc"]
    assert counts["eis_z_real_ohm"] == expected["eis"]
    assert counts["event_seq"] == counts["event_index"] == expected["event"]
    return expected


async def _until(condition: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    """Poll a condition (readiness, not a fixed wait) under a deadline."""
    try:
        async with asyncio.timeout(deadline_s):
            while not condition():  # noqa: ASYNC110 (state of another task; no event to await)
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


async def test_every_journaled_record_arrives_once_with_its_tags(victoria_metrics, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    journal = _journal(tmp_path)
    await _append(journal, 0, 12_345)
    async with InfluxForwarder(journal.path, _settings(victoria_metrics.url, batch_lines=1000)) as forwarder:
        lines = await forwarder.forward_until_caught_up()
    expected = _assert_all_once(victoria_metrics, journal.path)
    assert lines == expected["dc"] + expected["eis"] + expected["event"]
    labels = next(s["metric"] for s in victoria_metrics.export('{__name__="dc_voltage_v"}'))
    assert labels | {"step": "0"} == {
        "__name__": "dc_voltage_v", "lab": "test lab", "station": "bench 1", "run": "run-1",
        "cell": "symmetric Li6PS5Cl", "protocol": "ccd", "step": "0",
    }
    first = victoria_metrics.export('{__name__="dc_voltage_v", step="0"}')[0]
    assert first["timestamps"][0] == (START_NS + PERIOD_NS) // 10**6  # ns sent, ms kept by the server
    assert TOKEN not in caplog.text
    journal.close()


async def test_server_stopped_mid_forwarding_while_the_journal_grows_loses_and_repeats_nothing(
    victoria_metrics, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    journal = _journal(tmp_path)
    await _append(journal, 0, 20_000)
    stop = asyncio.Event()
    async with InfluxForwarder(journal.path, _settings(victoria_metrics.url, batch_lines=300)) as forwarder:
        task = asyncio.create_task(forwarder.run(stop))
        try:
            await _until(lambda: forwarder.forwarded_lines >= 3000, "some batches were acknowledged")
            await asyncio.to_thread(victoria_metrics.stop)
            await _append(journal, 20_000, 5_000)  # the run goes on while the server is away
            await _until(lambda: forwarder.failed_attempts >= 3, "the forwarder retried a few times")
            assert forwarder.last_error and TOKEN not in forwarder.last_error
            await _append(journal, 25_000, 5_000)
            await asyncio.to_thread(victoria_metrics.start)
            await _append(journal, 30_000, 2_000)
            last = _journal_counts(journal.path)["last"]
            await _until(
                lambda: (forwarder.cursor.samples_seq, forwarder.cursor.events_seq) == last, "caught up"
            )
        finally:
            stop.set()
            await task
    _assert_all_once(victoria_metrics, journal.path)
    assert "failed, attempt 1" in caplog.text and "succeeded after" in caplog.text
    assert TOKEN not in caplog.text
    journal.close()


async def test_cursor_survives_a_new_forwarder_and_a_killed_one(victoria_metrics, tmp_path):
    journal = _journal(tmp_path)
    await _append(journal, 0, 5_000)
    settings = _settings(victoria_metrics.url, batch_lines=500)
    async with InfluxForwarder(journal.path, settings) as forwarder:
        first = await forwarder.forward_until_caught_up()
    await _append(journal, 5_000, 3_000)
    # labctl restarted: a new forwarder starts where the last acknowledged batch ended ...
    async with InfluxForwarder(journal.path, settings) as forwarder:
        assert forwarder.cursor.samples_seq == 5_000 and forwarder.forwarded_lines == first
        stop = asyncio.Event()
        task = asyncio.create_task(forwarder.run(stop))
        await _until(lambda: forwarder.forwarded_lines > first, "the new forwarder sent a batch")
        task.cancel()  # ... and this one is killed mid-way (cancelled between batches or in a write)
        with pytest.raises(asyncio.CancelledError):
            await task
    async with InfluxForwarder(journal.path, settings) as forwarder:
        await forwarder.forward_until_caught_up()
        assert await forwarder.forward_until_caught_up() == 0
    # The cursor lives beside the journal, keyed by the destination; the journal is not written.
    assert (journal.path.parent / CURSOR_FILE).is_file()
    _assert_all_once(victoria_metrics, journal.path)
    journal.close()


async def test_a_simulated_run_is_forwarded_live_across_a_server_restart(victoria_metrics, tmp_path):
    plan, text = compile_file(ROOT / "protocols" / "ccd.yaml")
    started: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
    run = asyncio.create_task(
        run_protocol(
            plan, text, simulate=True, station_config=None, seed=1, out=tmp_path / "ccd-run", bus=Bus(),
            clock=SimulatedClock(start_ns=START_NS), on_start=started.set_result,
        )
    )
    run_dir = await started
    stop = asyncio.Event()
    settings = _settings(victoria_metrics.url, batch_lines=200)
    async with InfluxForwarder(run_dir / "journal.sqlite", settings) as forwarder:
        follower = asyncio.create_task(forwarder.run(stop))
        try:
            await _until(lambda: forwarder.forwarded_lines > 0, "the first batch arrived")
            assert not run.done(), "the run should still be going when the server stops"
            await asyncio.to_thread(victoria_metrics.stop)
            await _until(lambda: forwarder.failed_attempts >= 2, "a failed write")
            await asyncio.to_thread(victoria_metrics.start)
            report = await run
        finally:
            stop.set()
            await follower
        await forwarder.forward_until_caught_up()  # the final drain a session does after the run
    expected = _journal_counts(run_dir / "journal.sqlite")
    assert report.samples == expected["dc"] > 100
    counts = victoria_metrics.counts()
    assert counts["dc_voltage_v"] == expected["dc"]
    assert counts["event_seq"] == expected["event"]
    assert sum(counts[name] for name in counts if name.startswith("eis_frequency_hz")) == expected["eis"]


class ScriptedInflux:
    """An HTTP server speaking /api/v2/write that answers from a script, then 204; it records requests."""

    def __init__(self, answers: list[tuple[int, str] | None]) -> None:
        self.answers = answers
        """(status, body) per request; None: never answer (a hung server)."""
        self.requests: list[dict[str, object]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._hang = asyncio.Event()

    async def __aenter__(self) -> ScriptedInflux:
        app = web.Application()
        app.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._hang.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _write(self, request: web.Request) -> web.Response:
        body = await request.read()
        auth = request.headers.get("Authorization")
        self.requests.append({"query": dict(request.query), "auth": auth, "body": body})
        answer = self.answers.pop(0) if self.answers else (204, "")
        if answer is None:
            await self._hang.wait()
            return web.Response(status=204)
        status, text = answer
        # A careless server that echoes the credentials in its error message.
        text = text.replace("{auth}", request.headers.get("Authorization", ""))
        return web.Response(status=status, text=text)


def _seqs(body: bytes) -> list[int]:
    return [int(m) for line in body.decode().splitlines() for m in re.findall(r"[ ,]seq=(\d+)i", line)]


async def test_http_errors_are_retried_logged_and_the_token_is_scrubbed(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    journal = _journal(tmp_path)
    await _append(journal, 0, 2_000)
    script = [(500, "internal error; you sent {auth}"), (503, "overloaded"), (401, "unauthorized")]
    async with ScriptedInflux(script) as server:
        async with InfluxForwarder(journal.path, _settings(server.url, batch_lines=700)) as forwarder:
            lines = await forwarder.forward_until_caught_up()
    assert lines == 2_000 + 20
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 3 + 3  # three failures of the first batch, then three batches
    assert bodies[0] == bodies[1] == bodies[2] == bodies[3]  # the same batch again, not a later one
    assert server.requests[0]["query"] == {"org": "lab-org", "bucket": "runs", "precision": "ns"}
    assert server.requests[0]["auth"] == f"Token {TOKEN}"
    seqs = [seq for body in bodies[3:] for seq in _seqs(body)]
    assert seqs == list(range(1, 21))  # events in journal order, each once
    for status in ("HTTP 500", "HTTP 503", "HTTP 401"):
        assert status in caplog.text
    assert "internal error; you sent Token ***" in caplog.text
    assert "succeeded after 3 failed attempts" in caplog.text
    # Only influxdb-client's own DEBUG line repeats what this (careless) server sent back.
    leaks = [r for r in caplog.records if TOKEN in r.getMessage()]
    assert [(r.name, r.levelno) for r in leaks] == [("root", logging.DEBUG)]
    journal.close()


async def test_a_server_that_does_not_answer_is_timed_out_and_retried(tmp_path, caplog):
    journal = _journal(tmp_path)
    await _append(journal, 0, 100)
    async with ScriptedInflux([None]) as server:
        async with InfluxForwarder(journal.path, _settings(server.url, timeout_s=0.2)) as forwarder:
            assert await forwarder.forward_until_caught_up() == 101
    assert len(server.requests) == 2 and server.requests[0]["body"] == server.requests[1]["body"]
    assert "InfluxDB write to" in caplog.text
    journal.close()


async def test_stop_while_the_server_is_down_keeps_the_cursor(tmp_path, caplog):
    journal = _journal(tmp_path)
    await _append(journal, 0, 100)
    async with ScriptedInflux([(500, "down")] * 1000) as server:
        async with InfluxForwarder(journal.path, _settings(server.url)) as forwarder:
            stop = asyncio.Event()
            task = asyncio.create_task(forwarder.run(stop))
            await _until(lambda: forwarder.failed_attempts >= 2, "two failures")
            stop.set()
            await task
            assert forwarder.cursor.samples_seq == 0 and forwarder.forwarded_lines == 0
    journal.close()


async def test_a_missing_journal_is_one_clear_error(tmp_path):
    from labctl.errors import RunDirError

    with pytest.raises(RunDirError, match="no journal here"):
        async with InfluxForwarder(tmp_path / "nope" / "journal.sqlite", _settings("http://127.0.0.1:1")):
            pass
    assert not (tmp_path / "nope").exists()


def test_cli_forward_sends_a_finished_run(victoria_metrics, tmp_path, monkeypatch, capsys):
    from labctl.cli import main

    journal = _journal(tmp_path)
    asyncio.run(_append(journal, 0, 1_000))
    journal.close()
    for key, value in {"URL": victoria_metrics.url, "ORG": "o", "BUCKET": "b", "TOKEN": TOKEN}.items():
        monkeypatch.setenv(f"LABCTL_INFLUX_{key}", value)
    assert main(["forward", str(tmp_path / "run-1")]) == 0
    assert "1010 lines" in capsys.readouterr().out
    assert main(["forward", str(tmp_path / "run-1")]) == 0
    assert "0 lines" in capsys.readouterr().out
    _assert_all_once(victoria_metrics, tmp_path / "run-1" / "journal.sqlite")
    monkeypatch.delenv("LABCTL_INFLUX_URL")
    assert main(["forward", str(tmp_path / "run-1")]) == 1
    assert "LABCTL_INFLUX_URL" in capsys.readouterr().err
