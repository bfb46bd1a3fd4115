"""The TUI's connections, without a UI: a local agent in this process, and a whole lab over a real broker.

Local: a simulated station runs protocols/ccd.yaml in simulated time; the model sees it start, pause,
resume, fill its series, short and end, and its CCD equals the one labctl.analysis finds in the journal.

MQTT: an agent runs in this process on a real Mosquitto (users and an ACL, tests/servers.py); the
TUI's connection, logged in as an operator, sees statuses, telemetry and events, commands the station,
shows the broker going away and comes back when it is restarted. A `wait` step holds the run in a
known state while the broker is down (a state, not a moment).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labctl.agent import Agent, AgentConfig
from labctl.analysis import analyse_ccd
from labctl.data import Journal
from labctl.data.mqtt import MqttSettings
from labctl.tui import (
    LabModel,
    LocalConnection,
    MqttConnection,
    new_command,
    protocol_files,
    validate_protocol,
)
from tests.servers import LAB_ACL, LAB_USERS, Mosquitto

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
CCD = ROOT / "protocols" / "ccd.yaml"

USERS, ACL = LAB_USERS, LAB_ACL

WAIT_PROTOCOL = """\
labctl: 1
name: tui-wait
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
safety: {voltage: {min: -1 V, max: 1 V}, current: {max: 10 mA}}
record: {sample: 10 s, every: 60 s, poll: 5 min}
steps:
  - current: {density: 0.1 mA/cm^2, until: {time: 1 h}}
  - wait: {message: "the broker goes down now"}
  - current: {density: -0.1 mA/cm^2, until: {time: 1 h}}
"""


class RecordingModel(LabModel):
    """A model that also remembers every state each station passed through."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, list[str]] = {}

    def apply_status(self, station: str, status: Any) -> None:
        super().apply_status(station, status)
        seen = self.states.setdefault(station, [])
        state = self.stations[station].state
        if not seen or seen[-1] != state:
            seen.append(state)


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll the model (fed by other tasks) under a deadline."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 (the model is changed by other tasks)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


