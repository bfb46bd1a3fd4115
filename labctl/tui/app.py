"""`labctl tui`: watch and operate every station of a lab from a terminal.

The app reads a `LabModel` that its connection (the broker, or an agent in this process) keeps up to
date, and redraws on a timer only when `model.version` changed. Commands go out through the
connection in workers; every reply is shown as a notification. The app never calls a driver.

Keys (lab view and station view alike; the palette, Ctrl+P, has the same commands per station):
Enter open the station · s start · p pause · r resume · a abort (confirm) · m mark · k acknowledge
alarms · w plot window (station view) · Escape back · q quit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static

from labctl.tui.alarm_banner import AlarmBanner
from labctl.tui.dialogs import ConfirmDialog, NoteDialog, ProtocolPicker, StartRequest
from labctl.tui.station_screen import StationScreen
from labctl.tui.station_table import StationTable

REFRESH_HZ = 10.0
"""How often the app looks at `model.version` (it redraws only when that changed)."""

CONTROL_ACTIONS = {"start", "pause", "resume", "abort", "mark", "acknowledge", "open_station", "quit"}
"""Actions that a modal dialog suspends (its own keys win while it is open)."""


class LabApp(App[None]):
    """The lab at a glance, one station in detail, and control of the runs.

    Args:
        connection: a `LabConnection` (labctl.tui.connection): `model`, `description`, `send`, and an
            async context manager that keeps the model up to date while open.
        protocols: the folder the protocol picker lists.
        validate: a protocol file's error message, or None if it is valid (default
            `labctl.tui.connection.validate_protocol`).
        protocol_files: the protocol files under a folder (default `labctl.tui.connection.protocol_files`).
    """

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses (tests) live elsewhere
    TITLE = "labctl"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("a", "abort", "Abort"),
        Binding("m", "mark", "Mark"),
        Binding("k", "acknowledge", "Ack"),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(
        self,
        connection: Any,
        protocols: Path = Path("protocols"),
        validate: Callable[[Path], str | None] | None = None,
        protocol_files: Callable[[Path], list[Path]] | None = None,
    ) -> None:
        super().__init__()
        self.connection = connection
        self.model = connection.model
        self.protocols = protocols
        if validate is None or protocol_files is None:
            from labctl.tui import connection as connections

            validate = validate or connections.validate_protocol
            protocol_files = protocol_files or connections.protocol_files
        self.validate_file = validate
        self.protocol_files = protocol_files
        self._drawn_version: int | None = None
        self._rung: set[tuple[str, str]] = set()
        self._broker_acknowledged = False
        self._was_connected = False

    # --- layout and redraw -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """The lab view: top line, alarm banner, station table, key hints."""
        yield Static("", id="topbar")
        yield AlarmBanner(id="banner")
        yield StationTable(id="stations")
        yield Footer()

    def on_mount(self) -> None:
        """Open the connection and start the redraw timer."""
        self.sub_title = str(getattr(self.connection, "description", ""))
        self._run_connection()
        self.set_interval(1 / REFRESH_HZ, self.redraw)
        self.redraw()

    @work(exclusive=True, group="connection")
    async def _run_connection(self) -> None:
        """Hold the connection open for the app's lifetime (the worker is cancelled at exit)."""
        import asyncio

        from labctl.errors import LabctlError

        try:
            async with self.connection:
                await asyncio.Event().wait()
        except LabctlError as exc:
            self.notify(str(exc), title="connection failed", severity="error", timeout=30)
            self.model.connected = False
            self.model.connection_message = str(exc)
            self.model.version += 1

    def on_resize(self) -> None:
        """Rebuild the table's columns for the new width at the next redraw."""
        self._drawn_version = None

    def on_screen_resume(self) -> None:
        """Back from the station view or a dialog: redraw at once."""
        self._drawn_version = None

    def redraw(self) -> None:
        """Redraw what shows the model, if `model.version` changed since the last redraw."""
        model = self.model
        version = model.version
        screen = self.screen
        if isinstance(screen, StationScreen):
            screen.show(model, time.monotonic())
        if version == self._drawn_version:
            return
        self._drawn_version = version
        if model.connected:
            self._was_connected = True
            self._broker_acknowledged = False
        alarms = self.alarms()
        new = {(source, message) for source, message in alarms} - self._rung
        if new:
            self.bell()
        self._rung = {(source, message) for source, message in alarms}
        for target in {self.screen_stack[0], screen}:
            for banner in target.query(AlarmBanner):
                banner.show_alarms(alarms)
            for bar in target.query("#topbar"):
                bar.update(self._topbar())  # type: ignore[attr-defined]
        self.query_one(StationTable).show(model.stations, self.size.width)

    def alarms(self) -> list[tuple[str, str]]:
        """Unacknowledged alarms as (source, message): stations by name, then the connection ("lab")."""
        alarms = [
            (name, str(view.alarm))
            for name, view in sorted(self.model.stations.items())
            if view.alarm and not view.alarm_acknowledged
        ]
        if not self.model.connected and not self._broker_acknowledged and self._lost_connection():
            alarms.append(("lab", self.model.connection_message or "broker unreachable — reconnecting"))
        return alarms

    def _lost_connection(self) -> bool:
        """True once a connection that was up went down, or a first connection failed with a message."""
        return self._was_connected or "unreachable" in self.model.connection_message

    def _topbar(self) -> Text:
        model = self.model
        text = Text()
        text.append(" labctl ", style="bold reverse")
        text.append(f" {getattr(self.connection, 'description', '')} ")
        if model.connected:
            text.append("● connected", style="green")
        else:
            text.append(f"✗ {model.connection_message or 'connecting…'}", style="bold red")
        states: dict[str, int] = {}
        for view in model.stations.values():
            states[str(view.state)] = states.get(str(view.state), 0) + 1
        summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        text.append(f"  {len(model.stations)} stations" + (f": {summary}" if summary else ""), style="dim")
        return text

    # --- navigation ----------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#stations")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_station(str(event.row_key.value))

    def open_station(self, station: str) -> None:
        """Push the station view of `station`."""
        if isinstance(self.screen, StationScreen):
            self.pop_screen()
        self.query_one(StationTable).select_station(station)
        self.push_screen(StationScreen(station))

    def selected_station(self) -> str | None:
        """The station the control keys act on: the station view's, or the row under the cursor."""
        screen = self.screen
        if isinstance(screen, StationScreen):
            return screen.station
        return self.query_one(StationTable).selected_station

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Control keys do nothing while a dialog is open (its own keys win)."""
        if action in CONTROL_ACTIONS and isinstance(self.screen, ModalScreen):
            return False
        return True

    # --- commands ----------------------------------------------------------------------------------

    def action_start(self, station: str | None = None) -> None:
        """Pick a protocol file (validated on the spot) and a station, then send `start`."""
        files = self.protocol_files(self.protocols)
        picker = ProtocolPicker(
            self.protocols,
            files,
            sorted(self.model.stations),
            station or self.selected_station(),
            self.validate_file,
        )

        def chosen(request: StartRequest | None) -> None:
            if request is not None:
                self.send(request.station, "start", protocol=request.text, what=f"start {request.path.name}")

        self.push_screen(picker, chosen)

    def action_pause(self, station: str | None = None) -> None:
        """Pause the run on the selected station (the station is made safe; resume continues the step)."""
        self._send_to(station, "pause")

    def action_resume(self, station: str | None = None) -> None:
        """Resume a paused run (also ends a `wait` step)."""
        self._send_to(station, "resume")

    def action_abort(self, station: str | None = None) -> None:
        """Ask for confirmation and a reason, then abort the run on the selected station."""
        target = station or self.selected_station()
        if target is None:
            self.notify("no station selected", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.send(target, "abort", note=f"aborted from labctl tui by {_user()}")

        self.push_screen(
            ConfirmDialog(f"Abort the run on {target}? The station is made safe.", "Abort"), confirmed
        )

    def action_mark(self, station: str | None = None) -> None:
        """Ask for a note and send it as a mark on the selected station's run."""
        target = station or self.selected_station()
        if target is None:
            self.notify("no station selected", severity="warning")
            return

        def noted(note: str | None) -> None:
            if note:
                self.send(target, "mark", note=note)

        self.push_screen(NoteDialog(f"Mark on {target}: note", "e.g. glovebox O2 spike"), noted)

    def action_acknowledge(self, station: str | None = None) -> None:
        """Acknowledge the alarm of the selected station, or every alarm if that station has none."""
        target = station or self.selected_station()
        stations = self.model.stations
        pending = [n for n, v in stations.items() if v.alarm and not v.alarm_acknowledged]
        names = [target] if target in pending else ([] if station else pending)
        for name in names:
            self.model.acknowledge(name)
        broker = not self.model.connected and not self._broker_acknowledged and self._lost_connection()
        if broker and station is None:
            self._broker_acknowledged = True
        if not names and not (broker and station is None):
            self.notify("no alarm to acknowledge")
            return
        acknowledged = ", ".join(names + (["lab connection"] if broker and station is None else []))
        self.notify(f"acknowledged: {acknowledged}")
        self._drawn_version = None
        self.redraw()

    def action_quit(self) -> None:  # type: ignore[override]
        """Quit; asks first while runs are going (an in-process agent's runs end with the TUI)."""
        busy = [n for n, v in self.model.stations.items() if v.state in ("running", "paused", "starting")]
        if not busy:
            self.exit()
            return
        question = (
            f"Quit labctl tui? {len(busy)} run(s) going. Over the broker they go on; with --config "
            "the agent runs inside this TUI and its runs are aborted (station safe)."
        )
        self.push_screen(ConfirmDialog(question, "Quit"), lambda yes: self.exit() if yes else None)

    def _send_to(self, station: str | None, action: str) -> None:
        target = station or self.selected_station()
        if target is None:
            self.notify("no station selected", severity="warning")
            return
        self.send(target, action)

    def send(self, station: str, action: str, *, what: str | None = None, **fields: Any) -> None:
        """Send one command to `station` and show its reply as a notification."""
        from labctl.tui.connection import new_command

        self._send(station, new_command(action, **fields), what or action)

    @work(group="commands")
    async def _send(self, station: str, command: Any, what: str) -> None:
        """Send in a worker, so the display goes on; several commands may be outstanding."""
        from labctl.errors import LabctlError

        try:
            reply = await self.connection.send(station, command)
        except (LabctlError, TimeoutError) as exc:
            self.notify(f"{station}: {what}: {exc}", title="no reply", severity="error", timeout=15)
            return
        if reply.ok:
            self.notify(f"{station}: {what}: {reply.message}", title="ok")
        else:
            self.notify(
                f"{station}: {what} refused: {reply.message}", title="refused", severity="error", timeout=15
            )

    # --- command palette -----------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's commands, then every control command for every station."""
        yield from super().get_system_commands(screen)
        selected = self.selected_station() if not isinstance(screen, ModalScreen) else None
        yield SystemCommand("Start a protocol…", "pick a protocol file and a station", self.action_start)
        yield SystemCommand("Acknowledge all alarms", "silence the banner", self._acknowledge_all)
        if isinstance(screen, StationScreen):
            yield SystemCommand("Plot window: next", "5 min → 1 h → 12 h → all", screen.action_cycle_window)
        names = sorted(self.model.stations)
        if selected in names:  # the selected station's commands first
            names.remove(selected)
            names.insert(0, selected)
        for name in names:
            yield SystemCommand(f"Open {name}", "the station view", partial(self.open_station, name))
            yield SystemCommand(f"Start on {name}…", "pick a protocol file", partial(self.action_start, name))
            yield SystemCommand(
                f"Pause {name}", "station safe; resume continues", partial(self.action_pause, name)
            )
            yield SystemCommand(f"Resume {name}", "also ends a wait step", partial(self.action_resume, name))
            yield SystemCommand(f"Abort {name}…", "asks first", partial(self.action_abort, name))
            yield SystemCommand(
                f"Mark {name}…", "a note in the run's journal", partial(self.action_mark, name)
            )
            yield SystemCommand(f"Acknowledge alarm on {name}", "", partial(self.action_acknowledge, name))

    def _acknowledge_all(self) -> None:
        for name, view in self.model.stations.items():
            if view.alarm and not view.alarm_acknowledged:
                self.model.acknowledge(name)
        if not self.model.connected:
            self._broker_acknowledged = True
        self._drawn_version = None
        self.redraw()


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "an operator"
