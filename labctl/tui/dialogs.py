"""Modal dialogs: confirm, a note, and the protocol picker that validates before anything starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 90%; max-width: 100; height: auto; max-height: 100%;
    border: thick $primary; background: $surface; padding: 0 1;
}}
{name} .buttons {{ height: auto; align-horizontal: right; }}
{name} Button {{ margin-left: 1; min-width: 10; }}
"""


class ConfirmDialog(ModalScreen[bool]):
    """Ask yes/no; dismisses with True only for an explicit yes (y or the button)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        """A question and two buttons; No has the focus, so Enter does not confirm by accident."""
        with Vertical():
            yield Label(Text(self.question), id="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        """Focus No."""
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)


class NoteDialog(ModalScreen[str | None]):
    """Ask for a line of text (a mark's note, an abort's reason); None when cancelled or left empty."""

    DEFAULT_CSS = DIALOG_CSS.format(name="NoteDialog")
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str, placeholder: str = "") -> None:
        super().__init__()
        self.prompt = prompt
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        """A prompt and an input; Enter sends, Escape cancels."""
        with Vertical():
            yield Label(Text(self.prompt))
            yield Input(placeholder=self.placeholder, max_length=2000, id="note")
            yield Label("Enter: send   Escape: cancel", classes="hint")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Close without a note."""
        self.dismiss(None)


@dataclass(frozen=True)
class StartRequest:
    """What the protocol picker chose: a valid protocol file for a station.

    Attributes:
        station: the station to start it on.
        path: the protocol file.
        text: the file's YAML text, as validated (sent as the start command's `protocol`).
    """

    station: str
    path: Path
    text: str


class ProtocolPicker(ModalScreen[StartRequest | None]):
    """Choose a protocol file and a station; each highlighted file is validated on the spot.

    A file that does not validate shows its error (line and field) and cannot be started: Enter on it
    only rings the bell. Enter on a valid file (or the Start button) dismisses with a `StartRequest`.
    """

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="ProtocolPicker")
        + """
    ProtocolPicker OptionList { height: 1fr; min-height: 3; max-height: 12; }
    ProtocolPicker #verdict { height: auto; max-height: 6; margin: 0 0 1 0; }
    ProtocolPicker #verdict.-error { color: $error; text-style: bold; }
    ProtocolPicker #verdict.-ok { color: $success; }
    ProtocolPicker Select { width: 1fr; }
    ProtocolPicker .row { height: auto; }
    ProtocolPicker .row Label { padding: 1 1 0 0; }
    """
    )
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        root: Path,
        files: list[Path],
        stations: list[str],
        station: str | None,
        validate: Callable[[Path], str | None],
    ) -> None:
        super().__init__()
        self.root = root
        self.files = files
        self.stations = stations
        self.station = station if station in stations else (stations[0] if stations else None)
        self.validate_file = validate
        self.errors: dict[Path, str | None] = {}

    def compose(self) -> ComposeResult:
        """File list, verdict, station choice, buttons."""
        with Vertical():
            yield Label(Text(f"Start a protocol — files in {self.root}"))
            yield OptionList(*(Option(self._label(path)) for path in self.files), id="files")
            yield Static("", id="verdict")
            with Horizontal(classes="row"):
                yield Label("Station")
                yield Select(
                    [(name, name) for name in self.stations],
                    value=self.station if self.station is not None else Select.BLANK,
                    allow_blank=self.station is None,
                    id="station",
                )
            with Horizontal(classes="buttons"):
                yield Button("Start", variant="success", id="start", disabled=True)
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """Focus the file list and validate the first file."""
        files = self.query_one("#files", OptionList)
        files.focus()
        if not self.files:
            self._verdict(f"no protocol files in {self.root}", ok=False)
        else:
            files.highlighted = 0

    def _label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _check(self, index: int) -> str | None:
        path = self.files[index]
        if path not in self.errors:
            self.errors[path] = self.validate_file(path)
        return self.errors[path]

    def _verdict(self, message: str, ok: bool) -> None:
        verdict = self.query_one("#verdict", Static)
        verdict.update(Text(message))
        verdict.set_class(not ok, "-error")
        verdict.set_class(ok, "-ok")
        self.query_one("#start", Button).disabled = not ok

    @on(OptionList.OptionHighlighted, "#files")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        error = self._check(event.option_index)
        name = self._label(self.files[event.option_index])
        self._verdict(f"✗ {error}" if error else f"✓ {name} is valid", ok=error is None)

    @on(OptionList.OptionSelected, "#files")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self._start(event.option_index)

    @on(Select.Changed, "#station")
    def _station_changed(self, event: Select.Changed) -> None:
        self.station = None if event.value is Select.BLANK else str(event.value)

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        index = self.query_one("#files", OptionList).highlighted
        if index is not None:
            self._start(index)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Close without starting anything."""
        self.dismiss(None)

    def _start(self, index: int) -> None:
        if self._check(index) is not None or self.station is None:
            self.app.bell()
            if self.station is None:
                self._verdict("choose a station first", ok=False)
            return
        path = self.files[index]
        self.dismiss(StartRequest(self.station, path, path.read_text(encoding="utf-8")))
