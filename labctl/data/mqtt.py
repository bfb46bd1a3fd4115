"""MQTT for a lab of agents: telemetry, events and a retained status per station out; commands in.

One `MqttLink` per agent process keeps one MQTT 5 connection (aiomqtt) in a background task that
reconnects with capped back-off. Bus records reach it through `MqttLink.publisher(station)`, a
listener that never blocks and never raises: it only queues (the journal is the truth, DESIGN.md §2;
MQTT is a live view). Operators and the TUI use `LabClient` to send commands and read statuses.

Topics (docs/mqtt.md has the payloads):

- `labctl/<lab>/<station>/status`    retained JSON, QoS 1 (state, protocol, run, step, last values …)
- `labctl/<lab>/<station>/telemetry` JSON per sample, QoS 0, at most `telemetry_hz` per station,
  message expiry 60 s
- `labctl/<lab>/<station>/event`     JSON per event, QoS 1
- `labctl/<lab>/<station>/cmd`       commands (JSON `Command`), MQTT 5 response topic + correlation data
- `labctl/<lab>/agents/<client_id>/status`  retained agent liveness; the agent's last will sets it to
  {"state": "offline"} (MQTT has one will per connection and an agent may run several stations)
- `labctl/<lab>/clients/<client_id>/reply`  where a `LabClient` receives its replies

Security is two independent layers: the broker's ACL decides who may publish on a station's cmd topic;
the agent executes a command only if it came on that station's cmd topic and its "labctl-user" user
property is among the station's allowed users. Secrets (password, password file contents) are never
logged.

Errors:

- `labctl.errors.LabctlError`
  - `labctl.errors.ConfigError`: settings are wrong (password file readable by others, TLS files …)
  - `BrokerError`: the broker cannot be reached or refused us
    - `NoReplyError` (also a `TimeoutError`): a command was not answered in time
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import ssl
import stat
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from labctl.data.bus import Status
from labctl.data.records import Event, Sample
from labctl.errors import ConfigError, LabctlError

log = logging.getLogger(__name__)

ENV_PREFIX = "LABCTL_MQTT_"
LEAVES = frozenset({"status", "telemetry", "event", "cmd"})
RESERVED_STATIONS = frozenset({"agents", "clients"})
"""Second-level names used by agent and client topics, so no station may have them."""
USER_PROPERTY = "labctl-user"

MAX_PROTOCOL_BYTES = 256 * 1024
MAX_COMMAND_BYTES = 2 * MAX_PROTOCOL_BYTES
"""A command payload larger than this is refused before parsing (JSON escaping can grow the YAML)."""
OUTGOING_QUEUE_MAX = 1000
"""Events, replies and telemetry waiting for the broker; when full the oldest telemetry goes first."""
LEDGER_SIZE = 1000
"""Command ids remembered per station for idempotency."""
TELEMETRY_EXPIRY_S = 60
REPLY_EXPIRY_S = 300
STATUS_VALUES_INTERVAL_S = 5.0
"""Last values are merged into the retained status on every sample but re-published at most this often."""


class BrokerError(LabctlError):
    """The MQTT broker cannot be reached, refused the connection, or refused a subscription."""


class NoReplyError(BrokerError, TimeoutError):
    """An agent did not answer a command in time."""


# --- settings ------------------------------------------------------------------------------------


class MqttSettings(BaseModel):
    """Where the broker is and how to log in. From a config file's [mqtt] table or `from_env()`."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    lab: str = "lab"
    """First level under `labctl/`: one broker can serve several labs."""
    username: str | None = None
    password: SecretStr | None = None
    """Never logged; prefer `password_file` on shared machines."""
    password_file: Path | None = None
    """A file holding the password (first line), read at connect; refused if group or others can read it."""
    tls_ca: Path | None = None
    """CA bundle to verify the broker's certificate; setting any tls_* option turns TLS on."""
    tls_cert: Path | None = None
    """Client certificate (PEM) for brokers that require one; needs tls_key."""
    tls_key: Path | None = None
    tls_insecure: bool = False
    """Do not check that the broker's certificate names `host` (the chain is still verified)."""
    telemetry_hz: float = Field(default=2.0, gt=0, le=1000)
    """Most telemetry messages per second and station (and sample kind)."""
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @field_validator("lab")
    @classmethod
    def _lab_is_a_topic_level(cls, value: str) -> str:
        _check_level("lab", value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key needs tls_cert")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> MqttSettings:
        """Settings from LABCTL_MQTT_HOST/PORT/LAB/USERNAME/PASSWORD/PASSWORD_FILE; overrides not None win."""
        environ = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        for key in ("host", "port", "lab", "username", "password", "password_file"):
            value = environ.get(ENV_PREFIX + key.upper())
            if value:
                data[key] = value
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or "settings"
            raise ConfigError(f"MQTT settings: {name}: {first['msg']}") from None

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return any(x is not None for x in (self.tls_ca, self.tls_cert)) or self.tls_insecure

    @property
    def public_address(self) -> str:
        """The broker as logs and messages name it (user, never the password)."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def read_password(self) -> str | None:
        """The password, from `password` or `password_file` (checked: owner-only readable).

        Raises:
            ConfigError: the file is missing, unreadable, or readable by group or others.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        path = self.password_file.expanduser()
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"MQTT password file {path} can be read by group or others; run `chmod 600 {path}`"
                )
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"MQTT password file {path}: {exc.strerror or exc}") from None
        return text.splitlines()[0] if text else ""

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for the connection, or None without TLS.

        Raises:
            ConfigError: a certificate or key file cannot be loaded.
        """
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
            if self.tls_cert is not None:
                context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"MQTT TLS files: {exc}") from None
        if self.tls_insecure:
            context.check_hostname = False
        return context


# --- topics --------------------------------------------------------------------------------------

_BAD_LEVEL = re.compile(r"[/+#\x00]")


def _check_level(what: str, value: str) -> None:
    if not value or _BAD_LEVEL.search(value) or value != value.strip():
        raise ConfigError(f"MQTT {what} {value!r} cannot be a topic level (no '/', '+', '#', not empty)")


def topic(lab: str, station: str, leaf: str) -> str:
    """The topic of one station's `leaf`: "labctl/<lab>/<station>/<leaf>".

    Args:
        lab: the lab name (settings.lab).
        station: the station name; not "agents" or "clients" (reserved).
        leaf: one of status, telemetry, event, cmd.

    Raises:
        ConfigError: a name is not usable as a topic level, or the leaf is unknown.
    """
    _check_level("lab", lab)
    _check_level("station", station)
    if station in RESERVED_STATIONS:
        raise ConfigError(f"station name {station!r} is reserved for labctl's own topics")
    if leaf not in LEAVES:
        raise ConfigError(f"unknown topic leaf {leaf!r} (one of {', '.join(sorted(LEAVES))})")
    return f"labctl/{lab}/{station}/{leaf}"


def agent_topic(lab: str, client_id: str) -> str:
    """The retained liveness topic of one agent (its last will marks it offline)."""
    _check_level("lab", lab)
    _check_level("client id", client_id)
    return f"labctl/{lab}/agents/{client_id}/status"


def reply_topic(lab: str, client_id: str) -> str:
    """Where a `LabClient` receives the replies to its commands."""
    _check_level("lab", lab)
    _check_level("client id", client_id)
    return f"labctl/{lab}/clients/{client_id}/reply"


# --- commands ------------------------------------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SAFETY_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_FIELDS_OF_ACTION = {
    "start": {"protocol", "seed"},
    "pause": set(),
    "resume": set(),
    "abort": {"note"},
    "mark": {"note"},
    "set_safety": {"safety"},
}
_REQUIRED_OF_ACTION = {"start": "protocol", "set_safety": "safety"}


class Command(BaseModel):
    """A command to one station; validated, unknown fields refused.

    The `id` is the idempotency key: a station executes a given id at most once and answers a repeat
    with the first reply.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    """1 to 64 characters of A-Z a-z 0-9 . _ : -"""
    action: Literal["start", "pause", "resume", "abort", "mark", "set_safety"]
    protocol: str | None = None
    """start: the protocol file's YAML text (data only, never code), at most 256 kB."""
    note: str | None = Field(default=None, max_length=2000)
    """mark (and abort): the operator's note."""
    safety: dict[str, str] | None = None
    """set_safety: limit name → quantity, e.g. {"voltage_max": "1 V", "current_max": "5 mA"}."""
    seed: int | None = None
    """start: seed of the simulated bench's noise, for reproducible runs."""

    @field_validator("id")
    @classmethod
    def _id_format(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError("must be 1..64 characters of A-Z a-z 0-9 . _ : -")
        return value

    @field_validator("protocol")
    @classmethod
    def _protocol_size(cls, value: str | None) -> str | None:
        if value is not None:
            if len(value.encode("utf-8")) > MAX_PROTOCOL_BYTES:
                raise ValueError(f"protocol is larger than {MAX_PROTOCOL_BYTES // 1024} kB")
            if "\x00" in value:
                raise ValueError("protocol text contains a NUL character")
        return value

    @field_validator("safety")
    @classmethod
    def _safety_entries(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if not value or len(value) > 32:
                raise ValueError("give 1 to 32 limits")
            for name, quantity in value.items():
                if not _SAFETY_NAME.fullmatch(name):
                    raise ValueError(f"limit name {name!r} must be lower_case_words")
                if not quantity.strip() or len(quantity) > 64:
                    raise ValueError(f"limit {name}: quantity must be 1..64 characters")
        return value

    @model_validator(mode="after")
    def _fields_fit_action(self) -> Command:
        allowed = _FIELDS_OF_ACTION[self.action]
        given = {name for name in ("protocol", "note", "safety", "seed") if getattr(self, name) is not None}
        if extra := sorted(given - allowed):
            raise ValueError(f"{', '.join(extra)} not allowed with action {self.action!r}")
        required = _REQUIRED_OF_ACTION.get(self.action)
        if required and getattr(self, required) is None:
            raise ValueError(f"action {self.action!r} needs {required}")
        return self

    def digest(self) -> str:
        """A fingerprint of the command's content, to catch an id reused for a different command."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class Reply(BaseModel):
    """A station's answer to one command."""

    model_config = ConfigDict(extra="forbid")
    id: str
    ok: bool
    message: str
    data: dict[str, Any] = {}


CommandHandler = Callable[[str, Command], Awaitable[Reply]]
"""The agent's executor: (station, command) → reply. Only called for valid, authorized, new commands."""


def parse_command(payload: bytes | bytearray | str | None) -> Command | Reply:
    """A command from a message payload, or a refusal (ok=False) with one clear message.

    Never raises: oversized, non-UTF-8, non-JSON, unknown fields and invalid values all become a Reply.
    """
    raw = payload or b""
    if len(raw) > MAX_COMMAND_BYTES:
        return Reply(id="", ok=False, message=f"command refused: larger than {MAX_COMMAND_BYTES // 1024} kB")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return Reply(id="", ok=False, message=f"command refused: not JSON ({exc})")
    if not isinstance(data, dict):
        return Reply(id="", ok=False, message="command refused: not a JSON object")
    command_id = data.get("id") if isinstance(data.get("id"), str) and _ID.fullmatch(data["id"]) else ""
    try:
        return Command.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        text = first["msg"].removeprefix("Value error, ")
        message = f"command refused: {where}: {text}" if where else f"command refused: {text}"
        return Reply(id=command_id, ok=False, message=message)


class CommandLedger:
    """The replies to recent command ids of one station (bounded), so a repeated id runs once.

    An entry is a future: a repeat that arrives while the first is still executing waits for its reply.
    """

    def __init__(self, size: int = LEDGER_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[str, asyncio.Future[Reply]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._entries

    def claim(self, command: Command) -> tuple[asyncio.Future[Reply], bool]:
        """The future holding `command`'s reply, and whether the caller must execute it (first time)."""
        entry = self._entries.get(command.id)
        if entry is not None:
            digest, future = entry
            if digest != command.digest():
                refused: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
                refused.set_result(
                    Reply(
                        id=command.id,
                        ok=False,
                        message=f"command id {command.id} was already used for a "
                        "different command; use a new id",
                    )
                )
                return refused, False
            return future, False
        future = asyncio.get_running_loop().create_future()
        self._entries[command.id] = (command.digest(), future)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return future, True


# --- payloads ------------------------------------------------------------------------------------


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: those become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


_SHORT_VALUES = {"voltage_v": "V", "current_a": "I", "power_w": "P", "temperature_k": "T"}


def _last_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The status's last values: voltage, current, power, temperature (and pressure) when measured."""
    out = {k: v for k, v in _finite(values).items() if k in _SHORT_VALUES or k.startswith("pressure")}
    if (
        "power_w" not in out
        and isinstance(values.get("voltage_v"), float | int)
        and isinstance(values.get("current_a"), float | int)
    ):
        power = float(values["voltage_v"]) * float(values["current_a"])
        out["power_w"] = power if math.isfinite(power) else None
    return out


def record_payload(station: str, run: str | None, record: Sample | Event) -> dict[str, Any]:
    """The JSON payload of a sample (telemetry topic) or an event (event topic), as every view reads it."""
    payload: dict[str, Any] = {
        "station": station,
        "run": run,
        "t_ns": record.t_ns,
        "time": _iso(record.t_ns),
        "step": record.step,
    }
    if isinstance(record, Sample):
        return payload | {"kind": record.kind, "values": _finite(record.values)}
    return payload | {"kind": str(record.kind), "data": record.data}


def status_update(record: Status, previous_values: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's `Status` changes in a station's status; its V and I merge into the last values."""
    update: dict[str, Any] = {
        "state": record.state,
        "step": record.step,
        "step_description": record.step_description,
        "elapsed_s": record.elapsed_s,
    }
    if record.values:  # merged: a status carries V and I, samples also P and T
        update["values"] = {**previous_values, **_last_values(record.values)}
    for key in ("run", "protocol", "cell"):
        if key in record.context:
            update[key] = record.context[key]
    return update


@dataclass(slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    properties: Properties | None = None
    kind: str = "event"


def _properties(**values: Any) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def _user_property(properties: Properties | None) -> str | None:
    for name, value in getattr(properties, "UserProperty", None) or []:
        if name == USER_PROPERTY:
            return value
    return None


# --- the agent's link ----------------------------------------------------------------------------


class MqttLink:
    """One agent's MQTT connection: publishes its stations' records and status, executes commands.

    Args:
        settings: broker address, credentials, TLS, lab and telemetry rate.
        client_id: the MQTT client id, unique in the lab (e.g. the bench PC's name).
        stations: the stations this agent runs; their cmd topics are subscribed.
        allowed_users: per station, the "labctl-user" values whose commands are executed; None: any user
            the broker let through (the broker ACL is then the only check).
        handler: executes valid, authorized, new commands; None refuses every command.

    The constructor does no I/O; `async with` starts the background connection (it does not wait for
    the broker: the run goes on while the broker is away).
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        stations: Sequence[str],
        allowed_users: Mapping[str, Collection[str]] | None = None,
        handler: CommandHandler | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.stations = list(stations)
        self.allowed_users = (
            None if allowed_users is None else {s: frozenset(users) for s, users in allowed_users.items()}
        )
        self.handler = handler
        self._cmd_topics = {topic(settings.lab, s, "cmd"): s for s in self.stations}
        self._agent_topic = agent_topic(settings.lab, client_id)
        self._status: dict[str, dict[str, Any]] = {
            s: {"station": s, "lab": settings.lab, "agent": client_id, "state": "idle"} for s in self.stations
        }
        self._status_dirty: set[str] = set()
        self._status_published_at: dict[str, float] = {}
        self._ledgers = {s: CommandLedger() for s in self.stations}
        self._last_telemetry: dict[tuple[str, str], float] = {}
        self._min_interval = 1.0 / settings.telemetry_hz
        # Outgoing: statuses are coalesced per station (latest wins); events and replies before telemetry.
        self._priority: deque[_Outgoing] = deque()
        self._telemetry: deque[_Outgoing] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._connected = False
        self._connected_event = asyncio.Event()
        self._closing = False
        self._password: str | None = None
        self._tls: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.dropped: Counter[str] = Counter()
        """Messages dropped because the outgoing queue was full, by kind (telemetry, event, reply)."""
        self.rate_limited = 0
        """Samples not sent as telemetry because of telemetry_hz."""

    # lifetime -------------------------------------------------------------------------------------

    async def __aenter__(self) -> MqttLink:
        if self._task is not None:
            raise RuntimeError("an MqttLink cannot be entered twice")
        # Fail fast on configuration errors; network errors are the background task's business.
        self._password = self.settings.read_password()
        self._tls = self.settings.tls_context()
        self._task = asyncio.create_task(self._keep_connected(), name=f"mqtt-link-{self.client_id}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True
        for station in self.stations:
            self.set_status(station, {"state": "offline"})
        if self._connected:
            # A clean DISCONNECT suppresses the will, so say "offline" ourselves; bounded.
            self._queue_agent_status("offline")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._idle.wait()
        for task in [*self._handlers, self._task]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*self._handlers, *(t for t in [self._task] if t), return_exceptions=True)
        self._task = None

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now."""
        return self._connected

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Return once connected (for tools and tests); TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            await self._connected_event.wait()

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far is handed to the broker; False if not within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # records and status in ------------------------------------------------------------------------

    def publisher(self, station: str) -> Callable[[object], None]:
        """A Bus listener for `station`: quick, never blocks, never raises (it only queues)."""
        if station not in self._status:
            raise ConfigError(f"station {station!r} is not one of this agent's stations")
        telemetry_topic = topic(self.settings.lab, station, "telemetry")
        event_topic = topic(self.settings.lab, station, "event")

        def listener(record: object) -> None:
            try:
                if isinstance(record, Sample):
                    self._on_sample(station, telemetry_topic, record)
                elif isinstance(record, Event):
                    payload = record_payload(station, self._status[station].get("run"), record)
                    self._enqueue(_Outgoing(event_topic, _json(payload), qos=1, kind="event"))
                elif isinstance(record, Status):
                    self.set_status(station, status_update(record, self._status[station].get("values", {})))
            except Exception:  # a listener must never raise into the run (bus.py)
                log.exception("MQTT publisher for %s could not queue %r", station, type(record).__name__)

        return listener

    def _on_sample(self, station: str, telemetry_topic: str, sample: Sample) -> None:
        now = time.monotonic()
        status = self._status[station]
        if sample.kind == "dc":
            status["values"] = {**status.get("values", {}), **_last_values(sample.values)}
            status["step"] = sample.step
            if now - self._status_published_at.get(station, -math.inf) >= STATUS_VALUES_INTERVAL_S:
                self._mark_status(station)
        key = (station, sample.kind)
        if now - self._last_telemetry.get(key, -math.inf) < self._min_interval:
            self.rate_limited += 1
            return
        self._last_telemetry[key] = now
        payload = record_payload(station, status.get("run"), sample)
        properties = _properties(MessageExpiryInterval=TELEMETRY_EXPIRY_S)
        item = _Outgoing(telemetry_topic, _json(payload), qos=0, properties=properties, kind="telemetry")
        self._enqueue(item)

    def set_status(self, station: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into the station's retained status and publish it (coalesced, never blocks).

        Keys: state (idle/running/paused/alarm/done/offline), protocol, run, step, elapsed_s,
        values (last V/I/P/T as voltage_v …), alarm (message); `updated` is set here.
        """
        if station not in self._status:
            raise ConfigError(f"station {station!r} is not one of this agent's stations")
        self._status[station].update(status)
        self._mark_status(station)

    def _mark_status(self, station: str) -> None:
        self._status_dirty.add(station)
        self._idle.clear()
        self._wakeup.set()

    def _enqueue(self, item: _Outgoing) -> None:
        queue = self._telemetry if item.kind == "telemetry" else self._priority
        queue.append(item)
        while len(self._priority) + len(self._telemetry) > OUTGOING_QUEUE_MAX:
            victim = (self._telemetry or self._priority).popleft()
            self.dropped[victim.kind] += 1
            if self.dropped[victim.kind] in (1, 100) or self.dropped[victim.kind] % 10_000 == 0:
                log.warning(
                    "MQTT outgoing queue full (%d, broker %s): %d %s messages dropped so far",
                    OUTGOING_QUEUE_MAX,
                    "connected" if self._connected else "away",
                    self.dropped[victim.kind],
                    victim.kind,
                )
        self._idle.clear()
        self._wakeup.set()

    def _queue_agent_status(self, state: str) -> None:
        payload = {
            "agent": self.client_id,
            "state": state,
            "stations": self.stations,
            "updated": _iso(time.time_ns()),
        }
        self._enqueue(_Outgoing(self._agent_topic, _json(payload), qos=1, retain=True, kind="status"))

    def _next_status(self) -> _Outgoing | None:
        if not self._status_dirty:
            return None
        station = next(iter(self._status_dirty))
        self._status_dirty.discard(station)
        status = self._status[station]
        status["updated"] = _iso(time.time_ns())
        self._status_published_at[station] = time.monotonic()
        return _Outgoing(
            topic(self.settings.lab, station, "status"), _json(status), qos=1, retain=True, kind="status"
        )

    # the connection -------------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(
            self._agent_topic,
            _json({"agent": self.client_id, "state": "offline", "stations": self.stations}),
            qos=1,
            retain=True,
        )
        return aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=self.settings.username,
            password=self._password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            keepalive=self.settings.keepalive_s,
            tls_context=self._tls,
            tls_insecure=self.settings.tls_insecure if self._tls else None,
            logger=log,
        )

    async def _keep_connected(self) -> None:
        """Connect, serve, and reconnect with capped exponential back-off (aiomqtt docs/reconnection.md)."""
        delay = self.settings.reconnect_initial_s
        while True:
            try:
                async with self._client() as client:
                    log.info("MQTT connected to %s as %s", self.settings.public_address, self.client_id)
                    delay = self.settings.reconnect_initial_s
                    await self._serve(client)
            except* aiomqtt.MqttError as group:
                reason = "; ".join(str(e) for e in group.exceptions)
                log.warning("MQTT %s: %s; retrying in %.1f s", self.settings.public_address, reason, delay)
            except* Exception:  # a bug here must not end the link for the rest of the run
                log.exception("MQTT link failed; reconnecting in %.1f s", delay)
            finally:
                self._connected = False
                self._connected_event.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)
            if self.settings.password_file is not None:
                try:  # a rotated password is picked up on reconnect
                    self._password = self.settings.read_password()
                except ConfigError as exc:
                    log.error("%s (keeping the previous password)", exc)

    async def _serve(self, client: aiomqtt.Client) -> None:
        for cmd_topic in self._cmd_topics:
            codes = await client.subscribe(cmd_topic, qos=1)
            if any(getattr(code, "value", code) >= 0x80 for code in codes):
                log.error(
                    "MQTT broker refused the subscription to %s (ACL?): commands will not arrive", cmd_topic
                )
        # Everything said before the connection was (re)made: agent online, every station's status.
        self._queue_agent_status("online")
        self._status_dirty.update(self.stations)
        self._connected = True
        self._connected_event.set()
        self._wakeup.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._send_loop(client))
            async for message in client.messages:
                self._on_message(message)
        # the message iterator ends only by an error (raised above)

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        while True:
            item = self._next_status()
            if item is None:
                queue = self._priority or self._telemetry
                if not queue:
                    self._idle.set()
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                item = queue[0]
            else:
                queue = None
            try:
                await client.publish(
                    item.topic, item.payload, qos=item.qos, retain=item.retain, properties=item.properties
                )
            except aiomqtt.MqttError:
                if queue is None:  # a status not sent is sent again after the reconnect
                    self._status_dirty.add(item.topic.split("/")[2])
                raise
            if queue is not None and queue and queue[0] is item:
                queue.popleft()

    # commands -------------------------------------------------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        station = self._cmd_topics.get(message.topic.value)
        if station is None:
            log.warning("MQTT message on unexpected topic %s ignored", message.topic.value)
            return
        task = asyncio.create_task(self._handle(station, message), name=f"mqtt-cmd-{station}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, station: str, message: aiomqtt.Message) -> None:
        properties = message.properties
        user = _user_property(properties)
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        try:
            reply = await self._execute(station, user, message.payload)
        except Exception as exc:  # the handler's bug must not kill the link
            log.exception("command handler failed on station %s", station)
            reply = Reply(id="", ok=False, message=f"command failed in the agent: {exc}")
        log.info(
            "command on %s from %s: %s %s → %s",
            station,
            user or "?",
            reply.id or "?",
            "ok" if reply.ok else "refused",
            reply.message,
        )
        if not response_topic:
            return
        if not isinstance(response_topic, str) or re.search(r"[+#\x00]", response_topic):
            log.warning("reply topic %r is not a plain topic; reply not sent", response_topic)
            return
        extra = {"CorrelationData": correlation} if correlation else {}
        properties = _properties(MessageExpiryInterval=REPLY_EXPIRY_S, **extra)
        self._enqueue(
            _Outgoing(response_topic, _json(reply.model_dump()), qos=1, properties=properties, kind="reply")
        )

    async def _execute(self, station: str, user: str | None, payload: Any) -> Reply:
        parsed = parse_command(payload)
        if isinstance(parsed, Reply):
            return parsed
        command = parsed
        if self.allowed_users is not None and user not in self.allowed_users.get(station, frozenset()):
            return Reply(
                id=command.id, ok=False, message=f"user {user or '(none)'} may not control station {station}"
            )
        if self.handler is None:
            return Reply(id=command.id, ok=False, message=f"station {station} accepts no commands")
        future, first = self._ledgers[station].claim(command)
        if not first:
            if future.cancelled():
                return Reply(
                    id=command.id, ok=False, message=f"command {command.id} was interrupted; use a new id"
                )
            return await asyncio.shield(future)
        try:
            reply = await self.handler(station, command)
            if reply.id != command.id:
                reply = reply.model_copy(update={"id": command.id})
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            log.exception("command %s on station %s failed", command.id, station)
            reply = Reply(id=command.id, ok=False, message=f"{command.action} failed: {exc}")
        future.set_result(reply)
        return reply


# --- the operator's client -----------------------------------------------------------------------


class LabClient:
    """Send commands to stations and read their statuses (for `labctl submit`/`status` and the TUI).

    Args:
        settings: broker address, credentials, TLS and lab.
        client_id: the MQTT client id; a random one when None. Replies come to
            "labctl/<lab>/clients/<client_id>/reply".
        on_message: called with (topic, JSON object) for every message received on a subscription
            other than the reply topic ({} for a cleared retained message); for watchers such as the
            TUI, which `subscribe` to more topics. It must not block; its exceptions are logged.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str | None = None,
        on_message: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_message = on_message
        self.client_id = client_id or f"labctl-{uuid.uuid4().hex[:12]}"
        self.reply_topic = reply_topic(settings.lab, self.client_id)
        self._client: aiomqtt.Client | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._pending: dict[bytes, asyncio.Future[Reply]] = {}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._agents: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> LabClient:
        password = self.settings.read_password()
        client = aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=self.settings.username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=self.settings.keepalive_s,
            tls_context=self.settings.tls_context(),
            tls_insecure=self.settings.tls_insecure if self.settings.tls else None,
            logger=log,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            address = self.settings.public_address
            raise BrokerError(f"cannot connect to the MQTT broker {address}: {exc}") from None
        self._client = client
        self._receiver = asyncio.create_task(self._receive(client), name=f"labclient-{self.client_id}")
        try:
            await self._subscribe(self.reply_topic)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
            self._receiver = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    def _require(self) -> aiomqtt.Client:
        if self._client is None:
            raise RuntimeError("use LabClient in `async with`")
        return self._client

    async def subscribe(self, subscription: str) -> None:
        """Subscribe to more topics (e.g. "labctl/<lab>/+/telemetry"); their messages go to `on_message`.

        Raises:
            BrokerError: the broker refused the subscription (ACL) or the connection failed.
        """
        await self._subscribe(subscription)

    async def wait_closed(self) -> None:
        """Return when the broker connection has ended (broker gone, network lost); not before."""
        if self._receiver is not None:
            await asyncio.wait([self._receiver])

    async def _subscribe(self, subscription: str) -> None:
        try:
            codes = await self._require().subscribe(subscription, qos=1)
        except aiomqtt.MqttError as exc:
            raise BrokerError(
                f"MQTT broker {self.settings.public_address}: subscribing to {subscription}: {exc}"
            ) from None
        if any(getattr(code, "value", code) >= 0x80 for code in codes):
            raise BrokerError(
                f"the MQTT broker refused {self.settings.username or 'anonymous'} reading {subscription}; "
                "check the broker's ACL"
            )

    async def _receive(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the connection ended: pending sends time out
            async for message in client.messages:
                name = message.topic.value
                if name == self.reply_topic:
                    self._on_reply(message)
                    continue
                parts = name.split("/")
                try:
                    data = json.loads(message.payload or b"{}")
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if self.on_message is not None:
                    try:
                        self.on_message(name, data)
                    except Exception:  # a watcher's bug must not end the receiving
                        log.exception("LabClient on_message failed for %s", name)
                if len(parts) == 5 and parts[2] == "agents":
                    self._agents[parts[3]] = data
                elif len(parts) == 4 and parts[3] == "status":
                    if message.payload:
                        self._statuses[parts[2]] = data
                    else:
                        self._statuses.pop(parts[2], None)

    def _on_reply(self, message: aiomqtt.Message) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        future = self._pending.get(bytes(correlation)) if correlation else None
        if future is None or future.done():
            return
        try:
            future.set_result(Reply.model_validate_json(message.payload))
        except ValidationError as exc:
            future.set_result(Reply(id="", ok=False, message=f"the agent's reply is malformed: {exc}"))

    async def send(self, station: str, command: Command, *, timeout_s: float = 10.0) -> Reply:
        """Send `command` to `station` and return its reply.

        Raises:
            NoReplyError: no reply within `timeout_s` s (the message says what the station's status suggests).
            BrokerError: the broker connection failed.
        """
        client = self._require()
        status_topic = topic(self.settings.lab, station, "status")
        await self._subscribe(status_topic)  # to explain a missing reply
        await self._subscribe(f"labctl/{self.settings.lab}/agents/+/status")
        correlation = uuid.uuid4().bytes
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        user_properties = [(USER_PROPERTY, self.settings.username)] if self.settings.username else []
        properties = _properties(ResponseTopic=self.reply_topic, CorrelationData=correlation)
        if user_properties:
            properties.UserProperty = user_properties
        try:
            await client.publish(
                topic(self.settings.lab, station, "cmd"),
                command.model_dump_json(exclude_none=True),
                qos=1,
                properties=properties,
            )
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise NoReplyError(self._explain_no_reply(station, command, timeout_s)) from None
        except aiomqtt.MqttError as exc:
            raise BrokerError(f"MQTT broker {self.settings.public_address}: {exc}") from None
        finally:
            self._pending.pop(correlation, None)

    def _explain_no_reply(self, station: str, command: Command, timeout_s: float) -> str:
        head = (
            f"station {station} did not answer command {command.id} ({command.action}) within {timeout_s:g} s"
        )
        status = self._statuses.get(station)
        agent = self._agents.get(str(status.get("agent"))) if status else None
        user = self.settings.username or "anonymous"
        if status is None:
            return (
                f"{head}: no status from it either — no agent runs it, or user {user} may not read "
                f"labctl/{self.settings.lab}/{station}/status"
            )
        if status.get("state") == "offline" or (agent is not None and agent.get("state") == "offline"):
            return f"{head}: its agent {status.get('agent', '?')} is offline"
        return (
            f"{head}, although its agent is online: the broker probably refused the command — may user "
            f"{user} write labctl/{self.settings.lab}/{station}/cmd (ACL)?"
        )

    async def statuses(self, *, wait_s: float = 1.0) -> dict[str, dict[str, Any]]:
        """The retained status of every station of the lab, collected for `wait_s` s.

        A station whose agent is offline (its will fired) is reported with state "offline".
        """
        lab = self.settings.lab
        await self._subscribe(f"labctl/{lab}/agents/+/status")
        await self._subscribe(f"labctl/{lab}/+/status")
        await asyncio.sleep(wait_s)  # retained messages arrive right after the subscription; no end marker
        result = {}
        for station, status in sorted(self._statuses.items()):
            status = dict(status)
            agent = self._agents.get(str(status.get("agent")))
            if agent is not None and agent.get("state") == "offline" and status.get("state") != "offline":
                status["last_state"] = status.get("state")
                status["state"] = "offline"
            result[station] = status
        return result
