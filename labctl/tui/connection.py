"""Where the terminal UI's data comes from and where its commands go: a whole lab or one local agent.

- `MqttConnection` (`labctl tui --broker`) watches every station of a lab on the broker: it subscribes
  to the status, telemetry and event topics of all stations and to the agents' liveness (their last
  wills), feeds a `LabModel`, and sends commands with `labctl.data.mqtt.LabClient` (request/reply with
  MQTT 5 correlation data). It keeps reconnecting with capped exponential back-off and says so in
  `model.connected` / `model.connection_message`; the UI keeps showing the last known state meanwhile.
- `LocalConnection` (`labctl tui --config bench.toml`) runs the bench file's agent in this process
  (its stations, simulated or real) with a status link that feeds the model directly: no broker.

Both are async context managers; `send` never raises for a station's or the broker's trouble, it
returns a refusal (`Reply(ok=False)`) whose message says what happened.

No Textual here: connections are tested without a UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from labctl.agent import Agent, AgentConfig, StatusLink
from labctl.data import Event, Sample, Status
from labctl.data.mqtt import (
    BrokerError,
    Command,
    LabClient,
    MqttSettings,
    Reply,
    record_payload,
    status_update,
)
from labctl.errors import LabctlError
from labctl.tui.model import LabModel

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
"""How long `MqttConnection.send` waits for a station's reply."""
AGENT_OFFLINE_GRACE_S = 3.0
"""An agent's will is shown only if our own connection outlives it by this long: a broker shutting
down fires every agent's will just before it drops us, and that is not the agents' fault."""


class LabConnection(Protocol):
    """What the app talks to: a model kept up to date while entered, and a way to send commands."""

    model: LabModel

    async def __aenter__(self) -> LabConnection: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def send(self, station: str, command: Command) -> Reply:
        """Send `command` to `station`; a refusal (ok=False) says why it was not done."""
        ...

    @property
    def description(self) -> str:
        """What the header shows: "lab 'lab' via mqtt://…" or "local agent bench.toml"."""
        ...


def new_command(action: str, **fields: Any) -> Command:
    """A command with a fresh id, e.g. `new_command("abort", note="cell swelled")`.

    Raises:
        pydantic.ValidationError: a field does not fit the action (e.g. `protocol` with pause).
    """
    return Command(id=f"tui-{uuid.uuid4().hex[:20]}", action=action, **fields)  # type: ignore[arg-type]


# --- the lab through the broker -----------------------------------------------------------------


