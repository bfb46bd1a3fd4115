"""MqttLink and LabClient against a real Mosquitto broker (tests/servers.py), with users, ACL and TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from labctl.data import Event, EventKind, Sample, Status
from labctl.data.mqtt import (
    MAX_COMMAND_BYTES,
    Command,
    LabClient,
    MqttLink,
    MqttSettings,
    NoReplyError,
    Reply,
    reply_topic,
    topic,
)
from labctl.errors import ConfigError, LabctlError
from tests.servers import LAB_ACL, LAB_USERS, Mosquitto, require_binary

USERS, ACL = LAB_USERS, LAB_ACL


class Recorder:
    """A command handler that records its calls and answers ok."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Command]] = []

    async def __call__(self, station: str, command: Command) -> Reply:
        self.calls.append((station, command))
        return Reply(id=command.id, ok=True, message=f"{command.action} done", data={"n": len(self.calls)})


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition (a broker's state is not awaitable) under a deadline."""
    async with asyncio.timeout(timeout_s):
        for _ in iter(int, 1):
            if predicate():
                return
            await asyncio.sleep(0.02)


def settings(broker: Mosquitto, user: str | None = None, **more) -> MqttSettings:
    if user is None:
        return MqttSettings(port=broker.port, **more)
    return MqttSettings(port=broker.port, username=user, password=USERS[user], **more)


@pytest.fixture
def secure_broker(tmp_path: Path):
    """A broker with users and the ACL above; no anonymous access."""
    broker = Mosquitto(tmp_path, users=USERS, acl=ACL)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def subscriber(broker: Mosquitto, subscription: str, **login) -> aiomqtt.Client:
    client = aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, **login)
    await client.__aenter__()
    await client.subscribe(subscription, qos=1)
    return client


async def next_message(client: aiomqtt.Client, match: Callable[[aiomqtt.Message], bool], timeout_s=10.0):
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            if match(message):
                return message
    raise AssertionError("message iterator ended")


def sample(v: float = 1.0) -> Sample:
    return Sample(time.time_ns(), 2, {"voltage_v": v, "current_a": 1e-3, "temperature_k": 298.15})


