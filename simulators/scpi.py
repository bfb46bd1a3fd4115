"""SCPI message parsing and dispatch for instrument simulators.

A simulator declares its command set as data, a table of `Command(pattern, write=…, query=…)` rows
(the way PyMeasure's `Instrument.control` and QCoDeS's `add_parameter` declare drivers), and hands
each received line to a `ScpiDispatcher`. The dispatcher does what every SCPI instrument's parser
does, so that each simulator does not have to:

* splits a program message on `;` into commands (quotes respected);
* resolves headers: short or long form, case-insensitive (`:SOURce:CURRent:VLIMit` matches
  `:SOUR:CURR:VLIM` and `:sour:current:vlim`), optional nodes in brackets
  (`:SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude]`, `[:SENSe[1]]:COUNt`), numeric suffixes
  (`SOUR1`), the `?` query suffix and `*` common commands;
* applies the SCPI-99 path rule: a command in a compound message that does not start with `:` is
  relative to the previous command's path (`:TRAC:ACT:STAR? "b";END? "b"` reads `:TRAC:ACT:END?`);
  common commands do not move the path;
* splits comma-separated parameters (quoted strings, numbers, character data) and converts them
  through `Args` helpers that raise the right SCPI error;
* records errors in a bounded `ErrorQueue` with standard codes and messages; a failed query
  produces no reply, so a client times out exactly as with a real instrument.

Error codes used (SCPI-99 / IEEE 488.2): -100 Command error, -101 Invalid character, -102 Syntax
error, -104 Data type error, -108 Parameter not allowed, -109 Missing parameter, -113 Undefined
header, -200 Execution error, -221 Settings conflict, -222 Data out of range, -224 Illegal
parameter value, -230 Data corrupt or stale, -350 Queue overflow, -410 Query INTERRUPTED, -420
Query UNTERMINATED. -410/-420 are listed for completeness: over a socket a server cannot tell
whether a reply was read, so no simulator here raises them.

Execution continues with the next command of a line after an error (instruments differ here;
the Keithley 2450 manual does not say [mem]).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

ERROR_MESSAGES: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -200: "Execution error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -230: "Data corrupt or stale",
    -350: "Queue overflow",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
}
"""Standard SCPI error messages, as instruments report them after the code."""


class ScpiError(Exception):
    """A command failed; the dispatcher turns it into an entry in the error queue.

    Args:
        code: the SCPI error code (negative, see `ERROR_MESSAGES`).
        detail: a human explanation for logs and test failures; not sent to the client, because
            the instrument's queue carries only the standard message.
    """

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.message = ERROR_MESSAGES.get(code, "Unknown error")
        self.detail = detail
        text = f'{code},"{self.message}"'
        super().__init__(f"{text} ({detail})" if detail else text)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """One entry of an instrument's error queue."""

    code: int
    """SCPI error code (negative)."""
    message: str
    """Standard message for the code."""
    time: float
    """When it happened, on the simulator's clock (seconds, same scale as its time source)."""

    def scpi(self) -> str:
        """The `:SYSTem:ERRor?` form, e.g. `-113,"Undefined header"`."""
        return f'{self.code},"{self.message}"'


class ErrorQueue:
    """A bounded FIFO of errors, as SCPI specifies it.

    When the queue is full, the newest entry is replaced by -350 "Queue overflow" and further errors
    are lost until it is read (SCPI-99 vol. 2, 21.8.2).

    Args:
        maxlen: capacity, at least 2.
        on_push: called with every error that is recorded (e.g. to set event-status bits).
    """

    def __init__(self, maxlen: int = 100, on_push: Callable[[ErrorEvent], None] | None = None) -> None:
        if maxlen < 2:
            raise ValueError("an error queue needs room for at least two entries")
        self.maxlen = maxlen
        self._events: deque[ErrorEvent] = deque()
        self._on_push = on_push

    def push(self, code: int, time: float = 0.0) -> None:
        """Record an error with its standard message (or -350 if the queue is full)."""
        event = ErrorEvent(code, ERROR_MESSAGES.get(code, "Unknown error"), time)
        if len(self._events) >= self.maxlen:
            if self._events[-1].code != -350:
                self._events[-1] = ErrorEvent(-350, ERROR_MESSAGES[-350], time)
        else:
            self._events.append(event)
        if self._on_push is not None:
            self._on_push(event)

    def pop(self) -> ErrorEvent | None:
        """Remove and return the oldest error, or None when empty."""
        return self._events.popleft() if self._events else None

    def clear(self) -> None:
        """Forget every error (`*CLS`)."""
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[ErrorEvent]:
        return iter(self._events)