class MqttConnection:
    """A whole lab through its MQTT broker: every station's status, telemetry and events; commands.

    Args:
        settings: broker address, credentials, TLS and lab (`MqttSettings.from_env`).
        model: the model to feed (a new one by default).
        command_timeout_s: how long `send` waits for a reply.
        agent_offline_grace_s: how long an agent's "offline" (its will) waits before the model shows it;
            dropped if our connection ends meanwhile (a broker shutting down fires every will).

    The constructor does no I/O; `async with` starts the background connection and returns at once
    (the broker may be away: the model says so and the connection keeps trying).
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        model: LabModel | None = None,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        agent_offline_grace_s: float = AGENT_OFFLINE_GRACE_S,
    ) -> None:
        self.settings = settings
        self.model = model or LabModel()
        self.command_timeout_s = command_timeout_s
        self.agent_offline_grace_s = agent_offline_grace_s
        self._offline_pending: dict[str, asyncio.TimerHandle] = {}
        self._client: LabClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._prefix = f"labctl/{settings.lab}/"

    @property
    def description(self) -> str:
        """The lab and the broker (user, never the password)."""
        return f"lab '{self.settings.lab}' via {self.settings.public_address}"

    async def __aenter__(self) -> MqttConnection:
        if self._task is not None:
            raise RuntimeError("an MqttConnection cannot be entered twice")
        self.model.set_connection(False, f"connecting to {self.settings.public_address}")
        self._task = asyncio.create_task(self._keep_connected(), name="tui-mqtt")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop_pending_offline()
        self.model.set_connection(False, "disconnected")

    def _drop_pending_offline(self) -> None:
        for handle in self._offline_pending.values():
            handle.cancel()
        self._offline_pending.clear()

    def _on_agent(self, agent: str, data: dict[str, Any]) -> None:
        handle = self._offline_pending.pop(agent, None)
        if handle is not None:
            handle.cancel()
        if data.get("state") == "offline" and self.agent_offline_grace_s > 0:
            loop = asyncio.get_running_loop()
            self._offline_pending[agent] = loop.call_later(
                self.agent_offline_grace_s, self._agent_offline, agent, data
            )
        else:
            self.model.apply_agent(agent, data)

    def _agent_offline(self, agent: str, data: dict[str, Any]) -> None:
        self._offline_pending.pop(agent, None)
        self.model.apply_agent(agent, data)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Return once connected and subscribed (tools and tests); TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    async def send(self, station: str, command: Command) -> Reply:
        """Send a command and wait for the station's reply; a refusal when there is none (it says why)."""
        client = self._client
        if client is None:
            return Reply(
                id=command.id,
                ok=False,
                message=f"not sent: {self.model.connection_message} (the command was not sent)",
            )
        try:
            return await client.send(station, command, timeout_s=self.command_timeout_s)
        except BrokerError as exc:  # NoReplyError included: its message says what the status suggests
            return Reply(id=command.id, ok=False, message=str(exc))

    async def _keep_connected(self) -> None:
        """Connect, subscribe, feed the model until the connection ends; again after a back-off."""
        delay = self.settings.reconnect_initial_s
        address = self.settings.public_address
        while True:
            try:
                async with LabClient(self.settings, on_message=self._on_message) as client:
                    for leaf in ("status", "telemetry", "event"):
                        await client.subscribe(f"{self._prefix}+/{leaf}")
                    await client.subscribe(f"{self._prefix}agents/+/status")
                    self._client = client
                    self._connected.set()
                    self.model.set_connection(True, f"connected to {address}")
                    delay = self.settings.reconnect_initial_s
                    await client.wait_closed()
                    reason = "connection lost"
            except (LabctlError, OSError) as exc:  # BrokerError: unreachable, refused; ConfigError
                reason = str(exc)
            finally:
                self._client = None
                self._connected.clear()
                self._drop_pending_offline()
            log.warning("%s: %s; reconnecting in %.1f s", address, reason, delay)
            self.model.set_connection(False, f"broker unreachable ({reason}): reconnecting in {delay:.3g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)
            self.model.set_connection(False, f"reconnecting to {address}")

    def _on_message(self, topic: str, data: dict[str, Any]) -> None:
        """Route one message of the lab to the model (called by LabClient's receiver; never blocks)."""
        if not topic.startswith(self._prefix):
            return
        parts = topic[len(self._prefix) :].split("/")
        if len(parts) == 3 and parts[0] == "agents" and parts[2] == "status":
            self._on_agent(parts[1], data)
        elif len(parts) == 2 and parts[0] not in ("agents", "clients"):
            station, leaf = parts
            if leaf == "status":
                self.model.apply_status(station, data)
            elif leaf == "telemetry":
                self.model.apply_telemetry(station, data)
            elif leaf == "event":
                self.model.apply_event(station, data)


# --- one agent in this process -------------------------------------------------------------------


class ModelLink(StatusLink):
    """An agent's status link that feeds a `LabModel` directly (the local TUI; no broker).

    It gives the model the same payloads an `MqttLink` publishes (docs/mqtt.md), without the rate
    limit: every kept sample reaches the model.

    Args:
        model: the model to feed.
        lab: the lab's name (in the status, as over MQTT).
        agent: the agent's name (in the status).
    """

    def __init__(self, model: LabModel, *, lab: str = "lab", agent: str = "local") -> None:
        self.model = model
        self.lab = lab
        self.agent = agent
        self._status: dict[str, dict[str, Any]] = {}

    def set_status(self, station: str, status: Mapping[str, Any]) -> None:
        """Merge into the station's status and hand the whole of it to the model."""
        merged = self._status.setdefault(
            station, {"station": station, "lab": self.lab, "agent": self.agent, "state": "idle"}
        )
        merged.update(status)
        self.model.apply_status(station, merged)

    def publisher(self, station: str) -> Callable[[object], None]:
        """A bus listener for `station`: samples, events and run statuses into the model; never raises."""

        def listener(record: object) -> None:
            try:
                status = self._status.get(station, {})
                if isinstance(record, Sample):
                    self.model.apply_telemetry(station, record_payload(station, status.get("run"), record))
                elif isinstance(record, Event):
                    self.model.apply_event(station, record_payload(station, status.get("run"), record))
                elif isinstance(record, Status):
                    self.set_status(station, status_update(record, status.get("values", {})))
            except Exception:  # a listener must never raise into the run (labctl.data.bus)
                log.exception("TUI model could not take a %s of %s", type(record).__name__, station)

        return listener


class LocalConnection:
    """The stations of one bench file, run by an agent in this process; no broker needed.

    Commands go straight to `Agent.handle` (whoever sits at this terminal may control these
    stations: the bench file's `allowed_users` is for commands over MQTT).

    Args:
        config: the bench file (`AgentConfig.load`).
        model: the model to feed (a new one by default).
        environ: where secrets come from (an [influx] section's token), default os.environ.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        model: LabModel | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.model = model or LabModel()
        self.agent = Agent(config, environ=environ)
        self.link = ModelLink(self.model, lab=config.agent.lab, agent=config.agent.name or "local")
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def description(self) -> str:
        """The bench file this agent runs."""
        return f"local agent {self.config.path.name if self.config.path else 'bench'}"

    async def __aenter__(self) -> LocalConnection:
        if self._task is not None:
            raise RuntimeError("a LocalConnection cannot be entered twice")
        self._task = asyncio.create_task(self.agent.run(self.link, self._stop), name="tui-local-agent")
        await asyncio.sleep(0)  # Agent.run has taken the link and published every station idle
        names = ", ".join(self.agent.stations)
        self.model.set_connection(True, f"local agent running {names}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the agent: every run is aborted through the engine (station safe, result written)."""
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            await task
        self.model.set_connection(False, "local agent stopped")

    async def send(self, station: str, command: Command) -> Reply:
        """Execute a command on one of the local stations."""
        if self._task is None or self.agent.link is None:
            return Reply(id=command.id, ok=False, message="the local agent is not running")
        return await self.agent.handle(station, command)


# --- protocols --------------------------------------------------------------------------------------


def validate_protocol(path: Path) -> str | None:
    """None when the protocol file compiles; else the compiler's message(s) (file:line: …)."""
    from labctl.protocol import compile_file

    try:
        compile_file(path)
    except LabctlError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def protocol_files(root: Path) -> list[Path]:
    """The protocol library for the file picker: `root/protocols/*.yaml` (or `root/*.yaml`), sorted."""
    folder = root / "protocols" if (root / "protocols").is_dir() else root
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
