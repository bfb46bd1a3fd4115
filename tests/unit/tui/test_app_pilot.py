"""The TUI driven by Textual's Pilot against a fake connection: every binding, dialog and view."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message
from textual.notifications import Notify
from textual.widgets import Input, OptionList, Static

from labctl.data.mqtt import Command, Reply
from labctl.tui.alarm_banner import AlarmBanner
from labctl.tui.app import LabApp
from labctl.tui.dialogs import ConfirmDialog, NoteDialog, ProtocolPicker
from labctl.tui.station_screen import StationScreen
from labctl.tui.station_table import StationTable
from tests.unit.tui.fakes import FakeConnection, lab, protocols


class RecordingApp(LabApp):
    """The app, counting bells (a terminal bell cannot be heard in a test)."""

    bells = 0

    def bell(self) -> None:
        self.bells += 1


def make_app(tmp_path: Path, connection: FakeConnection | None = None) -> tuple[RecordingApp, list[str]]:
    notes: list[str] = []

    def hook(message: Message) -> None:
        if isinstance(message, Notify):
            notes.append(message.notification.message)

    app = RecordingApp(connection or FakeConnection(lab(4)), protocols=protocols(tmp_path))
    app._test_hook = hook  # type: ignore[attr-defined]
    return app, notes


async def settle(app: LabApp) -> None:
    """Wait for the commands in flight (not the connection's worker, which lives as long as the app)."""
    commands = [w for w in app.workers if w.group == "commands"]
    if commands:  # an empty list would mean "every worker"
        await app.workers.wait_for_complete(commands)
    app.redraw()


async def test_lab_view_lists_every_station_with_state_and_values(tmp_path):
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(120, 30)):
        table = app.query_one(StationTable)
        assert table.row_count == 4
        row = [cell.plain for cell in table.get_row("cell-3")]
        assert row[:2] == ["cell-3", "paused"]
        assert "12:34:56 +2:00:00" in row  # elapsed and remaining
        assert "-0.0224" in row and "7" in row and "60.0" in row  # V, MPa, °C
        topbar = str(app.query_one("#topbar", Static).render())
        assert "fake lab" in topbar and "connected" in topbar


async def test_redraw_only_rewrites_cells_that_changed(tmp_path):
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(StationTable)
        updated: list[tuple[object, object]] = []
        original = table.update_cell
        table.update_cell = lambda row, column, value, **kw: (  # type: ignore[method-assign]
            updated.append((row, column)),
            original(row, column, value, **kw),
        )
        app.redraw()
        assert updated == []  # same version: nothing to do
        app.model.apply_status("cell-2", {**app.model.stations["cell-2"].status, "state": "running"})
        await pilot.pause(0.15)  # one 10 Hz tick
        assert ("cell-2", "state") in updated
        assert all(row == "cell-2" for row, _ in updated)


async def test_start_via_picker_shows_a_validation_error_and_starts_a_valid_file(tmp_path):
    connection = FakeConnection(lab(4))
    app, notes = make_app(tmp_path, connection)
    async with app.run_test(size=(100, 30), message_hook=app._test_hook) as pilot:  # type: ignore[attr-defined]
        await pilot.press("down")  # cursor on cell-2 (idle)
        await pilot.press("s")
        picker = app.screen
        assert isinstance(picker, ProtocolPicker)
        await pilot.pause()
        verdict = picker.query_one("#verdict", Static)
        assert verdict.has_class("-error")  # broken.yaml sorts first and is highlighted
        assert "broken.yaml" in str(verdict.render())
        await pilot.press("enter")  # refused: nothing starts
        assert app.screen is picker and connection.sent == []
        assert app.bells >= 1
        await pilot.press("down")  # ccd.yaml
        assert verdict.has_class("-ok")
        await pilot.press("enter")
        await settle(app)
        assert not isinstance(app.screen, ProtocolPicker)
        station, command = connection.sent[-1]
        assert station == "cell-2" and command.action == "start"
        assert command.protocol == (tmp_path / "protocols" / "ccd.yaml").read_text()
        assert any("cell-2: start ccd.yaml: start: done" in note for note in notes)


