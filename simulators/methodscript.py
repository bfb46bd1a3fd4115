"""MethodSCRIPT, the script language of PalmSens potentiostats: literals, data packages, parser, interpreter.

This module knows the language and nothing of any instrument's physics. `parse_script` turns the lines
sent after `e` into a statement tree, or raises `ScriptSyntaxError` (the instrument's
`e!XXXX: Line L, Col C` reply). `ScriptRun` executes a parsed script against a `Hardware` (the
instrument model, `simulators.emstat`) as a generator: it yields the simulated time it must wait
until, and the caller resumes it once the time source has reached that time. So a 10-hour
`meas_loop_cp` streams its packages as simulated time passes instead of all at once, and nothing
here reads a clock.

Sources. [src] = PalmSens' MIT example code (PalmSens/MethodSCRIPT_Examples: `MSLoopExample008-CA`,
`009-CP`, `011-OCP`, `012-EIS`, `013-GEIS`, `palmsens/mscript.py`, `palmsens/instrument.py`,
`Example_C/README.adoc`) or INSTRUMENTS.md §2.5, which quotes them; [sdk] = the battery-cycling
MethodSCRIPT template shipped in PalmSens' Python SDK (`meas <time> <var> <type>`, `loop a <= b`,
`if/elseif/else/endif`, `copy_var <from> <to>`, arithmetic with a literal operand); [mem] = not
confirmed against the MethodSCRIPT manual, a plausible choice to check on hardware. Error codes are
[mem] except `0006` (`Z!0006`, [src]); they follow an error table a third-party client attributes to
the manual's appendix A.

Supported script subset (anything else is `!4001` "unknown command", [mem] code):

* `var <name>`; names `[a-z][a-z0-9_]*`, declared before use (`!420B` otherwise, `!4026` twice).
* `store_var <var> <value> <type>`, `copy_var <from> <to>`, `add_var|sub_var|mul_var|div_var
  <var> <value>` (the result keeps the first operand's type; division by zero gives NaN [mem]).
* numbers: an integer with an optional SI prefix `a f p n u m k M G T P E` (`100m`, `-5u`, `2`), an
  integer with suffix `i` (`11i`), `0x…`/`0b…` integers. A decimal point is refused (`!4004`) [mem:
  a third-party client reads the manual as integers only].
* `set_pgstat_chan`, `set_pgstat_mode`, `set_max_bandwidth`, `set_range <type> <value>`,
  `set_range_minmax <type> <min> <max>`, `set_autoranging <type> <min> <max>`, `set_e`, `set_i`,
  `cell_on`, `cell_off`, `set_acquisition_frac_autoadjust` (accepted, no effect): handed to the
  `Hardware`, which validates the values.
* `wait <time>`, `timer_start`, `timer_get <var>` (type `eb`, seconds since `timer_start`, or since
  the script started), `meas <time> <var> <type>` [sdk] (a single reading of type `ab` or `ba`
  taken at the end of `<time>`).
* `meas_loop_ca <E> <I> <E_dc> <interval> <run_time>` [src],
  `meas_loop_cp <E> <I> <I_dc> <interval> <run_time>` [src],
  `meas_loop_ocp <E> <interval> <run_time>` [src],
  `meas_loop_eis <f> <z_re> <z_im> <amplitude> <f_start> <f_end> <n_points> <E_dc>` [src],
  `meas_loop_geis <f> <z_re> <z_im> <amplitude> <f_start> <f_end> <n_points> <I_dc>` [src];
  each closed by `endloop`; optional trailing arguments (`nscans(…)`, `eis_acdc`, …) are refused
  with `!4008` [mem]; measurement loops do not nest (`!400B`).
* `loop <a> <op> <b>` … `endloop`, `if`/`elseif`/`else`/`endif` with `< <= > >= == !=`,
  `breakloop` (leaves the innermost loop of either kind).
* `pck_start`, `pck_add <var>`, `pck_end`; `on_finished:` (top level, once); `#` comments.

Output stream (lines written through the `emit` callback, terminators added by the caller) [src]:
`M<code:04X>` when a measurement loop starts, one `P…` line per `pck_end`, `*` when the
measurement loop ends; `L` and `+` around a `loop`; an empty line when the script ends. A run-time
error writes `!XXXX: Line N` and ends the script at once: no closing markers, no `on_finished:`
block and no empty line, and the cell stays as it was [mem: as a third-party client describes the
instrument; the official client stops reading at an error line]. An abort (`ScriptRun.abort`, the
`Z` command) ends the running measurement loop with `*` (and open `loop`s with `+` [mem]), then
runs the `on_finished:` block and writes the empty line [src for `*`, on_finished and the end].

Package variables [src]: 2-character type, 7 hex digits holding the value + 2^27 as a 28-bit
integer, 1 SI-prefix character; then optional metadata `,1X` (status) and `,2XX` (range index).
The prefix is the finest one whose mantissa fits in ±(2^27 − 1), which reproduces every worked
example in INSTRUMENTS.md §2.5 (`da7F85F3Fu` = −0.499905 V). Zero is written with the blank prefix
(`8000000 `) [mem]; NaN and values too large for any prefix are `     nan` [src for the NaN field].
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Protocol

SI_PREFIXES: dict[str, float] = {
    "a": 1e-18,
    "f": 1e-15,
    "p": 1e-12,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    " ": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}
"""SI prefix character → factor, finest first; `" "` is no prefix [src]."""

OFFSET = 1 << 27
"""Added to a package value so it is written as an unsigned 28-bit number [src]."""
MAX_MANTISSA = OFFSET - 1
"""Largest magnitude a package value can have at one prefix."""
NAN_FIELD = "     nan"
"""The 8 characters (value + prefix) of a NaN package value [src]."""
MAX_LITERAL = 2**31 - 1
"""Largest integer part of a script literal (int32) [mem]."""

TECHNIQUE_CODES: dict[str, int] = {
    "meas_loop_ca": 0x0007,
    "meas_loop_cp": 0x000A,
    "meas_loop_ocp": 0x000B,
    "meas_loop_eis": 0x000D,
    "meas_loop_geis": 0x000E,
}
"""Code in the `M<code>` line that opens each measurement loop [mem: a third-party client's reading of
the manual's technique table; consistent with `M0000` for LSV in the official example]."""


class ErrorCode(IntEnum):
    """MethodSCRIPT error codes used here (`!XXXX`); [mem] except NOT_NOW."""

    UNSPECIFIED = 0x0001
    """Unspecified error."""
    UNKNOWN_COMMAND = 0x0003
    """Unknown online command."""
    NOT_NOW = 0x0006
    """Command not available in the present communication state (`Z!0006`: nothing to abort) [src]."""
    NO_SCRIPT_LOADED = 0x000C
    """`r` without a loaded script."""
    NAN_VALUE = 0x0010
    """A value became NaN or infinite where a number is needed."""
    INVALID_FREQUENCY = 0x0011
    """EIS frequency outside the instrument's range."""
    INVALID_AMPLITUDE = 0x0012
    """EIS amplitude outside the instrument's range."""
    NOT_SUPPORTED = 0x001B
    """The instrument does not support this (here also: a load without an impedance model)."""
    PGSTAT_MODE_NOT_SUPPORTED = 0x0021
    """The potentiostat mode does not exist on this instrument."""
    WRONG_PGSTAT_MODE = 0x0023
    """Command not allowed in the present potentiostat mode."""
    SCRIPT_UNKNOWN_COMMAND = 0x4001
    """Unknown script command."""
    UNEXPECTED_CHARACTER = 0x4004
    """Unexpected character or token, or a missing parameter."""
    OPTION_NOT_ACCEPTED = 0x4008
    """The command does not accept this optional argument."""
    NESTED_MEAS_LOOP = 0x400B
    """Measurement loops cannot be nested."""
    NOT_ALLOWED_HERE = 0x400C
    """Command not allowed in this situation (e.g. `breakloop` outside a loop)."""
    UNEXPECTED_END = 0x4018
    """The script ended inside a block (missing `endloop`/`endif`)."""
    DUPLICATE_VARIABLE = 0x4026
    """Variable declared twice."""
    CELL_ON_REQUIRED = 0x4027
    """The technique needs the cell on."""
    CELL_OFF_REQUIRED = 0x4028
    """The technique needs the cell off."""
    NO_POINTS = 0x4029
    """The technique would take no measurement."""
    INVALID_NAME = 0x402B
    """Invalid variable name."""
    MUST_BE_POSITIVE = 0x4204
    """Parameter must be positive."""
    OUT_OF_RANGE = 0x4205
    """Parameter outside the range the command allows."""
    WRONG_VARIABLE_TYPE = 0x4209
    """Wrong variable type for this parameter."""
    TOO_MANY_PARAMETERS = 0x420A
    """One parameter too many."""
    UNDECLARED_VARIABLE = 0x420B
    """The parameter names a variable that was not declared."""


class Status(IntFlag):
    """Bits of a package variable's status metadata (`,1X`) [src]."""

    OK = 0x0
    TIMING_ERROR = 0x1
    """The requested timing could not be met."""
    OVERLOAD = 0x2
    """The reading exceeds its range (or the source hit its limit)."""
    UNDERLOAD = 0x4
    """The reading is tiny for its range: a lower range would resolve it better."""
    OVERLOAD_WARNING = 0x8
    """The reading is close to the end of its range."""


class ScriptSyntaxError(Exception):
    """The script was refused while loading: `e!XXXX: Line L, Col C` (1-based, line 1 follows `e`)."""

    def __init__(self, code: int, line: int, column: int, detail: str = "") -> None:
        super().__init__(f"!{code:04X}: Line {line}, Col {column} {detail}".rstrip())
        self.code = code
        self.line = line
        self.column = column
        self.detail = detail

    def reply(self, command: str) -> str:
        """The instrument's reply line to `command` (`e` or `l`), without terminator."""
        return f"{command}!{self.code:04X}: Line {self.line}, Col {self.column}"


class ScriptRuntimeError(Exception):
    """A command failed while the script ran: `!XXXX: Line N` [mem]."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(f"!{code:04X} {detail}".rstrip())
        self.code = code
        self.detail = detail


# ---------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Var:
    """The value of a script variable, as a data package would carry it."""

    type: str = "aa"
    """2-character variable type (`aa` = unknown, `ab` = WE potential, `ba` = WE current, …) [src]."""
    value: float = 0.0
    """Value in SI units (V, A, Hz, Ω, s) or a plain number."""
    integer: bool = False
    """Written with the `i` prefix (an integer), not an SI prefix."""
    status: int | None = None
    """`Status` bits written as `,1X`, or None for no status metadata."""
    range: int | None = None
    """Range index written as `,2XX`, or None."""


def parse_literal(text: str) -> tuple[float, bool]:
    """A script number → (value, is_integer).

    Raises:
        ValueError: if `text` is not a MethodSCRIPT number.
    """
    match = _HEX_OR_BIN.fullmatch(text)
    if match:
        base = 16 if match.group(1).lower() == "x" else 2
        return float(int(match.group(2), base)), True
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a MethodSCRIPT number")
    number = int(match.group(1))
    if abs(number) > MAX_LITERAL:
        raise ValueError(f"{text!r} does not fit in 32 bits")
    suffix = match.group(2)
    if suffix == "i":
        return float(number), True
    return number * SI_PREFIXES[suffix or " "], False


def encode_value(value: float, *, integer: bool = False) -> str:
    """The 8 characters (7 hex digits + prefix) that carry `value` in a data package.

    The prefix is the finest one at which the mantissa fits in ±(2^27 − 1): the resolution the
    28-bit field allows, and what the instrument sends in every documented example.
    """
    if not math.isfinite(value):
        return NAN_FIELD
    if integer:
        number = round(value)
        return NAN_FIELD if abs(number) > MAX_MANTISSA else f"{number + OFFSET:07X}i"
    if value == 0.0:
        return f"{OFFSET:07X} "
    for prefix, factor in SI_PREFIXES.items():
        mantissa = round(value / factor)
        if abs(mantissa) <= MAX_MANTISSA:
            return f"{mantissa + OFFSET:07X}{prefix}"
    return NAN_FIELD


def format_variable(var: Var) -> str:
    """One package variable: type, value, then the `,1X` and `,2XX` metadata that are set."""
    text = var.type + encode_value(var.value, integer=var.integer)
    if var.status is not None:
        text += f",1{var.status & 0xF:X}"
    if var.range is not None:
        text += f",2{var.range & 0xFF:02X}"
    return text


def format_package(variables: Sequence[Var]) -> str:
    """A data package line, without terminator: `P` + variables joined by `;`."""
    return "P" + ";".join(format_variable(var) for var in variables)


_DECIMAL = re.compile(r"([+-]?\d+)([afpnumkMGTPEi]?)")
_HEX_OR_BIN = re.compile(r"0([xXbB])([0-9A-Fa-f]+)i?")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TYPE = re.compile(r"[a-j][a-z]")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}

# ---------------------------------------------------------------------------------- statement tree


@dataclass(frozen=True, slots=True)
class Operand:
    """A numeric parameter: a literal, or the name of a declared variable."""

    name: str | None = None
    value: float = 0.0
    integer: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    """A simple command with its parameters (names, `Operand`s or type strings, per the command)."""

    name: str
    args: tuple[str | Operand, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Condition:
    """`<a> <op> <b>` of `loop`, `if` and `elseif`."""

    left: Operand
    operator: str
    right: Operand


@dataclass(slots=True)
class LoopBlock:
    """`loop <condition>` … `endloop`."""

    condition: Condition
    line: int
    body: list[Statement] = field(default_factory=list)


@dataclass(slots=True)
class IfBlock:
    """`if` … [`elseif` …]* [`else` …] `endif`."""

    line: int
    branches: list[tuple[Condition, list[Statement]]] = field(default_factory=list)
    otherwise: list[Statement] | None = None


@dataclass(slots=True)
class MeasLoop:
    """`meas_loop_<technique> <output vars> <parameters>` … `endloop`."""

    name: str
    outputs: tuple[str, ...]
    params: tuple[Operand, ...]
    line: int
    body: list[Statement] = field(default_factory=list)


Statement = Command | LoopBlock | IfBlock | MeasLoop


@dataclass(slots=True)
class Script:
    """A parsed script: its body, its `on_finished:` block and its declared variables."""

    body: list[Statement]
    on_finished: list[Statement]
    variables: tuple[str, ...]


# Parameter kinds: "decl" a new name, "var" a declared name, "num" an Operand, "type" a variable type.
_COMMANDS: dict[str, tuple[str, ...]] = {
    "var": ("decl",),
    "store_var": ("var", "num", "type"),
    "copy_var": ("var", "var"),
    "add_var": ("var", "num"),
    "sub_var": ("var", "num"),
    "mul_var": ("var", "num"),
    "div_var": ("var", "num"),
    "set_pgstat_chan": ("num",),
    "set_pgstat_mode": ("num",),
    "set_max_bandwidth": ("num",),
    "set_range": ("type", "num"),
    "set_range_minmax": ("type", "num", "num"),
    "set_autoranging": ("type", "num", "num"),
    "set_e": ("num",),
    "set_i": ("num",),
    "cell_on": (),
    "cell_off": (),
    "set_acquisition_frac_autoadjust": ("num",),
    "wait": ("num",),
    "timer_start": (),
    "timer_get": ("var",),
    "meas": ("num", "var", "type"),
    "pck_start": (),
    "pck_add": ("var",),
    "pck_end": (),
    "breakloop": (),
}
"""Simple commands and their parameter kinds."""

HARDWARE_COMMANDS = frozenset(
    {
        "set_pgstat_chan",
        "set_pgstat_mode",
        "set_max_bandwidth",
        "set_range",
        "set_range_minmax",
        "set_autoranging",
        "set_e",
        "set_i",
        "cell_on",
        "cell_off",
        "set_acquisition_frac_autoadjust",
    }
)
"""Commands the interpreter hands to `Hardware.command` with their evaluated parameters."""

MEAS_LOOPS: dict[str, tuple[int, int]] = {
    "meas_loop_ca": (2, 3),
    "meas_loop_cp": (2, 3),
    "meas_loop_ocp": (1, 2),
    "meas_loop_eis": (3, 5),
    "meas_loop_geis": (3, 5),
}
"""Measurement loops: (output variables, numeric parameters) [src: the example scripts]."""


@dataclass(slots=True)
class _Token:
    text: str
    column: int


def _tokens(line: str) -> list[_Token]:
    code = line.split("#", 1)[0]
    return [_Token(m.group(0), m.start() + 1) for m in re.finditer(r"\S+", code)]


class _Parser:
    def __init__(self) -> None:
        self.declared: list[str] = []
        self.body: list[Statement] = []
        self.on_finished: list[Statement] | None = None
        # Open blocks, innermost last: (block, the statement list new statements go to).
        self.stack: list[tuple[LoopBlock | IfBlock | MeasLoop, list[Statement]]] = []

    def target(self) -> list[Statement]:
        if self.stack:
            return self.stack[-1][1]
        return self.on_finished if self.on_finished is not None else self.body

    def parse_line(self, number: int, tokens: list[_Token]) -> None:
        head, args = tokens[0], tokens[1:]
        name = head.text
        if name == "on_finished:":
            if self.stack or self.on_finished is not None:
                raise ScriptSyntaxError(ErrorCode.NOT_ALLOWED_HERE, number, head.column, "on_finished:")
            self._expect_count(number, head, args, 0)
            self.on_finished = []
        elif name == "loop":
            block = LoopBlock(self._condition(number, head, args), number)
            self.target().append(block)
            self.stack.append((block, block.body))
        elif name == "if":
            block_if = IfBlock(number)
            branch: list[Statement] = []
            block_if.branches.append((self._condition(number, head, args), branch))
            self.target().append(block_if)
            self.stack.append((block_if, branch))
        elif name in ("elseif", "else", "endif"):
            self._if_part(number, head, args)
        elif name == "endloop":
            self._expect_count(number, head, args, 0)
            if not self.stack or not isinstance(self.stack[-1][0], LoopBlock | MeasLoop):
                raise ScriptSyntaxError(ErrorCode.NOT_ALLOWED_HERE, number, head.column, "endloop")
            self.stack.pop()
        elif name in MEAS_LOOPS:
            self._meas_loop(number, head, args)
        elif name in _COMMANDS:
            self._command(number, head, args)
        else:
            raise ScriptSyntaxError(ErrorCode.SCRIPT_UNKNOWN_COMMAND, number, head.column, name)

    def _if_part(self, number: int, head: _Token, args: list[_Token]) -> None:
        if not self.stack or not isinstance(self.stack[-1][0], IfBlock):
            raise ScriptSyntaxError(ErrorCode.NOT_ALLOWED_HERE, number, head.column, head.text)
        block = self.stack[-1][0]
        assert isinstance(block, IfBlock)
        if head.text == "endif":
            self._expect_count(number, head, args, 0)
            self.stack.pop()
            return
        if block.otherwise is not None:  # elseif/else after else
            raise ScriptSyntaxError(ErrorCode.NOT_ALLOWED_HERE, number, head.column, head.text)
        self.stack.pop()
        body: list[Statement] = []
        if head.text == "else":
            self._expect_count(number, head, args, 0)
            block.otherwise = body
        else:
            block.branches.append((self._condition(number, head, args), body))
        self.stack.append((block, body))

    def _meas_loop(self, number: int, head: _Token, args: list[_Token]) -> None:
        if any(isinstance(block, MeasLoop) for block, _ in self.stack):
            raise ScriptSyntaxError(ErrorCode.NESTED_MEAS_LOOP, number, head.column, head.text)
        n_out, n_params = MEAS_LOOPS[head.text]
        if len(args) > n_out + n_params:
            extra = args[n_out + n_params]
            raise ScriptSyntaxError(ErrorCode.OPTION_NOT_ACCEPTED, number, extra.column, extra.text)
        self._expect_count(number, head, args, n_out + n_params)
        outputs = tuple(self._declared(number, token) for token in args[:n_out])
        params = tuple(self._operand(number, token) for token in args[n_out:])
        block = MeasLoop(head.text, outputs, params, number)
        self.target().append(block)
        self.stack.append((block, block.body))

    def _command(self, number: int, head: _Token, args: list[_Token]) -> None:
        kinds = _COMMANDS[head.text]
        self._expect_count(number, head, args, len(kinds))
        values: list[str | Operand] = []
        for kind, token in zip(kinds, args, strict=True):
            if kind == "decl":
                if not _NAME.fullmatch(token.text):
                    raise ScriptSyntaxError(ErrorCode.INVALID_NAME, number, token.column, token.text)
                if token.text in self.declared:
                    raise ScriptSyntaxError(ErrorCode.DUPLICATE_VARIABLE, number, token.column, token.text)
                self.declared.append(token.text)
                values.append(token.text)
            elif kind == "var":
                values.append(self._declared(number, token))
            elif kind == "type":
                if not _TYPE.fullmatch(token.text):
                    raise ScriptSyntaxError(ErrorCode.WRONG_VARIABLE_TYPE, number, token.column, token.text)
                values.append(token.text)
            else:
                values.append(self._operand(number, token))
        if head.text == "breakloop" and not any(
            isinstance(block, LoopBlock | MeasLoop) for block, _ in self.stack
        ):
            raise ScriptSyntaxError(ErrorCode.NOT_ALLOWED_HERE, number, head.column, "breakloop")
        if head.text != "var":
            self.target().append(Command(head.text, tuple(values), number))

    def _condition(self, number: int, head: _Token, args: list[_Token]) -> Condition:
        self._expect_count(number, head, args, 3)
        left, operator, right = args
        if operator.text not in _OPERATORS:
            raise ScriptSyntaxError(ErrorCode.UNEXPECTED_CHARACTER, number, operator.column, operator.text)
        return Condition(self._operand(number, left), operator.text, self._operand(number, right))

    def _declared(self, number: int, token: _Token) -> str:
        if not _NAME.fullmatch(token.text):
            raise ScriptSyntaxError(ErrorCode.INVALID_NAME, number, token.column, token.text)
        if token.text not in self.declared:
            raise ScriptSyntaxError(ErrorCode.UNDECLARED_VARIABLE, number, token.column, token.text)
        return token.text

    def _operand(self, number: int, token: _Token) -> Operand:
        if _NAME.fullmatch(token.text):
            return Operand(name=self._declared(number, token))
        try:
            value, integer = parse_literal(token.text)
        except ValueError:
            code = ErrorCode.UNEXPECTED_CHARACTER
            raise ScriptSyntaxError(code, number, token.column, token.text) from None
        return Operand(value=value, integer=integer)

    @staticmethod
    def _expect_count(number: int, head: _Token, args: list[_Token], count: int) -> None:
        if len(args) > count:
            extra = args[count]
            raise ScriptSyntaxError(ErrorCode.TOO_MANY_PARAMETERS, number, extra.column, extra.text)
        if len(args) < count:
            column = head.column + len(head.text) if not args else args[-1].column + len(args[-1].text)
            raise ScriptSyntaxError(ErrorCode.UNEXPECTED_CHARACTER, number, column, "missing parameter")


def parse_script(lines: Sequence[str]) -> Script:
    """Parse the script lines that followed `e` (or `l`), before the terminating empty line.

    Line numbers in errors count from 1 = the first line after `e` [mem]; comment-only lines count.

    Raises:
        ScriptSyntaxError: the first error, as the instrument reports it.
    """
    parser = _Parser()
    for number, line in enumerate(lines, start=1):
        tokens = _tokens(line)
        if tokens:
            parser.parse_line(number, tokens)
    if parser.stack:
        raise ScriptSyntaxError(ErrorCode.UNEXPECTED_END, len(lines) + 1, 1, "unclosed block")
    return Script(parser.body, parser.on_finished or [], tuple(parser.declared))


# ---------------------------------------------------------------------------------- interpreter


class MeasurementLoop(Protocol):
    """One running measurement loop, as the instrument model runs it."""

    code: int
    """Technique code for the `M<code>` line."""

    def next_time(self) -> float | None:
        """Time (time-source seconds) the next point is due, or None after the last one."""
        ...

    def measure(self) -> Sequence[Var]:
        """Take the point that is due now (the model has been brought to its time).

        Returns one `Var` per output variable of the loop, in order.
        """
        ...

    def close(self) -> None:
        """The loop ended (finished, broken out of or aborted)."""
        ...


class Hardware(Protocol):
    """What the interpreter needs from an instrument model."""

    def now(self) -> float:
        """The model's present time (time-source seconds)."""
        ...

    def command(self, name: str, args: Sequence[str | float]) -> None:
        """Execute one of `HARDWARE_COMMANDS` with evaluated parameters (types as str, numbers as float).

        Raises:
            ScriptRuntimeError: the instrument refuses the command or a value.
        """
        ...

    def read(self, var_type: str) -> Var:
        """A single reading of `var_type` (`meas`), now.

        Raises:
            ScriptRuntimeError: the type cannot be measured.
        """
        ...

    def start_loop(self, name: str, params: Sequence[float]) -> MeasurementLoop:
        """Start measurement loop `name` (`meas_loop_…`) with its evaluated numeric parameters.

        Raises:
            ScriptRuntimeError: wrong mode, cell state or parameter.
        """
        ...


class _Abort(Exception):
    """Thrown into the run by `ScriptRun.abort`."""


class _Break(Exception):
    """`breakloop`."""


Emit = Callable[[str], None]

_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "add_var": lambda a, b: a + b,
    "sub_var": lambda a, b: a - b,
    "mul_var": lambda a, b: a * b,
    "div_var": lambda a, b: a / b if b != 0 else math.nan,
}