async def test_status_and_telemetry_reach_aiomqtt_and_mosquitto_sub(mosquitto_broker: Mosquitto) -> None:
    """The retained status and telemetry are seen by an outside aiomqtt client and by `mosquitto_sub`."""
    mosquitto_sub = require_binary("mosquitto_sub")
    async with MqttLink(settings(mosquitto_broker), client_id="bench1", stations=["s1"]) as link:
        await link.wait_connected()
        link.set_status("s1", {"state": "running", "protocol": "ccd", "run": "r1"})
        assert await link.flush()
        process = await asyncio.create_subprocess_exec(
            mosquitto_sub, "-h", "127.0.0.1", "-p", str(mosquitto_broker.port), "-V", "mqttv5", "-d",
            "-t", "labctl/lab/s1/#", "-F", "MSG %t %p",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        watcher = await subscriber(mosquitto_broker, "labctl/lab/s1/#")
        try:
            seen: dict[str, dict] = {}
            async with asyncio.timeout(10):
                sent = False
                while not {"status", "telemetry"} <= seen.keys():
                    line = (await process.stdout.readline()).decode()
                    assert line, "mosquitto_sub ended"
                    if "SUBACK" in line and not sent:  # subscribed: telemetry now reaches it
                        link.publisher("s1")(sample())
                        sent = True
                    if line.startswith("MSG "):
                        _, name, payload = line.split(" ", 2)
                        seen[name.rsplit("/", 1)[1]] = json.loads(payload)
            assert seen["status"]["state"] == "running" and seen["status"]["run"] == "r1"
            assert seen["telemetry"]["values"]["voltage_v"] == 1.0
            status = await next_message(watcher, lambda m: m.topic.value.endswith("/status"))
            assert status.retain and json.loads(status.payload)["protocol"] == "ccd"
            telemetry = await next_message(watcher, lambda m: m.topic.value.endswith("/telemetry"))
            assert telemetry.qos == 0 and 0 < telemetry.properties.MessageExpiryInterval <= 60
        finally:
            process.terminate()
            await process.wait()
            await watcher.__aexit__(None, None, None)


async def test_bus_status_and_events_are_published(mosquitto_broker: Mosquitto) -> None:
    """A Bus Status becomes the retained status; an Event goes out with QoS 1."""
    async with MqttLink(settings(mosquitto_broker), client_id="bench1", stations=["s1"]) as link:
        await link.wait_connected()
        watcher = await subscriber(mosquitto_broker, "labctl/lab/s1/#")
        try:
            listener = link.publisher("s1")
            listener(Status("paused", 3, "hold 1 MPa", 12.5, {"voltage_v": 0.5}, {"run": "r7"}))
            listener(Event(time.time_ns(), 3, EventKind.PAUSED, {"by": "alice"}))
            listener("not a record")  # ignored, never raises
            event = await next_message(watcher, lambda m: m.topic.value.endswith("/event"))
            assert event.qos == 1
            assert json.loads(event.payload)["kind"] == "paused" and json.loads(event.payload)["run"] == "r7"
            async with LabClient(settings(mosquitto_broker)) as client:
                statuses = await client.statuses(wait_s=0.3)
            assert statuses["s1"]["state"] == "paused" and statuses["s1"]["step"] == 3
            assert statuses["s1"]["values"]["voltage_v"] == 0.5
        finally:
            await watcher.__aexit__(None, None, None)


async def test_telemetry_is_rate_limited(mosquitto_broker: Mosquitto) -> None:
    """50 samples in about 0.5 s at telemetry_hz=10 give about 5 telemetry messages, not 50."""
    async with MqttLink(
        settings(mosquitto_broker, telemetry_hz=10.0), client_id="bench1", stations=["s1"]
    ) as link:
        await link.wait_connected()
        watcher = await subscriber(mosquitto_broker, "labctl/lab/s1/#")
        try:
            listener = link.publisher("s1")
            for i in range(50):
                listener(sample(float(i)))
                await asyncio.sleep(0.01)  # the rate limit is about real time
            assert await link.flush()
            listener(Event(time.time_ns(), 0, EventKind.MARK, {"end": True}))  # after all telemetry
            telemetry = []
            async with asyncio.timeout(10):
                async for message in watcher.messages:
                    if message.topic.value.endswith("/telemetry"):
                        telemetry.append(json.loads(message.payload))
                    if message.topic.value.endswith("/event"):
                        break
            assert 3 <= len(telemetry) <= 8, len(telemetry)
            assert link.rate_limited == 50 - len(telemetry)
            assert telemetry[0]["values"]["voltage_v"] == 0.0
        finally:
            await watcher.__aexit__(None, None, None)


async def test_command_round_trip_and_repeated_id_runs_once(secure_broker: Mosquitto) -> None:
    """LabClient → broker (ACL) → MqttLink → handler → Reply; the same id again is answered, not re-run."""
    handler = Recorder()
    agent = settings(secure_broker, "bench1")
    async with MqttLink(agent, client_id="bench1", stations=["s1", "s2"], handler=handler,
                        allowed_users={"s1": ["alice"], "s2": ["alice"]}) as link:  # fmt: skip
        await link.wait_connected()
        async with LabClient(settings(secure_broker, "alice")) as client:
            start = Command(id="c-1", action="start", protocol="name: ccd\nsteps: []\n", seed=3)
            reply = await client.send("s1", start)
            assert reply == Reply(id="c-1", ok=True, message="start done", data={"n": 1})
            again = await client.send("s1", start)
            assert again == reply
            reused = await client.send("s1", Command(id="c-1", action="abort"))
            assert not reused.ok and "already used" in reused.message
            other = await client.send("s2", Command(id="c-1", action="pause"))  # ledgers are per station
            assert other.ok
    assert [(s, c.id, c.action) for s, c in handler.calls] == [("s1", "c-1", "start"), ("s2", "c-1", "pause")]
    assert handler.calls[0][1].protocol == "name: ccd\nsteps: []\n" and handler.calls[0][1].seed == 3


async def test_malformed_and_oversized_commands_are_refused_and_the_link_survives(
    mosquitto_broker: Mosquitto,
) -> None:
    """Garbage on the cmd topic gets one ok=False reply each; the handler never sees it."""
    handler = Recorder()
    async with MqttLink(
        settings(mosquitto_broker), client_id="bench1", stations=["s1"], handler=handler
    ) as link:
        await link.wait_connected()
        replies_to = reply_topic("lab", "tester")
        raw = await subscriber(mosquitto_broker, replies_to)
        try:
            cases = {
                b"not json": "not JSON",
                b"[1, 2]": "not a JSON object",
                b'{"id": "x1", "action": "pause", "sudo": true}': "sudo",
                b'{"id": "bad id!", "action": "pause"}': "id",
                b'{"id": "x2", "action": "explode"}': "action",
                b'{"id": "x3", "action": "start"}': "needs protocol",
                b'{"id": "x4", "action": "pause", "protocol": "a: 1"}': "not allowed",
                b"\xff\xfe": "not JSON",
                b"x" * (MAX_COMMAND_BYTES + 1): "larger than",
                json.dumps(
                    {"id": "x5", "action": "start", "protocol": "#" * 300_000}
                ).encode(): "larger than",
            }
            for n, (payload, expected) in enumerate(cases.items()):
                properties = Properties(PacketTypes.PUBLISH)
                properties.ResponseTopic = replies_to
                properties.CorrelationData = str(n).encode()
                await raw.publish(topic("lab", "s1", "cmd"), payload, qos=1, properties=properties)
                message = await next_message(raw, lambda m: m.topic.value == replies_to)
                assert message.properties.CorrelationData == str(n).encode()
                reply = Reply.model_validate_json(message.payload)
                assert not reply.ok and expected in reply.message, (payload[:40], reply.message)
        finally:
            await raw.__aexit__(None, None, None)
        async with LabClient(settings(mosquitto_broker)) as client:
            assert (await client.send("s1", Command(id="ok-1", action="mark", note="still alive"))).ok
        assert link.connected
    assert [c.id for _, c in handler.calls] == ["ok-1"]


async def test_user_without_acl_write_is_refused_by_the_broker(secure_broker: Mosquitto) -> None:
    """A viewer's command never reaches the agent; LabClient says the broker probably refused it."""
    handler = Recorder()
    async with MqttLink(settings(secure_broker, "bench1"), client_id="bench1", stations=["s1"],
                        handler=handler) as link:  # fmt: skip
        await link.wait_connected()
        async with LabClient(settings(secure_broker, "viewer")) as client:
            with pytest.raises(NoReplyError, match="broker probably refused") as caught:
                await client.send("s1", Command(id="v-1", action="abort"), timeout_s=1.0)
            assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, LabctlError)
            assert "viewer" in str(caught.value) and "labctl/lab/s1/cmd" in str(caught.value)
    assert handler.calls == []


