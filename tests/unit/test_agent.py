"""The agent's core against a fake link: bench files, command handling, one run per station, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from labctl.agent import Agent, AgentConfig, apply_safety, parse_safety
from labctl.data.mqtt import Command
from labctl.errors import ConfigError, UnitError
from labctl.protocol import compile_text

WAIT_PROTOCOL = """\
labctl: 1
name: unit-wait
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
safety: {voltage: {min: -1 V, max: 1 V}, current: {max: 10 mA}}
record: {sample: 10 s, every: 60 s, poll: 5 min}
steps:
  - current: {density: 0.1 mA/cm^2, until: {time: 1 h}}
  - wait: {message: "check the cell"}
  - current: {density: -0.1 mA/cm^2, until: {time: 1 h}}
"""


class FakeLink:
    """What MqttLink gives the agent: a publisher per station and a merged status."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        self.records: list[tuple[str, object]] = []

    def publisher(self, station: str) -> Callable[[object], None]:
        return lambda record: self.records.append((station, record))

    def set_status(self, station: str, status: Mapping[str, Any]) -> None:
        self.status.setdefault(station, {}).update(status)


def bench(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(text, encoding="utf-8")
    return path


SIM_BENCH = '[agent]\nlab = "unit"\n\n[[station]]\nname = "s1"\nsim = true\nallowed_users = ["alice"]\n'


def command(action: str, n: list[int] = [0], **fields: Any) -> Command:  # noqa: B006 (a counter)
    n[0] += 1
    return Command(id=f"c{n[0]}", action=action, **fields)


async def until_state(link: FakeLink, station: str, *states: str) -> None:
    async with asyncio.timeout(30):
        while link.status.get(station, {}).get("state") not in states:  # noqa: ASYNC110 (another task's state)
            await asyncio.sleep(0.01)


def test_bench_file_resolves_paths_against_its_folder(tmp_path):
    config = AgentConfig.load(bench(tmp_path, SIM_BENCH))
    assert config.agent.runs_dir == tmp_path / "runs"
    assert config.station[0].sim and config.allowed_users() == {"s1": ["alice"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[station]]\nname = "s1"\n', 'station[0]: give either sim = true or station = "bench.toml"'),
        ('[[station]]\nname = "a/b"\nsim = true\n', "station[0].name: String should match pattern"),
        ('[mqtt]\npassword = "x"\n[[station]]\nname = "s"\nsim = true\n', "mqtt.password: secrets do not go"),
        ('[influx]\ntoken = "x"\n[[station]]\nname = "s"\nsim = true\n', "LABCTL_INFLUX_TOKEN"),
        ('[[station]]\nname = "s"\nsim = true\n[[station]]\nname = "s"\nsim = true\n', "repeated: s"),
        ('[[station]]\nname = "s"\nsim = true\nsafety = {current_max = "5 V"}\n', "current_max: '5 V'"),
        ('[[station]]\nname = "s"\nsim = true\nallowed_users = ["*"]\n[[station]]\nname = "t"\nsim = true\n',
         "every station or none"),
        ("[agent]\nlab = 1\n", "agent.lab"),
    ],
)
def test_a_bad_bench_file_is_one_clear_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=None) as caught:
        AgentConfig.load(bench(tmp_path, text))
    assert message in str(caught.value) and str(tmp_path) in str(caught.value)


def test_station_limits_narrow_the_plan_and_refuse_what_exceeds_them():
    plan = compile_text(WAIT_PROTOCOL, "w.yaml")
    narrowed = apply_safety(plan, parse_safety({"voltage_max": "0.5 V", "current_max": "5 mA"}))
    assert (narrowed.voltage_min_v, narrowed.voltage_max_v, narrowed.current_max_a) == (-1.0, 0.5, 0.005)
    with pytest.raises(ConfigError, match=r"w.yaml:7: sources .* above this station's current limit"):
        apply_safety(plan, parse_safety({"current_max": "10 uA"}))
    with pytest.raises(UnitError, match="not a safety limit"):
        parse_safety({"power_max": "1 W"})