# --------------------------------------------------------------------------------------------
# Headers

_MNEMONIC = re.compile(r"(\*?[A-Za-z][A-Za-z_]*)(\d*)")
_PATTERN_NODE = re.compile(
    r"\[:(?P<opt>\*?[A-Za-z]+)(?:\[(?P<optsuffix>\d+)\])?\]"
    r"|:?(?P<req>\*?[A-Za-z]+)(?:\[(?P<reqsuffix>\d+)\])?"
)


def mnemonic_forms(word: str) -> tuple[str, str]:
    """Short and long form of a mnemonic written in SCPI case: `"SOURce"` -> `("SOUR", "SOURCE")`.

    The short form is the leading upper-case part, the long form the whole word; an instrument
    accepts exactly these two (in any case), nothing in between.
    """
    cut = next((i for i, c in enumerate(word) if c.islower()), len(word))
    return word[:cut].upper(), word.upper()


def mnemonic_matches(token: str, word: str) -> bool:
    """Whether `token` (any case) is the short or long form of `word` (SCPI case)."""
    return token.upper() in mnemonic_forms(word)


@dataclass(frozen=True, slots=True)
class _Node:
    short: str
    long: str
    optional: bool
    suffix: str | None
    """Numeric suffix the node may carry (`"1"` for `SOURce[1]`); None: no suffix allowed."""

    def accepts(self, name: str, suffix: str) -> bool:
        if name not in (self.short, self.long):
            return False
        return suffix == "" or suffix == self.suffix


def compile_pattern(pattern: str) -> tuple[_Node, ...]:
    """Turn `":SOURce[1]:CURRent[:LEVel]"` into header nodes; raise ValueError if malformed."""
    nodes: list[_Node] = []
    pos = 0
    while pos < len(pattern):
        match = _PATTERN_NODE.match(pattern, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"bad SCPI pattern {pattern!r} at {pos}")
        word = match["opt"] or match["req"]
        short, long = mnemonic_forms(word)
        suffix = match["optsuffix"] if match["opt"] else match["reqsuffix"]
        nodes.append(_Node(short, long, optional=bool(match["opt"]), suffix=suffix))
        pos = match.end()
    if not nodes:
        raise ValueError("empty SCPI pattern")
    return tuple(nodes)


def _nodes_match(nodes: Sequence[_Node], tokens: Sequence[tuple[str, str]]) -> bool:
    def match_from(i: int, j: int) -> bool:
        if i == len(nodes):
            return j == len(tokens)
        node = nodes[i]
        if j < len(tokens) and node.accepts(*tokens[j]) and match_from(i + 1, j + 1):
            return True
        return node.optional and match_from(i + 1, j)

    return match_from(0, 0)


