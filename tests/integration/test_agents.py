"""Two `labctl agent` processes, a real broker (users, ACL) and a real time-series server, driven by the CLI.

The issue's "done when": with the broker and VictoriaMetrics killed and restarted in the middle of a
simulated run, every journaled record is in VictoriaMetrics afterwards (counted per run), status
and telemetry reach an outside MQTT client (`mosquitto_sub`), a command from a user without rights
is refused, and both agents are driven from `labctl submit`.

Timing is made deterministic by `wait` steps: a run pauses there (station safe) until
`labctl control … resume`, so "in the middle of a run" is a state, not a moment.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers import Mosquitto, VictoriaMetrics, require_binary

pytestmark = pytest.mark.timeout(240)

LAB = "lab"
USERS = {"bench-a": "pw-a", "bench-b": "pw-b", "alice": "pw-alice", "mallory": "pw-mallory", "viewer": "pw-v"}
ACL = """\
# the agents of two bench PCs
user bench-a
topic write labctl/lab/+/status
topic write labctl/lab/+/telemetry
topic write labctl/lab/+/event
topic read labctl/lab/+/cmd
topic readwrite labctl/lab/agents/#
topic write labctl/lab/clients/+/reply

user bench-b
topic write labctl/lab/+/status
topic write labctl/lab/+/telemetry
topic write labctl/lab/+/event
topic read labctl/lab/+/cmd
topic readwrite labctl/lab/agents/#
topic write labctl/lab/clients/+/reply

# an operator, and a lab member the broker lets write commands but no station accepts
user alice
topic write labctl/lab/+/cmd
topic read labctl/lab/#

user mallory
topic write labctl/lab/+/cmd
topic read labctl/lab/#

# reads, never commands (the broker drops its commands)
user viewer
topic read labctl/lab/#

pattern read labctl/+/clients/%c/reply
"""

WAIT_PROTOCOL = """\
labctl: 1
name: agent-wait
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
conditions: {pressure: 7 MPa, temperature: 25 degC}
safety: {voltage: {min: -1 V, max: 1 V}, current: {max: 10 mA}}
record: {sample: 10 s, every: 60 s, dv: 2 mV, poll: 5 min}
steps:
  - current: {density: 0.1 mA/cm^2, until: {time: 2 h}}
  - wait: {message: "the servers go down now"}
  - current: {density: -0.1 mA/cm^2, until: {time: 3 h}}
  - rest: {until: {time: 1 h}}
"""

# On the EmStat4 simulator (pyserial on a pty) beside a Keithley station (pyvisa) in the same agent:
# both transports in one process. (Two Keithley stations sharing pyvisa's one resource manager are
# covered in test_keithley2450_driver_wire.py.)
EIS_WAIT_PROTOCOL = """\
labctl: 1
name: agent-eis-wait
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
safety: {voltage: {min: -1 V, max: 1 V}}
record: {sample: 10 s, every: 60 s, poll: 5 min}
steps:
  - eis: {from: 100 kHz, to: 1 Hz, per_decade: 5, amplitude: 10 mV}
  - current: {density: 0.1 mA/cm^2, until: {time: 2 h}}
  - wait: {message: "to be aborted"}
  - current: {density: -0.1 mA/cm^2, until: {time: 2 h}}
"""

SHORT_PROTOCOL = """\
labctl: 1
name: agent-short
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
safety: {voltage: {min: -1 V, max: 1 V}}
record: {sample: 10 s, every: 60 s, poll: 5 min}
steps:
  - current: {density: 0.2 mA/cm^2, until: {time: 2 h}}
  - current: {density: -0.2 mA/cm^2, until: {time: 2 h}}
"""

BAD_PROTOCOL = """\
labctl: 1
name: agent-bad
steps:
  - current: {density: 0.2 parsecs, until: {time: 1 h}}
"""


def until(condition: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    """Poll a condition of other processes (readiness, not a fixed wait) under a deadline."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:g} s waiting until {what}")
        time.sleep(0.05)