async def test_start_pause_resume_mark_and_a_second_start_refused_while_busy(tmp_path):
    agent = Agent(AgentConfig.load(bench(tmp_path, SIM_BENCH)), environ={})
    link, stop = FakeLink(), asyncio.Event()
    serving = asyncio.create_task(agent.run(link, stop))
    try:
        await until_state(link, "s1", "idle")
        started = await agent.handle("s1", command("start", protocol=WAIT_PROTOCOL, seed=3))
        assert started.ok and started.data["seed"] == 3, started.message
        busy = await agent.handle("s1", command("start", protocol=WAIT_PROTOCOL))
        assert not busy.ok and "busy" in busy.message
        await until_state(link, "s1", "paused")
        assert link.status["s1"]["protocol"] == "unit-wait" and link.status["s1"]["step"] == 1
        refused = await agent.handle("s1", command("set_safety", safety={"current_max": "1 mA"}))
        assert not refused.ok and "between runs" in refused.message
        assert (await agent.handle("s1", command("mark", note="glovebox opened"))).ok
        assert (await agent.handle("s1", command("resume"))).ok
        await until_state(link, "s1", "done")
    finally:
        stop.set()
        await serving
    run_dir = tmp_path / "runs" / "s1" / link.status["s1"]["run"]
    assert json.loads((run_dir / "result.json").read_text())["state"] == "done"
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["seed"] == 3
    kinds = [getattr(r, "kind", None) for s, r in link.records]
    assert "mark" in kinds and "run_ended" in kinds


async def test_a_bad_protocol_starts_nothing_and_says_where(tmp_path):
    agent = Agent(AgentConfig.load(bench(tmp_path, SIM_BENCH)), environ={})
    link, stop = FakeLink(), asyncio.Event()
    serving = asyncio.create_task(agent.run(link, stop))
    try:
        await until_state(link, "s1", "idle")
        reply = await agent.handle("s1", command("start", protocol="labctl: 1\nname: x\nsteps: []\n"))
        assert not reply.ok and reply.message.startswith("<submitted>:3: steps:")
        nothing = await agent.handle("s1", command("abort"))
        assert not nothing.ok and "nothing is running" in nothing.message
        unknown = await agent.handle("nope", command("abort"))
        assert not unknown.ok
    finally:
        stop.set()
        await serving
    assert not (tmp_path / "runs" / "s1").exists() or not any((tmp_path / "runs" / "s1").iterdir())


async def test_set_safety_applies_to_the_next_start_and_none_removes_a_limit(tmp_path):
    agent = Agent(AgentConfig.load(bench(tmp_path, SIM_BENCH)), environ={})
    link, stop = FakeLink(), asyncio.Event()
    serving = asyncio.create_task(agent.run(link, stop))
    try:
        await until_state(link, "s1", "idle")
        assert (await agent.handle("s1", command("set_safety", safety={"current_max": "10 uA"}))).ok
        refused = await agent.handle("s1", command("start", protocol=WAIT_PROTOCOL))
        assert not refused.ok and "current limit of 0.01 mA" in refused.message
        bad = await agent.handle("s1", command("set_safety", safety={"current_max": "3 V"}))
        assert not bad.ok and "is not a current" in bad.message
        assert (await agent.handle("s1", command("set_safety", safety={"current_max": "none"}))).ok
        assert link.status["s1"]["safety"] == {}
    finally:
        stop.set()
        await serving


async def test_stopping_the_agent_aborts_a_waiting_run_with_its_result(tmp_path):
    agent = Agent(AgentConfig.load(bench(tmp_path, SIM_BENCH)), environ={})
    link, stop = FakeLink(), asyncio.Event()
    serving = asyncio.create_task(agent.run(link, stop))
    await until_state(link, "s1", "idle")
    assert (await agent.handle("s1", command("start", protocol=WAIT_PROTOCOL))).ok
    await until_state(link, "s1", "paused")
    stop.set()
    await serving
    assert link.status["s1"]["state"] == "aborted"
    run_dir = tmp_path / "runs" / "s1" / link.status["s1"]["run"]
    assert json.loads((run_dir / "result.json").read_text())["state"] == "aborted"