# --------------------------------------------------------------------------------------------
# Parameters

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a command as received."""

    text: str
    """The text, without quotes for a string parameter."""
    quoted: bool
    """Whether it was a quoted string."""


class Args(Sequence[Param]):
    """The parameters of one command, with converters that raise the right `ScpiError`.

    Indexes are 0-based; the instrument's error messages count from 1.
    """

    def __init__(self, params: Sequence[Param]) -> None:
        self._params = tuple(params)

    def __len__(self) -> int:
        return len(self._params)

    def __getitem__(self, index: Any) -> Any:
        return self._params[index]

    def expect(self, minimum: int, maximum: int | None = None) -> None:
        """Check the parameter count: too few is -109, too many -108."""
        if len(self) < minimum:
            raise ScpiError(-109, f"needs at least {minimum} parameter(s), got {len(self)}")
        if maximum is not None and len(self) > maximum:
            raise ScpiError(-108, f"takes at most {maximum} parameter(s), got {len(self)}")

    def has(self, index: int) -> bool:
        """Whether parameter `index` was given."""
        return index < len(self)

    def _get(self, index: int) -> Param:
        if index >= len(self):
            raise ScpiError(-109, f"parameter {index + 1} is missing")
        return self._params[index]

    def number(
        self,
        index: int,
        low: float,
        high: float,
        *,
        default: float | None = None,
    ) -> float:
        """A decimal number in [low, high]; `MINimum`, `MAXimum` and `DEFault` where given.

        Raises:
            ScpiError: -104 for a string or character data, -222 when out of range.
        """
        param = self._get(index)
        if param.quoted:
            raise ScpiError(-104, f"parameter {index + 1} must be a number, got a string")
        text = param.text.strip()
        word = text.upper()
        if word in ("MIN", "MINIMUM"):
            return low
        if word in ("MAX", "MAXIMUM"):
            return high
        if word in ("DEF", "DEFAULT") and default is not None:
            return default
        if not _NUMBER.fullmatch(text):
            raise ScpiError(-104, f"parameter {index + 1} is not a number: {text!r}")
        value = float(text)
        if not low <= value <= high:
            raise ScpiError(-222, f"parameter {index + 1} = {value} outside [{low}, {high}]")
        return value

    def integer(self, index: int, low: int, high: int, *, default: int | None = None) -> int:
        """An integer in [low, high] (a decimal is rounded, as SCPI's NRf rules say)."""
        value = self.number(index, low, high, default=default)
        return round(value)

    def boolean(self, index: int) -> bool:
        """`ON`/`OFF`/`1`/`0` (any other number: non-zero is true, after rounding)."""
        param = self._get(index)
        if param.quoted:
            raise ScpiError(-104, f"parameter {index + 1} must be ON/OFF/1/0, got a string")
        word = param.text.strip().upper()
        if word == "ON":
            return True
        if word == "OFF":
            return False
        if _NUMBER.fullmatch(word):
            return round(float(word)) != 0
        raise ScpiError(-224, f"parameter {index + 1} must be ON/OFF/1/0, got {param.text!r}")

    def string(self, index: int) -> str:
        """A quoted string; unquoted text is a data type error (-104), as on a strict parser."""
        param = self._get(index)
        if not param.quoted:
            raise ScpiError(-104, f"parameter {index + 1} must be a quoted string")
        return param.text

    def choice(self, index: int, options: Sequence[str]) -> str:
        """Character data, one of `options` written in SCPI case (`"FRONt"`): returns that option.

        Raises:
            ScpiError: -104 for a string or number, -224 for a word that is not an option.
        """
        param = self._get(index)
        if param.quoted:
            raise ScpiError(-104, f"parameter {index + 1} must be character data, got a string")
        word = param.text.strip()
        for option in options:
            if mnemonic_matches(word, option):
                return option
        if _NUMBER.fullmatch(word):
            raise ScpiError(-104, f"parameter {index + 1} must be one of {list(options)}")
        raise ScpiError(-224, f"parameter {index + 1} must be one of {list(options)}, got {word!r}")


def split_message(line: str) -> list[str]:
    """Split a program message into commands on `;` outside quotes.

    Raises:
        ScpiError: -102 if a quote is not closed (the whole message is then rejected).
    """
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for char in line:
        if quote is not None:
            current.append(char)
            if char == quote:
                quote = None  # a doubled quote re-opens on its next character
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quote is not None:
        raise ScpiError(-102, "unterminated quoted string")
    parts.append("".join(current))
    return parts


def parse_params(text: str) -> list[Param]:
    """Split `1, "a,b", ON` into parameters; empty text means no parameters.

    Raises:
        ScpiError: -102 for an empty parameter between commas or text after a closing quote.
    """
    if not text.strip():
        return []
    params: list[Param] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] in "\"'":
            quote = text[pos]
            pos += 1
            chars: list[str] = []
            while True:
                end = text.find(quote, pos)
                if end < 0:
                    raise ScpiError(-102, "unterminated quoted string")
                chars.append(text[pos:end])
                if text.startswith(quote * 2, end):  # doubled quote = literal quote
                    chars.append(quote)
                    pos = end + 2
                    continue
                pos = end + 1
                break
            params.append(Param("".join(chars), quoted=True))
            while pos < len(text) and text[pos] in " \t":
                pos += 1
            if pos < len(text) and text[pos] != ",":
                raise ScpiError(-102, "text after a quoted string")
        else:
            end = text.find(",", pos)
            piece = (text[pos:] if end < 0 else text[pos:end]).strip()
            if not piece:
                raise ScpiError(-102, "empty parameter")
            params.append(Param(piece, quoted=False))
            pos = len(text) if end < 0 else end
        if pos >= len(text):
            return params
        pos += 1  # the comma
        if not text[pos:].strip():
            raise ScpiError(-102, "empty parameter after a comma")


def _split_header(command: str) -> tuple[str, str]:
    stripped = command.strip()
    match = re.match(r"[^\s\"']+", stripped)
    if match is None:
        raise ScpiError(-102, f"no header in {command!r}")
    return match.group(0), stripped[match.end() :]