def bench(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "bench.toml"
    path.write_text(text, encoding="utf-8")
    return AgentConfig.load(path)


async def test_local_connection_runs_a_simulated_ccd_and_shows_the_short_and_the_ccd(tmp_path: Path) -> None:
    config = bench(tmp_path, '[agent]\nlab = "lab"\n\n[[station]]\nname = "sim-1"\nsim = true\nseed = 3\n')
    model = RecordingModel()
    async with LocalConnection(config, model=model) as connection:
        assert connection.description == "local agent bench.toml" and model.connected
        await until(lambda: model.stations.get("sim-1") is not None, "the station appears idle")
        assert model.stations["sim-1"].state == "idle"
        reply = await connection.send("sim-1", new_command("start", protocol=CCD.read_text(encoding="utf-8")))
        assert reply.ok, reply.message
        pause = await connection.send("sim-1", new_command("pause"))  # before the runner exists: queued
        assert pause.ok, pause.message
        view = model.stations["sim-1"]
        await until(lambda: view.state == "paused", "paused by the operator")
        assert (await connection.send("sim-1", new_command("mark", note="photo 1"))).ok
        assert (await connection.send("sim-1", new_command("resume"))).ok
        await until(lambda: view.state in ("done", "alarm", "failed", "aborted"), "the run ends", 120)
        busy_free = await connection.send("sim-1", new_command("abort"))
        assert not busy_free.ok and "nothing is running" in busy_free.message

    assert model.states["sim-1"][:4] == ["idle", "starting", "running", "paused"]
    assert model.states["sim-1"][-1] == "done" and "running" in model.states["sim-1"][4:]
    assert not model.connected and model.connection_message == "local agent stopped"
    assert len(view.steps) == view.status["steps_total"] == 121 and view.steps[0] == "rest"
    assert all(len(view.series[key]) > 100 for key in ("voltage_v", "current_a", "current_density_a_m2"))
    times, densities = view.window("current_density_a_m2", None)
    assert times == sorted(times) and max(densities) > 0 > min(densities)  # the staircase, both signs
    assert any(e["kind"] == "mark" and e["message"] == "mark: photo 1" for e in view.events)

    run_dir = config.agent.runs_dir / "sim-1" / view.status["run"]
    journal = Journal(run_dir / "journal.sqlite")
    try:
        expected = analyse_ccd(journal)
    finally:
        journal.close()
    assert expected.short_at_ma_cm2 is not None
    assert view.results["short_at_mA_cm2"] == pytest.approx(expected.short_at_ma_cm2)
    assert view.results["ccd_mA_cm2"] == pytest.approx(expected.ccd_ma_cm2)
    assert view.alarm is not None and view.alarm.startswith("short detected at ")
    assert view.needs_attention
    assert view.results["cycles"] and view.results["cycles"][0]["discharge_mah"] == pytest.approx(
        0.0785, rel=1e-3
    )


def test_the_protocol_library_is_listed_and_validated(tmp_path: Path) -> None:
    files = protocol_files(ROOT)
    assert CCD in files and files == sorted(files)
    assert validate_protocol(CCD) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("labctl: 1\nname: bad\nsteps:\n  - current: {density: 0.2 parsecs, until: {time: 1 h}}\n")
    message = validate_protocol(bad)
    assert message is not None and "bad.yaml:4" in message
    assert validate_protocol(tmp_path / "missing.yaml") is not None


@pytest.fixture
def secure_broker(tmp_path: Path):
    """A broker with users and the ACL above; no anonymous access."""
    broker = Mosquitto(tmp_path, users=USERS, acl=ACL)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_mqtt_connection_watches_commands_and_survives_the_broker_going_away(
    tmp_path: Path, secure_broker: Mosquitto
) -> None:
    config = bench(
        tmp_path,
        f'[agent]\nlab = "lab"\nname = "bench1"\n\n[mqtt]\nport = {secure_broker.port}\nusername = "bench1"\n'
        'reconnect_initial_s = 0.1\nreconnect_max_s = 0.5\n\n[[station]]\nname = "s1"\nsim = true\n'
        'allowed_users = ["alice"]\n',
    )
    agent = Agent(config, environ={"LABCTL_MQTT_PASSWORD": USERS["bench1"]})
    stop = asyncio.Event()
    agent_task = asyncio.create_task(agent.serve(stop))
    settings = MqttSettings(
        port=secure_broker.port,
        username="alice",
        password=USERS["alice"],
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
    )
    model = RecordingModel()
    try:
        async with MqttConnection(settings, model=model, command_timeout_s=5) as connection:
            assert connection.description == f"lab 'lab' via mqtt://alice@127.0.0.1:{secure_broker.port}"
            await connection.wait_connected()
            assert model.connected and model.connection_message.startswith("connected to mqtt://alice@")
            await until(lambda: "s1" in model.stations and model.stations["s1"].state == "idle", "s1 idle")
            view = model.stations["s1"]
            assert view.status["agent"] == "bench1"

            reply = await connection.send("s1", new_command("start", protocol=WAIT_PROTOCOL))
            assert reply.ok, reply.message
            await until(lambda: view.state == "paused", "the run waits at its wait step")
            assert view.steps == [
                "current +0.1 mA/cm²",
                "wait: the broker goes down now",
                "current -0.1 mA/cm²",
            ]
            assert view.series["voltage_v"] and view.series["current_density_a_m2"]
            assert [e["kind"] for e in view.events][:3] == ["run_started", "step_started", "step_ended"]
            marked = await connection.send("s1", new_command("mark", note="before the outage"))
            assert marked.ok, marked.message
            await until(lambda: any(e["kind"] == "mark" for e in view.events), "the mark event")

            await asyncio.to_thread(secure_broker.stop)
            await until(lambda: not model.connected, "the model shows the broker gone", 10)
            assert "reconnecting" in model.connection_message
            refused = await connection.send("s1", new_command("resume"))
            assert not refused.ok and refused.message.startswith("not sent:")

            await asyncio.to_thread(secure_broker.start)
            await connection.wait_connected(timeout_s=15)
            assert model.connected
            await until(lambda: view.state == "paused", "the status republished after the restart")
            # the broker fired the agent's will as it shut down: no alarm, since we went down with it
            assert view.alarm is None and model.alarms == []
            resumed = await connection.send("s1", new_command("resume"))
            assert resumed.ok, resumed.message
            await until(lambda: view.state == "done", "the run ends after the outage")
            assert any(e["kind"] == "run_ended" for e in view.events)
    finally:
        stop.set()
        await asyncio.wait_for(agent_task, 30)
    assert model.states["s1"][:2] == ["idle", "starting"] and "running" in model.states["s1"]