async def test_start_picker_escape_sends_nothing(tmp_path):
    connection = FakeConnection(lab(4))
    app, _ = make_app(tmp_path, connection)
    async with app.run_test() as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, ProtocolPicker)
        await pilot.press("escape")
        await settle(app)
        assert not isinstance(app.screen, ProtocolPicker)
        assert connection.sent == []


async def test_pause_and_resume_send_commands_and_show_replies(tmp_path):
    connection = FakeConnection(lab(4))
    app, notes = make_app(tmp_path, connection)
    async with app.run_test(message_hook=app._test_hook) as pilot:  # type: ignore[attr-defined]
        await pilot.press("p")
        await settle(app)
        await pilot.press("r")
        await settle(app)
        assert [(s, c.action) for s, c in connection.sent] == [("cell-1", "pause"), ("cell-1", "resume")]
        assert "cell-1: pause: pause: done" in notes and "cell-1: resume: resume: done" in notes


async def test_a_refusal_is_shown_with_its_message(tmp_path):
    def refuse(station: str, command: Command) -> Reply:
        return Reply(id=command.id, ok=False, message=f"{station} is not running")

    connection = FakeConnection(lab(4), reply=refuse)
    app, notes = make_app(tmp_path, connection)
    async with app.run_test(message_hook=app._test_hook) as pilot:  # type: ignore[attr-defined]
        await pilot.press("down", "p")
        await settle(app)
        assert "cell-2: pause refused: cell-2 is not running" in notes


async def test_abort_asks_first_and_only_yes_aborts(tmp_path):
    connection = FakeConnection(lab(4))
    app, notes = make_app(tmp_path, connection)
    async with app.run_test(message_hook=app._test_hook) as pilot:  # type: ignore[attr-defined]
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("p")  # control keys are suspended while a dialog is open
        await pilot.press("n")
        await settle(app)
        assert connection.sent == []
        await pilot.press("a")
        await pilot.press("enter")  # Enter is on "No": no accidental abort
        await settle(app)
        assert connection.sent == []
        await pilot.press("a", "y")
        await settle(app)
        station, command = connection.sent[-1]
        assert (station, command.action) == ("cell-1", "abort")
        assert "aborted from labctl tui" in (command.note or "")
        assert "cell-1: abort: abort: done" in notes


async def test_mark_asks_for_a_note_and_sends_it(tmp_path):
    connection = FakeConnection(lab(4))
    app, notes = make_app(tmp_path, connection)
    async with app.run_test(message_hook=app._test_hook) as pilot:  # type: ignore[attr-defined]
        await pilot.press("m")
        assert isinstance(app.screen, NoteDialog)
        await pilot.press(*"photo 12 taken, pressure ok")
        assert app.screen.query_one(Input).value == "photo 12 taken, pressure ok"
        await pilot.press("enter")
        await settle(app)
        station, command = connection.sent[-1]
        assert (station, command.action, command.note) == ("cell-1", "mark", "photo 12 taken, pressure ok")
        assert len(connection.sent) == 1  # the p, r and a typed into the note sent nothing
        assert "cell-1: mark: mark: done" in notes
        await pilot.press("m", "escape")
        await settle(app)
        assert len(connection.sent) == 1


async def test_alarm_banner_rings_and_stays_until_acknowledged(tmp_path):
    app, notes = make_app(tmp_path)
    async with app.run_test(message_hook=app._test_hook) as pilot:  # type: ignore[attr-defined]
        banner = app.query_one(AlarmBanner)
        assert banner.has_class("-active")
        assert "cell-1: short detected at 0.5 mA/cm²" in str(banner.render())
        assert app.bells == 1
        assert app.query_one(StationTable).get_row("cell-1")[0].style == "bold white on dark_red"
        await pilot.pause(0.3)
        assert app.bells == 1  # one bell per new alarm, not per redraw
        await pilot.press("k")
        await pilot.pause()
        assert app.model.stations["cell-1"].alarm_acknowledged
        assert not banner.has_class("-active")
        assert "acknowledged: cell-1" in notes
        assert app.query_one(StationTable).get_row("cell-1")[0].style == ""
        # a new alarm on another station rings again and shows again
        limit = {"t_ns": 1, "step": 12, "kind": "limit", "data": {"message": "V > 1 V"}}
        app.model.apply_event("cell-3", limit)
        await pilot.pause(0.15)
        assert banner.has_class("-active") and "cell-3: V > 1 V" in str(banner.render())
        assert app.bells == 2