def _header_tokens(header: str) -> tuple[list[tuple[str, str]], bool, bool]:
    """Tokens `[(NAME, suffix), …]`, whether rooted (leading `:`), whether a query."""
    is_query = header.endswith("?")
    body = header[:-1] if is_query else header
    if "?" in body:
        raise ScpiError(-102, f"misplaced '?' in {header!r}")
    rooted = body.startswith(":")
    if rooted:
        body = body[1:]
    tokens: list[tuple[str, str]] = []
    for piece in body.split(":"):
        match = _MNEMONIC.fullmatch(piece)
        if match is None:
            raise ScpiError(-102, f"bad header {header!r}")
        tokens.append((match.group(1).upper(), match.group(2)))
    if len(tokens) > 1 and any(name.startswith("*") for name, _ in tokens):
        raise ScpiError(-102, f"bad header {header!r}")
    return tokens, rooted, is_query


# --------------------------------------------------------------------------------------------
# Command tables and dispatch

Handler = Callable[[Any, Args], str | None]
"""`handler(context, args)`: performs a command; a query handler returns the reply text."""


@dataclass(frozen=True)
class Command:
    """One row of a command table.

    Args:
        pattern: the header in SCPI case with optional parts in brackets, without `?`.
        write: handler for the command form, or None if the header is query-only.
        query: handler for the `?` form, or None if the header is command-only.
        doc: what the command does on the instrument (for generated documentation and reviews).
    """

    pattern: str
    write: Handler | None = None
    query: Handler | None = None
    doc: str = ""
    nodes: tuple[_Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.write is None and self.query is None:
            raise ValueError(f"{self.pattern}: a command needs a write or a query handler")
        object.__setattr__(self, "nodes", compile_pattern(self.pattern))

    @property
    def is_common(self) -> bool:
        """An IEEE 488.2 common command (`*IDN`), which does not move the SCPI path."""
        return self.pattern.startswith("*")

    def matches(self, tokens: Sequence[tuple[str, str]]) -> bool:
        """Whether the header tokens name this command."""
        return _nodes_match(self.nodes, tokens)


class CommandSet:
    """An ordered table of commands; the first matching row wins."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self.commands: tuple[Command, ...] = tuple(commands)

    def find(self, tokens: Sequence[tuple[str, str]]) -> Command | None:
        """The command these header tokens name, or None (an undefined header)."""
        for command in self.commands:
            if command.matches(tokens):
                return command
        return None

    def __iter__(self) -> Iterator[Command]:
        return iter(self.commands)

    def __len__(self) -> int:
        return len(self.commands)


class ScpiDispatcher:
    """Executes program messages against a command table.

    Args:
        commands: the command table.
        context: passed to every handler as its first argument (the instrument model).
        errors: where errors go.
        before_command: called before each command (the simulator catches its physics up to now).
        clock: timestamps errors (simulator seconds); 0.0 if not given.
    """

    def __init__(
        self,
        commands: CommandSet,
        context: Any,
        errors: ErrorQueue,
        *,
        before_command: Callable[[], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.commands = commands
        self.context = context
        self.errors = errors
        self._before_command = before_command
        self._clock = clock

    def _record(self, error: ScpiError) -> None:
        self.errors.push(error.code, self._clock() if self._clock else 0.0)

    def execute(self, line: str) -> list[str]:
        """Run every command of one message; return the query replies in order.

        An instrument joins the replies of one message with `;` and ends them with its terminator;
        that is the caller's job, because framing belongs to the transport.
        """
        try:
            pieces = split_message(line)
        except ScpiError as error:
            self._record(error)
            return []
        replies: list[str] = []
        path: list[tuple[str, str]] = []
        for index, piece in enumerate(pieces):
            if not piece.strip():
                if len(pieces) > 1 and index < len(pieces) - 1:
                    self._record(ScpiError(-102, "empty command between ';'"))
                continue
            if self._before_command is not None:
                self._before_command()
            try:
                header, param_text = _split_header(piece)
                tokens, rooted, is_query = _header_tokens(header)
                common = tokens[0][0].startswith("*")
                if not common and not rooted and index > 0:
                    tokens = path + tokens
                command = self.commands.find(tokens)
                handler = None
                if command is not None:
                    handler = command.query if is_query else command.write
                if handler is None:
                    raise ScpiError(-113, f"undefined header {header!r}")
                if not common:
                    path = tokens[:-1]
                args = Args(parse_params(param_text))
                reply = handler(self.context, args)
            except ScpiError as error:
                self._record(error)
                continue
            if is_query and reply is not None:
                replies.append(reply)
        return replies


def format_nr3(value: float) -> str:
    """A real number the way SCPI instruments print it: `2.345678E-01`."""
    return f"{value:.6E}"


def format_bool(value: bool) -> str:
    """SCPI booleans are replied as `1`/`0`."""
    return "1" if value else "0"


def quote(text: str) -> str:
    """A SCPI string reply: double quotes, inner quotes doubled."""
    return '"' + text.replace('"', '""') + '"'
