"""SCPI instruments declared as data: settings are table rows, not hand-written methods.

A `ScpiSetting` names the query and the command for one instrument setting, with a parser, a
formatter, a validator and a docstring that says unit and range (PyMeasure's `Instrument.control`
and QCoDeS's `add_parameter`, STYLE.md rule 5), but async and transport-agnostic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.errors import InstrumentRejectedError, InstrumentReplyError


class MessageTransport(Protocol):
    """What a SCPI front-end needs from a transport: framed lines out and in."""

    resource: str

    async def write(self, command: str) -> None:
        """Send one command line."""
        ...

    async def query(self, command: str) -> str:
        """Send a command and return the reply line."""
        ...


def in_range(low: float, high: float) -> Callable[[float], None]:
    """Validator: the value must lie in [low, high]."""

    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"{value:g} is outside {low:g}..{high:g}")

    return check


def one_of(*allowed: str) -> Callable[[str], None]:
    """Validator: the value must be one of `allowed` (case-insensitive)."""

    def check(value: str) -> None:
        if value.upper() not in {a.upper() for a in allowed}:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")

    return check


def parse_bool(reply: str) -> bool:
    """SCPI boolean reply ("1"/"0"/"ON"/"OFF") → bool."""
    token = reply.strip().upper()
    if token in ("1", "ON"):
        return True
    if token in ("0", "OFF"):
        return False
    raise ValueError(f"not a boolean: {reply!r}")


def parse_quoted(reply: str) -> str:
    """A quoted string reply ('"VOLT:DC"') → its content."""
    return reply.strip().strip('"')


@dataclass(frozen=True)
class ScpiSetting:
    """One instrument setting: how to read it, how to write it, and what values are legal.

    Attributes:
        doc: starts with Control/Measure/Get/Set, then unit and range.
        query: the query string, or None if write-only.
        command: a format string with one `{}` for the value, or None if read-only.
        parse: reply text → value.
        render: value → text inserted into `command`.
        validate: raises ValueError for an illegal value before anything is sent.
    """

    doc: str
    query: str | None = None
    command: str | None = None
    parse: Callable[[str], Any] = float
    render: Callable[[Any], str] = str
    validate: Callable[[Any], None] | None = None

    def encode(self, name: str, value: Any) -> str:
        """The command text that sets this setting to `value`."""
        if self.command is None:
            raise AttributeError(f"{name} is read-only")
        if self.validate is not None:
            try:
                self.validate(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self.command.format(self.render(value))

    def decode(self, name: str, resource: str, reply: str) -> Any:
        """The value in a reply to `query`."""
        try:
            return self.parse(reply)
        except ValueError as exc:
            raise InstrumentReplyError(f"{resource}: {name}: unexpected reply {reply!r} ({exc})") from None


class ScpiInstrument:
    """Base for SCPI front-ends: table-driven settings and the error-queue drain."""

    SETTINGS: dict[str, ScpiSetting] = {}
    ERROR_QUERY = ":SYST:ERR?"
    MAX_ERRORS = 32

    def __init__(self, transport: MessageTransport) -> None:
        self.transport = transport

    async def get(self, name: str) -> Any:
        """Read one declared setting."""
        setting = self.SETTINGS[name]
        if setting.query is None:
            raise AttributeError(f"{name} is write-only")
        reply = await self.transport.query(setting.query)
        return setting.decode(name, self.transport.resource, reply)

    def command_for(self, name: str, value: Any) -> str:
        """Validate `value` and return the command that sets `name` to it."""
        return self.SETTINGS[name].encode(name, value)

    async def configure(self, **values: Any) -> None:
        """Set several settings in one line, then drain the error queue (one batch)."""
        commands = [self.command_for(name, value) for name, value in values.items()]
        await self.transport.write(";".join(commands))
        await self.check_errors()

    async def check_errors(self) -> None:
        """Read the error queue until it is empty; raise if it held anything."""
        errors: list[str] = []
        for _ in range(self.MAX_ERRORS):
            reply = (await self.transport.query(self.ERROR_QUERY)).strip()
            match = re.match(r"^\s*([+-]?\d+)\s*,\s*\"?(.*?)\"?\s*$", reply)
            if match is None:
                raise InstrumentReplyError(
                    f"{self.transport.resource}: unexpected error-queue reply {reply!r}"
                )
            if int(match.group(1)) == 0:
                break
            errors.append(f"{int(match.group(1))} {match.group(2)}")
        if errors:
            raise InstrumentRejectedError(f"{self.transport.resource} reported: {'; '.join(errors)}")