class ScriptRun:
    """One execution of a parsed script.

    Drive it with `steps()`: a generator yielding the time until which it waits; resume it (`next`)
    once the model has been brought to that time. It writes output lines through `emit`.

    Args:
        script: the parsed script.
        hardware: the instrument model the commands act on.
        emit: receives each output line, without terminator.
    """

    def __init__(self, script: Script, hardware: Hardware, emit: Emit) -> None:
        self.script = script
        self.hardware = hardware
        self.emit = emit
        self.variables: dict[str, Var] = {name: Var() for name in script.variables}
        self.finished = False
        self.finishing = False
        """True once the `on_finished:` block runs (an abort no longer applies)."""
        self._timer_start = hardware.now()
        self._line = 0
        """Line of the statement executing (for run-time error reports)."""
        self._package: list[Var] | None = None
        self._generator = self._run()

    # ------------------------------------------------------------------ driving

    def steps(self) -> Generator[float, None, None]:
        """The run as a generator of wake-up times (see the class docs)."""
        return self._generator

    def abort(self) -> float | None:
        """Abort the run now: throw into the generator and return its next wake-up time (None = done).

        Ignored (returns None without touching the generator) while `on_finished:` runs.
        """
        if self.finished or self.finishing:
            return None
        try:
            return self._generator.throw(_Abort())
        except StopIteration:
            return None

    # ------------------------------------------------------------------ execution

    def _run(self) -> Generator[float, None, None]:
        try:
            yield from self._block(self.script.body)
        except _Abort:
            pass
        except ScriptRuntimeError as error:
            self.emit(f"!{error.code:04X}: Line {self._line}")
            self.finished = True
            return
        self.finishing = True
        try:
            yield from self._block(self.script.on_finished)
        except ScriptRuntimeError as error:
            self.emit(f"!{error.code:04X}: Line {self._line}")
            self.finished = True
            return
        self.emit("")
        self.finished = True

    def _block(self, statements: list[Statement]) -> Generator[float, None, None]:
        for statement in statements:
            self._line = statement.line
            if isinstance(statement, Command):
                yield from self._command(statement)
            elif isinstance(statement, MeasLoop):
                yield from self._meas_loop(statement)
            elif isinstance(statement, LoopBlock):
                yield from self._loop(statement)
            else:
                for condition, body in statement.branches:
                    if self._test(condition):
                        yield from self._block(body)
                        break
                else:
                    if statement.otherwise is not None:
                        yield from self._block(statement.otherwise)

    def _loop(self, block: LoopBlock) -> Generator[float, None, None]:
        self.emit("L")
        try:
            while self._test(block.condition):
                # Give the caller a chance to abort, and a bound on work per call, on every pass.
                yield self.hardware.now()
                try:
                    yield from self._block(block.body)
                except _Break:
                    break
                self._line = block.line
        except _Abort:
            self.emit("+")
            raise
        self.emit("+")

    def _meas_loop(self, block: MeasLoop) -> Generator[float, None, None]:
        params = [self._number(operand) for operand in block.params]
        loop = self.hardware.start_loop(block.name, params)
        self.emit(f"M{loop.code:04X}")
        try:
            while (due := loop.next_time()) is not None:
                yield due
                self._line = block.line
                for name, value in zip(block.outputs, loop.measure(), strict=True):
                    self.variables[name] = value
                try:
                    yield from self._block(block.body)
                except _Break:
                    break
        except _Abort:
            loop.close()
            self.emit("*")
            raise
        loop.close()
        self.emit("*")

    def _command(self, command: Command) -> Generator[float, None, None]:
        name, args = command.name, command.args
        if name in HARDWARE_COMMANDS:
            values = [arg if isinstance(arg, str) else self._number(arg) for arg in args]
            self.hardware.command(name, values)
        elif name == "wait":
            duration = self._number(self._operand(args[0]))
            if duration < 0:
                raise ScriptRuntimeError(ErrorCode.OUT_OF_RANGE, "negative wait")
            yield self.hardware.now() + duration
        elif name == "store_var":
            target, operand, var_type = args
            value = self._operand(operand)
            self.variables[self._name(target)] = Var(str(var_type), self._value(value), self._is_int(value))
        elif name == "copy_var":
            source, target = args
            self.variables[self._name(target)] = self.variables[self._name(source)]
        elif name in _ARITHMETIC:
            target = self._name(args[0])
            old = self.variables[target]
            value = _ARITHMETIC[name](old.value, self._value(self._operand(args[1])))
            self.variables[target] = Var(old.type, value, old.integer and float(value).is_integer())
        elif name == "timer_start":
            self._timer_start = self.hardware.now()
        elif name == "timer_get":
            self.variables[self._name(args[0])] = Var("eb", self.hardware.now() - self._timer_start)
        elif name == "meas":
            duration = self._number(self._operand(args[0]))
            if duration <= 0:
                raise ScriptRuntimeError(ErrorCode.MUST_BE_POSITIVE, "meas time")
            yield self.hardware.now() + duration
            self.variables[self._name(args[1])] = self.hardware.read(str(args[2]))
        elif name == "pck_start":
            if self._package is not None:
                raise ScriptRuntimeError(ErrorCode.NOT_ALLOWED_HERE, "pck_start twice")
            self._package = []
        elif name == "pck_add":
            if self._package is None:
                raise ScriptRuntimeError(ErrorCode.NOT_ALLOWED_HERE, "pck_add without pck_start")
            self._package.append(self.variables[self._name(args[0])])
        elif name == "pck_end":
            if self._package is None:
                raise ScriptRuntimeError(ErrorCode.NOT_ALLOWED_HERE, "pck_end without pck_start")
            self.emit(format_package(self._package))
            self._package = None
        elif name == "breakloop":
            raise _Break
        else:  # pragma: no cover - the parser admits only known commands
            raise ScriptRuntimeError(ErrorCode.SCRIPT_UNKNOWN_COMMAND, name)

    # ------------------------------------------------------------------ evaluation

    def _test(self, condition: Condition) -> bool:
        return _OPERATORS[condition.operator](self._value(condition.left), self._value(condition.right))

    def _value(self, operand: Operand) -> float:
        if operand.name is None:
            return operand.value
        return self.variables[operand.name].value

    def _is_int(self, operand: Operand) -> bool:
        if operand.name is None:
            return operand.integer
        return self.variables[operand.name].integer

    def _number(self, operand: Operand) -> float:
        value = self._value(operand)
        if not math.isfinite(value):
            raise ScriptRuntimeError(ErrorCode.NAN_VALUE, "parameter is not a number")
        return value

    @staticmethod
    def _operand(arg: str | Operand) -> Operand:
        assert isinstance(arg, Operand)
        return arg

    @staticmethod
    def _name(arg: str | Operand) -> str:
        assert isinstance(arg, str)
        return arg