async def test_broker_down_is_an_alarm_and_the_header_says_reconnecting(tmp_path):
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("k")  # the short on cell-1
        app.model.set_connection(False, "broker unreachable (connection refused): reconnecting in 2 s")
        await pilot.pause(0.15)
        banner = app.query_one(AlarmBanner)
        assert "lab: broker unreachable" in str(banner.render())
        assert "broker unreachable" in str(app.query_one("#topbar", Static).render())
        await pilot.press("k")
        await pilot.pause()
        assert not banner.has_class("-active")
        assert "broker unreachable" in str(app.query_one("#topbar", Static).render())  # still said
        app.model.set_connection(True, "connected to the fake lab")
        await pilot.pause(0.15)
        assert "● connected" in str(app.query_one("#topbar", Static).render())


async def test_station_view_opens_on_enter_and_the_window_key_cycles(tmp_path):
    connection = FakeConnection(lab(4))
    app, _ = make_app(tmp_path, connection)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, StationScreen) and screen.station == "cell-1"
        await pilot.pause(0.2)
        assert "CCD 0.4 mA/cm²" in str(screen.query_one("#results", Static).render())
        assert "short at 0.5 mA/cm²" in str(screen.query_one("#results", Static).render())
        assert "▶ 5 current ±0.5 mA/cm²" in str(screen.query_one("#steps", Static).render())
        assert "mark: glovebox O2 spike" in str(screen.query_one("#events", Static).render())
        windows = [screen.window[0]]
        for _ in range(4):
            await pilot.press("w")
            windows.append(screen.window[0])
        assert windows == ["5 min", "1 h", "12 h", "all", "5 min"]
        await pilot.press("p")  # control keys act on the station shown
        await settle(app)
        assert connection.sent[-1][0] == "cell-1" and connection.sent[-1][1].action == "pause"
        await pilot.press("escape")
        assert not isinstance(app.screen, StationScreen)


async def test_palette_commands_act_on_the_named_station(tmp_path):
    connection = FakeConnection(lab(4))
    app, _ = make_app(tmp_path, connection)
    async with app.run_test() as pilot:
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        for title in ("Start a protocol…", "Acknowledge all alarms", "Pause cell-3", "Resume cell-3"):
            assert title in commands
        assert {"Abort sim-1…", "Mark sim-1…", "Open sim-1", "Acknowledge alarm on cell-1"} <= set(commands)
        commands["Resume cell-3"].callback()
        await settle(app)
        assert (connection.sent[-1][0], connection.sent[-1][1].action) == ("cell-3", "resume")
        commands["Open sim-1"].callback()
        await pilot.pause()
        assert isinstance(app.screen, StationScreen) and app.screen.station == "sim-1"
        commands["Abort sim-1…"].callback()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settle(app)
        assert (connection.sent[-1][0], connection.sent[-1][1].action) == ("sim-1", "abort")


async def test_the_palette_opens_and_finds_station_commands(tmp_path):
    connection = FakeConnection(lab(4))
    app, _ = make_app(tmp_path, connection)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"pause cell-3")
        await pilot.pause(0.5)
        options = app.screen.query_one(OptionList)
        assert options.option_count >= 1
        await pilot.press("enter")
        await settle(app)
        assert (connection.sent[-1][0], connection.sent[-1][1].action) == ("cell-3", "pause")


async def test_quit_asks_while_runs_are_going(tmp_path):
    app, _ = make_app(tmp_path)
    async with app.run_test() as pilot:
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        assert app.is_running
