"""Command validation, payload parsing, the idempotency ledger, topics and settings (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from labctl.data.mqtt import (
    MAX_COMMAND_BYTES,
    MAX_PROTOCOL_BYTES,
    Command,
    CommandLedger,
    MqttSettings,
    Reply,
    parse_command,
    topic,
)
from labctl.errors import ConfigError


def payload(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_valid_commands_of_every_action_parse() -> None:
    commands = [
        payload(id="a", action="start", protocol="name: x\n", seed=1),
        payload(id="b.2:3-4_5", action="pause"),
        payload(id="c", action="resume"),
        payload(id="d", action="abort", note="cell swelled"),
        payload(id="e", action="mark", note="photo taken"),
        payload(id="f", action="set_safety", safety={"voltage_max": "1 V", "current_max": "5 mA"}),
    ]
    for raw in commands:
        assert isinstance(parse_command(raw), Command), raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff", "not JSON"),
        (b'"pause"', "not a JSON object"),
        (payload(action="pause"), "id: Field required"),
        (payload(id="", action="pause"), "id: must be 1..64"),
        (payload(id="x" * 65, action="pause"), "id: must be 1..64"),
        (payload(id="a/b", action="pause"), "id: must be 1..64"),
        (payload(id="a", action="reboot"), "action"),
        (payload(id="a", action="pause", shell="rm -rf /"), "shell: Extra inputs are not permitted"),
        (payload(id="a", action="start"), "needs protocol"),
        (payload(id="a", action="set_safety"), "needs safety"),
        (payload(id="a", action="set_safety", safety={}), "1 to 32 limits"),
        (payload(id="a", action="set_safety", safety={"Voltage Max": "1 V"}), "lower_case_words"),
        (payload(id="a", action="pause", seed=3), "seed not allowed"),
        (payload(id="a", action="start", protocol="a\x00b"), "NUL"),
        (payload(id="a", action="start", protocol=5), "protocol"),
        (payload(id="a", action="start", protocol="#" * (MAX_PROTOCOL_BYTES + 1)), "larger than 256 kB"),
        (b" " * (MAX_COMMAND_BYTES + 1), "larger than 512 kB"),
    ],
)
def test_bad_payloads_become_one_clear_refusal(raw: bytes, expected: str) -> None:
    reply = parse_command(raw)
    assert isinstance(reply, Reply) and not reply.ok
    assert reply.message.startswith("command refused: ") and expected in reply.message, reply.message
    assert "\n" not in reply.message


def test_refusal_keeps_a_valid_id_so_the_sender_can_match_it() -> None:
    assert parse_command(payload(id="k-7", action="pause", bogus=1)).id == "k-7"
    assert parse_command(payload(id="bad id", action="pause")).id == ""


def test_command_model_is_strict_when_built_in_python() -> None:
    with pytest.raises(ValidationError):
        Command(id="a", action="pause", note=None, protocol="x")  # protocol only with start
    assert Command(id="a", action="mark").note is None


async def test_ledger_returns_the_first_reply_for_a_repeated_id() -> None:
    ledger = CommandLedger()
    command = Command(id="c1", action="pause")
    future, first = ledger.claim(command)
    assert first
    future.set_result(Reply(id="c1", ok=True, message="paused"))
    again, first_again = ledger.claim(Command(id="c1", action="pause"))
    assert not first_again and again.result() == Reply(id="c1", ok=True, message="paused")


async def test_ledger_refuses_an_id_reused_for_another_command() -> None:
    ledger = CommandLedger()
    ledger.claim(Command(id="c1", action="pause"))[0].set_result(Reply(id="c1", ok=True, message="paused"))
    refused, first = ledger.claim(Command(id="c1", action="abort"))
    assert not first and not refused.result().ok and "already used" in refused.result().message


async def test_ledger_is_bounded_and_forgets_the_oldest() -> None:
    ledger = CommandLedger(size=3)
    for n in range(5):
        ledger.claim(Command(id=f"c{n}", action="pause"))
    assert len(ledger) == 3 and "c0" not in ledger and "c1" not in ledger and "c4" in ledger
    assert ledger.claim(Command(id="c0", action="pause"))[1]  # forgotten: would run again


async def test_a_repeat_while_the_first_runs_shares_its_future() -> None:
    ledger = CommandLedger()
    first_future, _ = ledger.claim(Command(id="c1", action="pause"))
    second_future, first = ledger.claim(Command(id="c1", action="pause"))
    assert not first and second_future is first_future and not second_future.done()


def test_topics() -> None:
    assert topic("lab", "s1", "status") == "labctl/lab/s1/status"
    for bad in [("lab", "a/b", "cmd"), ("lab", "+", "cmd"), ("l#", "s", "cmd"), ("lab", "", "cmd"),
                ("lab", "s1", "other"), ("lab", "agents", "status"), ("lab", "clients", "cmd")]:  # fmt: skip
        with pytest.raises(ConfigError):
            topic(*bad)


def test_settings_from_env_and_overrides() -> None:
    environ = {
        "LABCTL_MQTT_HOST": "broker.lab",
        "LABCTL_MQTT_PORT": "8883",
        "LABCTL_MQTT_LAB": "b12",
        "LABCTL_MQTT_USERNAME": "alice",
        "LABCTL_MQTT_PASSWORD": "s3cret",
    }
    settings = MqttSettings.from_env(environ, host="other", username=None)
    assert (settings.host, settings.port, settings.lab, settings.username) == ("other", 8883, "b12", "alice")
    assert settings.read_password() == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.public_address
    assert settings.public_address == "mqtt://alice@other:8883"
    with pytest.raises(ConfigError, match="port"):
        MqttSettings.from_env({"LABCTL_MQTT_PORT": "nope"})
    with pytest.raises(ConfigError, match="either password or password_file"):
        MqttSettings.from_env({"LABCTL_MQTT_PASSWORD": "x", "LABCTL_MQTT_PASSWORD_FILE": "/p"})


def test_password_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\nignored\n")
    path.chmod(0o640)
    settings = MqttSettings(username="a", password_file=path)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        settings.read_password()
    assert "s3cret" not in str(caught.value)
    path.chmod(0o600)
    assert settings.read_password() == "s3cret"
    with pytest.raises(ConfigError, match="missing"):
        MqttSettings(password_file=tmp_path / "missing").read_password()


def test_tls_is_on_when_a_ca_is_given(tmp_path: Path) -> None:
    assert not MqttSettings().tls and MqttSettings().tls_context() is None
    with pytest.raises(ConfigError, match="TLS"):
        MqttSettings(tls_ca=tmp_path / "nope.pem").tls_context()
    assert MqttSettings(tls_ca=tmp_path / "nope.pem").public_address.startswith("mqtts://")