async def test_permitted_user_not_allowed_by_the_agent_is_refused(secure_broker: Mosquitto) -> None:
    """Bob may write the cmd topic (broker ACL) but is not among s1's allowed users: the link refuses."""
    handler = Recorder()
    async with MqttLink(settings(secure_broker, "bench1"), client_id="bench1", stations=["s1"],
                        handler=handler, allowed_users={"s1": ["alice"]}) as link:  # fmt: skip
        await link.wait_connected()
        async with LabClient(settings(secure_broker, "bob")) as client:
            reply = await client.send("s1", Command(id="b-1", action="abort"))
    assert reply == Reply(id="b-1", ok=False, message="user bob may not control station s1")
    assert handler.calls == []


async def test_wrong_password_and_open_password_file_are_clear_errors(
    secure_broker: Mosquitto, tmp_path: Path
) -> None:
    """Bad credentials: a BrokerError naming the broker, never the password; a 0644 password file: refused."""
    with pytest.raises(LabctlError, match="cannot connect") as caught:
        async with LabClient(MqttSettings(port=secure_broker.port, username="alice", password="wrong-pw")):
            pass
    assert "wrong-pw" not in str(caught.value)
    password_file = tmp_path / "alice.pw"
    password_file.write_text("alice-pw\n")
    password_file.chmod(0o644)
    open_file = MqttSettings(port=secure_broker.port, username="alice", password_file=password_file)
    with pytest.raises(ConfigError, match="chmod 600"):
        async with LabClient(open_file):
            pass
    password_file.chmod(0o600)
    async with LabClient(open_file) as client:
        assert await client.statuses(wait_s=0.1) == {}