class Subscriber:
    """`mosquitto_sub` on the lab's topics, as an outside MQTT client sees them; lines in a file."""

    def __init__(self, broker: Mosquitto, path: Path) -> None:
        self.path = path
        command = [
            require_binary("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5",
            "-u", "viewer", "-P", USERS["viewer"], "-t", f"labctl/{LAB}/#", "-v",
        ]  # fmt: skip
        with path.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def messages(self, leaf: str, station: str) -> list[dict]:
        prefix = f"labctl/{LAB}/{station}/{leaf} "
        found = []
        for line in self.path.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                found.append(json.loads(line[len(prefix) :]))
        return found

    def state(self, station: str) -> str | None:
        statuses = self.messages("status", station)
        return statuses[-1].get("state") if statuses else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def labctl(*args: str, broker: Mosquitto, user: str = "alice") -> subprocess.CompletedProcess[str]:
    """The `labctl` command as an operator runs it; credentials only in the environment."""
    env = dict(os.environ, LABCTL_MQTT_USERNAME=user, LABCTL_MQTT_PASSWORD=USERS[user])
    command = [sys.executable, "-m", "labctl", *args]
    if args[0] in ("submit", "status", "control"):
        command += ["--broker", f"{broker.host}:{broker.port}", "--lab", LAB]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def bench_file(workdir: Path, user: str, stations: list[str], broker: Mosquitto, vm: VictoriaMetrics) -> Path:
    workdir.mkdir()
    (workdir / "mqtt.password").write_text(USERS[user] + "\n", encoding="utf-8")
    (workdir / "mqtt.password").chmod(0o600)
    station_tables = "".join(
        f'\n[[station]]\nname = "{name}"\nsim = true\nallowed_users = ["alice"]\nseed = {i + 1}\n'
        for i, name in enumerate(stations)
    )
    path = workdir / "bench.toml"
    path.write_text(
        f'[agent]\nlab = "{LAB}"\nruns_dir = "runs"\nname = "agent-{user}"\ndrain_s = 5\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{user}"\n'
        'password_file = "mqtt.password"\ntelemetry_hz = 50\nreconnect_max_s = 0.5\n\n'
        f'[influx]\nurl = "{vm.url}"\norg = "lab-org"\nbucket = "runs"\n'
        "backoff_initial_s = 0.05\nbackoff_max_s = 0.5\npoll_interval_s = 0.1\ntimeout_s = 2\n"
        + station_tables,
        encoding="utf-8",
    )
    return path


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
    with (config.parent / "agent.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "labctl", "-v", "agent", "--config", str(config)],
            cwd=config.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def journal_counts(journal: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        dc = db.execute("SELECT COUNT(*) FROM samples WHERE kind = 'dc'").fetchone()[0]
        eis = db.execute("SELECT COUNT(*) FROM samples WHERE kind = 'eis'").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        marks = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'mark'").fetchone()[0]
    finally:
        db.close()
    return {"dc": dc, "eis": eis, "event": events, "mark": marks}


def server_counts(vm: VictoriaMetrics, station: str, run: str) -> dict[str, int]:
    """Points of one run in VictoriaMetrics, future included: a simulated run's clock runs ahead of now."""
    urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=10).close()
    counts = {}
    for key, name in (("dc", "dc_voltage_v"), ("eis", "eis_z_real_ohm"), ("event", "event_seq")):
        match = f'{{__name__="{name}", station="{station}", run="{run}"}}'
        end = str(int(time.time()) + 3 * 86_400)
        query = urllib.parse.urlencode({"match[]": match, "start": "0", "end": end})
        with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=30) as answer:
            series = [json.loads(line) for line in answer.read().splitlines() if line.strip()]
        counts[key] = sum(len(s["values"]) for s in series)
    return counts


def test_two_agents_driven_from_the_cli_lose_nothing_when_the_servers_restart(tmp_path: Path) -> None:
    vm = VictoriaMetrics(tmp_path)
    broker = Mosquitto(tmp_path, users=USERS, acl=ACL)
    vm.start()
    broker.start()
    agents: list[subprocess.Popen[bytes]] = []
    subscribers: list[Subscriber] = []
    try:
        watch = Subscriber(broker, tmp_path / "sub-1.txt")
        subscribers.append(watch)
        bench_a = bench_file(tmp_path / "bench-a", "bench-a", ["a1", "a2"], broker, vm)
        bench_b = bench_file(tmp_path / "bench-b", "bench-b", ["b1"], broker, vm)
        agents += [start_agent(bench_a), start_agent(bench_b)]
        until(lambda: all(watch.state(s) == "idle" for s in ("a1", "a2", "b1")), "every station is idle")

        protocols = tmp_path / "protocols"
        protocols.mkdir()
        texts = {"wait": WAIT_PROTOCOL, "eis": EIS_WAIT_PROTOCOL, "short": SHORT_PROTOCOL}
        texts["bad"] = BAD_PROTOCOL
        for name, text in texts.items():
            (protocols / f"{name}.yaml").write_text(text, encoding="utf-8")

        # A bad protocol never leaves the operator's machine: file:line, nothing sent.
        bad = labctl("submit", "--station", "b1", str(protocols / "bad.yaml"), broker=broker)
        assert bad.returncode != 0 and "bad.yaml:4" in bad.stderr, bad.stderr

        # Both agents driven from `labctl submit`.
        for station, protocol in (("a1", "wait.yaml"), ("a2", "eis.yaml"), ("b1", "short.yaml")):
            done = labctl("submit", "--station", station, str(protocols / protocol), broker=broker)
            assert done.returncode == 0, done.stderr
            assert f"{station}: ok: started" in done.stdout

        # Refusals: a busy station; a user the station does not accept; a user the broker stops.
        busy = labctl("submit", "--station", "a1", str(protocols / "short.yaml"), broker=broker)
        assert busy.returncode != 0 and "busy" in busy.stderr, busy.stderr
        intruder = labctl("control", "--station", "a1", "abort", broker=broker, user="mallory")
        assert intruder.returncode != 0 and "refused" in intruder.stderr and "mallory" in intruder.stderr
        viewer = labctl("control", "--station", "a1", "abort", "--timeout", "2", broker=broker, user="viewer")
        assert viewer.returncode != 0 and "did not answer" in viewer.stderr, viewer.stderr

        until(lambda: watch.state("b1") == "done", "b1's run is done")
        until(lambda: watch.state("a1") == "paused" and watch.state("a2") == "paused", "a1 and a2 wait")
        table = labctl("status", broker=broker, user="viewer")
        assert table.returncode == 0, table.stderr
        rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
        assert rows["a1"][1:3] == ["paused", "agent-wait"] and rows["b1"][1:3] == ["done", "agent-short"]
        for station in ("a1", "b1"):  # status and telemetry reached an outside client
            assert watch.messages("telemetry", station), f"no telemetry from {station}"
            assert "voltage_v" in watch.messages("telemetry", station)[-1]["values"]

        # Both servers die in the middle of a1's run (paused at its wait step), the broker comes back.
        vm.stop()
        broker.stop()
        watch.stop()
        broker.start()
        watch = Subscriber(broker, tmp_path / "sub-2.txt")
        subscribers.append(watch)
        until(lambda: watch.state("a1") == "paused", "agent A republishes a1's status", deadline_s=30)

        # With the time-series server still down, a1 runs to its end and a2 is marked and aborted.
        for args in (("a1", "resume"), ("a2", "mark", "--note", "separator cracked"), ("a2", "abort")):
            done = labctl("control", "--station", args[0], *args[1:], broker=broker)
            assert done.returncode == 0, done.stderr
        until(lambda: watch.state("a1") == "done" and watch.state("a2") == "aborted", "a1 done, a2 aborted")

        vm.start()
        journals = sorted((tmp_path / "bench-a" / "runs").glob("*/*/journal.sqlite"))
        journals += sorted((tmp_path / "bench-b" / "runs").glob("*/*/journal.sqlite"))
        assert [j.parent.parent.name for j in journals] == ["a1", "a2", "b1"]
        expected = {j: journal_counts(j) for j in journals}
        assert expected[journals[1]]["mark"] == 1 and expected[journals[1]]["eis"] > 0
        assert all(c["dc"] > 100 for c in expected.values()), expected

        def caught_up() -> bool:
            return all(
                server_counts(vm, j.parent.parent.name, j.parent.name)
                == {key: expected[j][key] for key in ("dc", "eis", "event")}
                for j in journals
            )

        until(caught_up, "every journaled sample and event is in VictoriaMetrics", deadline_s=30)
        results = [json.loads((j.parent / "result.json").read_text())["state"] for j in journals]
        assert results == ["done", "aborted", "done"]

        # SIGTERM: each agent stops cleanly (nothing running now) and exits 0.
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        assert [agent.wait(timeout=30) for agent in agents] == [0, 0]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        for subscriber in subscribers:
            if subscriber.process.poll() is None:
                subscriber.stop()
        broker.stop()
        vm.stop()