async def test_link_reconnects_resubscribes_and_republishes_status(mosquitto_broker: Mosquitto) -> None:
    """Broker stopped and restarted (no persistence): the link comes back, status is retained again."""
    handler = Recorder()
    fast = settings(mosquitto_broker, reconnect_initial_s=0.1, reconnect_max_s=0.5)
    async with MqttLink(fast, client_id="bench1", stations=["s1"], handler=handler) as link:
        await link.wait_connected()
        link.set_status("s1", {"state": "running", "run": "r9"})
        assert await link.flush()
        await asyncio.to_thread(mosquitto_broker.stop)
        await until(lambda: not link.connected)
        link.publisher("s1")(Event(time.time_ns(), 1, EventKind.NOTE, {"text": "while away"}))
        await asyncio.to_thread(mosquitto_broker.start)
        await link.wait_connected(timeout_s=10)
        async with LabClient(settings(mosquitto_broker)) as client:
            statuses = await client.statuses(wait_s=0.3)
            assert statuses["s1"]["state"] == "running" and statuses["s1"]["run"] == "r9"
            assert (await client.send("s1", Command(id="after", action="pause"), timeout_s=5)).ok
    assert [c.id for _, c in handler.calls] == ["after"]


async def test_agent_will_and_clean_exit_mark_the_station_offline(mosquitto_broker: Mosquitto) -> None:
    """After the agent leaves, `statuses()` reports its stations offline."""
    async with MqttLink(settings(mosquitto_broker), client_id="bench1", stations=["s1"]) as link:
        await link.wait_connected()
        link.set_status("s1", {"state": "running"})
    async with LabClient(settings(mosquitto_broker)) as client:
        statuses = await client.statuses(wait_s=0.3)
    assert statuses["s1"]["state"] == "offline"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                          "server.pem"))  # fmt: skip
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=labctl test CA")  # fmt: skip
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    key.chmod(0o600)
    return ca, cert, key


# paho-mqtt 2.2 does not close the socket of a failed TLS handshake (client.py, _ssl_wrap_socket);
# the garbage collector does, with a ResourceWarning that is paho's, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_tls_connection_verifies_the_broker(tmp_path: Path) -> None:
    """Over the TLS listener with tls_ca: commands and status work; without the CA the connection fails."""
    broker = Mosquitto(tmp_path, users=USERS, acl=ACL, tls=make_certificates(tmp_path))
    await asyncio.to_thread(broker.start)
    try:
        ca = tmp_path / "ca.pem"
        handler = Recorder()
        agent = MqttSettings(port=broker.tls_port, username="bench1", password="bench-pw", tls_ca=ca)
        async with MqttLink(agent, client_id="bench1", stations=["s1"], handler=handler) as link:
            await link.wait_connected()
            operator = MqttSettings(port=broker.tls_port, username="alice", password="alice-pw", tls_ca=ca)
            async with LabClient(operator) as client:
                assert (await client.send("s1", Command(id="t-1", action="pause"))).ok
                assert (await client.statuses(wait_s=0.3))["s1"]["agent"] == "bench1"
            untrusting = operator.model_copy(update={"tls_ca": tmp_path / "server.pem"})  # not the CA
            with pytest.raises(LabctlError, match="cannot connect"):
                async with LabClient(untrusting):
                    pass
        assert len(handler.calls) == 1
    finally:
        await asyncio.to_thread(broker.stop)
