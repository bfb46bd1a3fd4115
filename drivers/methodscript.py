r"""PalmSens MethodSCRIPT as data: the output-stream codec and the script builders.

Nothing here does I/O: `drivers.emstat` moves the bytes. Decoding follows the MethodSCRIPT manual
v1.8 and PalmSens' MIT example code (`palmsens/mscript.py`, `instrument.py`, the `MSLoopExample*`
scripts), re-implemented, not copied. INSTRUMENTS.md §2.5 has the worked examples the tests check.

Output stream, one line per item (the terminator `\n` already stripped):

======================  ============================================================
``e``                   the script was received and runs
``M0000``               a measurement loop starts (``M`` + 4 hex digits)
``L`` / ``C0000``       a plain ``loop`` / a scan (``nscans``) starts
``P<var>;<var>…``       a data package
``*`` / ``+`` / ``-``   end of a measurement loop / loop / scan
``Z``                   abort acknowledged while a script ran
empty line              end of the script
``…!XXXX[:details]``    an error (4 hex digits); ``Z!0006`` = nothing was running
``T<text>``             ``send_string`` output [mem]
======================  ============================================================

A variable is a 2-character type id, 7 hex digits holding the value + 2^27, and one SI-prefix
character (``da7F85F3Fu`` = −0.499905 V), or the type id and ``"     nan"``. Optional metadata
follows, comma-separated: ``1X`` a status nibble (`Status`), ``2XX`` a range index.

Script numbers are written as integers with an SI suffix (``100m``, ``78500n``, ``11i`` for an
integer), as in every official example: decimal points are never needed.

Every malformed line raises `InstrumentReplyError` (never IndexError/ValueError), so a garbled
serial line becomes one clear driver error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Literal

from drivers.errors import InstrumentReplyError

VALUE_OFFSET = 1 << 27
"""Added to every encoded value so that the 7 hex digits are never negative."""

SI_PREFIXES: dict[str, float] = {
    "a": 1e-18,
    "f": 1e-15,
    "p": 1e-12,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    " ": 1.0,
    "i": 1.0,  # an integer
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}
"""SI-prefix character → factor, as used in data packages and in script literals."""

NAN_FIELD = "     nan"
"""How a package writes NaN in place of the 7 hex digits and the prefix."""


@dataclass(frozen=True, slots=True)
class VarType:
    """What a 2-character variable type id means.

    Attributes:
        code: the id on the wire (``da``).
        name: what it measures.
        unit: SI unit of the decoded value ("" for counts and generic values).
    """

    code: str
    name: str
    unit: str


VAR_TYPES: dict[str, VarType] = {
    v.code: v
    for v in (
        VarType("aa", "unknown", ""),
        VarType("ab", "WE vs RE potential", "V"),
        VarType("ac", "CE vs GND potential", "V"),
        VarType("ad", "SE vs GND potential", "V"),
        VarType("ae", "RE vs GND potential", "V"),
        VarType("af", "WE vs GND potential", "V"),
        VarType("ag", "WE vs CE potential", "V"),
        VarType("ah", "S2 vs RE potential", "V"),
        VarType("ai", "SE vs S2 potential", "V"),
        VarType("as", "AIN0 potential", "V"),
        VarType("at", "AIN1 potential", "V"),
        VarType("au", "AIN2 potential", "V"),
        VarType("av", "AIN3 potential", "V"),
        VarType("aw", "AIN4 potential", "V"),
        VarType("ax", "AIN5 potential", "V"),
        VarType("ay", "AIN6 potential", "V"),
        VarType("az", "AIN7 potential", "V"),
        VarType("ba", "WE current", "A"),
        VarType("bb", "WE2 current", "A"),
        VarType("ca", "phase", "deg"),
        VarType("cb", "impedance modulus |Z|", "Ohm"),
        VarType("cc", "Z real", "Ohm"),
        VarType("cd", "Z imaginary (math sign: negative = capacitive)", "Ohm"),
        VarType("ce", "EIS E TDD", "V"),
        VarType("cf", "EIS I TDD", "A"),
        VarType("cg", "EIS sampling frequency", "Hz"),
        VarType("ch", "EIS E AC", "V"),
        VarType("ci", "EIS E DC", "V"),
        VarType("cj", "EIS I AC", "A"),
        VarType("ck", "EIS I DC", "A"),
        VarType("da", "applied potential", "V"),
        VarType("db", "applied current", "A"),
        VarType("dc", "applied frequency", "Hz"),
        VarType("dd", "applied AC amplitude", "V"),
        VarType("ea", "channel", ""),
        VarType("eb", "time", "s"),
        VarType("ec", "pin mask", ""),
        VarType("ed", "temperature", "degC"),
        VarType("ee", "count", ""),
        VarType("ef", "board temperature", "degC"),
        VarType("ha", "generic current 1", "A"),
        VarType("hb", "generic current 2", "A"),
        VarType("hc", "generic current 3", "A"),
        VarType("hd", "generic current 4", "A"),
        VarType("ia", "generic potential 1", "V"),
        VarType("ib", "generic potential 2", "V"),
        VarType("ic", "generic potential 3", "V"),
        VarType("id", "generic potential 4", "V"),
        VarType("ja", "misc. generic 1", ""),
        VarType("jb", "misc. generic 2", ""),
        VarType("jc", "misc. generic 3", ""),
        VarType("jd", "misc. generic 4", ""),
    )
}
"""Type ids PalmSens documents. An id not listed still decodes (a newer firmware may add some), with
`VarType(code, "unknown", "")`."""


class Status(IntFlag):
    """The metadata status nibble (``,1X``) of a variable."""

    OK = 0
    TIMING_ERROR = 0x1
    """The loop could not keep its interval (the sample was late)."""
    OVERLOAD = 0x2
    """The value was beyond its range (clipped)."""
    UNDERLOAD = 0x4
    """The value was below the useful part of its range (low resolution)."""
    OVERLOAD_WARNING = 0x8
    """Close to overload."""


CURRENT_RANGES_EMSTAT4: dict[int, str] = {
    3: "1 nA",  # LR only
    6: "10 nA",  # LR only
    9: "100 nA",
    12: "1 uA",
    15: "10 uA",
    18: "100 uA",
    21: "1 mA",
    24: "10 mA",
    27: "100 mA",  # HR only
}
"""EmStat4 range index (``,2XX`` on a current variable) → range [src `mscript.py`]."""

CURRENT_RANGES_EMSTAT_PICO: dict[int, str] = {
    **{i: r for i, r in enumerate(("100 nA", "2 uA", "4 uA", "8 uA", "16 uA", "32 uA", "63 uA"))},
    7: "125 uA",
    8: "250 uA",
    9: "500 uA",
    10: "1 mA",
    11: "5 mA",
    128: "100 nA (high speed)",
    129: "1 uA (high speed)",
    130: "6 uA (high speed)",
    131: "13 uA (high speed)",
    132: "25 uA (high speed)",
    133: "50 uA (high speed)",
    134: "100 uA (high speed)",
    135: "200 uA (high speed)",
    136: "1 mA (high speed)",
    137: "5 mA (high speed)",
}
"""EmStat Pico range index → range [src `mscript.py`]."""

ERROR_CODES: dict[int, str] = {
    0x0006: "the command is not valid in the current state (e.g. an abort with no script running)",
}
"""Error code → meaning, where confirmed in PalmSens' public code ([src] `instrument.py`). The full
table is in the MethodSCRIPT manual's error-code appendix; codes not listed are reported by number."""


def describe_error(code: int) -> str:
    """A meaning for an error code, or a pointer to the manual when it is not known here."""
    return ERROR_CODES.get(code, "see the error-code table of the MethodSCRIPT manual")


# --------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True, slots=True)
class Variable:
    """One decoded variable of a data package.

    Attributes:
        type_id: the 2-character type id.
        value: the value in SI units (NaN when the instrument sent ``nan``).
        status: the status nibble (`Status.OK` when absent).
        range_index: the range index from the ``2XX`` metadata, or None when absent.
    """

    type_id: str
    value: float
    status: Status = Status.OK
    range_index: int | None = None

    @property
    def var_type(self) -> VarType:
        """The documented meaning of `type_id` (an "unknown" entry for undocumented ids)."""
        return VAR_TYPES.get(self.type_id, VarType(self.type_id, "unknown", ""))


@dataclass(frozen=True, slots=True)
class DataPackage:
    """A ``P`` line: the variables the script added with ``pck_add``, in order."""

    variables: tuple[Variable, ...]

    @property
    def status(self) -> Status:
        """The status flags of all variables, OR-ed."""
        flags = Status.OK
        for variable in self.variables:
            flags |= variable.status
        return flags


@dataclass(frozen=True, slots=True)
class ExecuteAck:
    """``e``: the script was received and runs."""


@dataclass(frozen=True, slots=True)
class LoopStart:
    """``M0000`` (measurement loop), ``L`` (loop) or ``C0000`` (scan) begins."""

    kind: Literal["measurement", "loop", "scan"]
    index: int | None = None


@dataclass(frozen=True, slots=True)
class LoopEnd:
    """``*`` (measurement loop), ``+`` (loop) or ``-`` (scan) ends."""

    kind: Literal["measurement", "loop", "scan"]


@dataclass(frozen=True, slots=True)
class AbortAck:
    """``Z``: the abort reached a running script; its remaining output and the end follow."""


@dataclass(frozen=True, slots=True)
class EndOfScript:
    """The empty line that ends a script's output."""


@dataclass(frozen=True, slots=True)
class TextLine:
    """``T…``: text a script sent with ``send_string`` [mem]."""

    text: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A line with ``!XXXX``: the instrument refused a command or a script failed.

    Attributes:
        code: the 4-hex-digit error code.
        command: what preceded the ``!`` (``Z`` in ``Z!0006``; ``e`` for a script), may be "".
        details: text after ``:`` (often the script line and column), may be "".
    """

    code: int
    command: str = ""
    details: str = ""

    @property
    def message(self) -> str:
        """One line for an operator: code, meaning, details."""
        where = f" ({self.details})" if self.details else ""
        after = f" after {self.command!r}" if self.command else ""
        return f"error 0x{self.code:04X}{after}: {describe_error(self.code)}{where}"


StreamItem = ExecuteAck | LoopStart | LoopEnd | AbortAck | EndOfScript | TextLine | ErrorReply | DataPackage
"""Anything `decode_line` returns."""

_HEX = set("0123456789abcdefABCDEF")
_ERROR = re.compile(r"^(?P<command>[^!]*)!(?P<code>[0-9A-Fa-f]{4})(?::(?P<details>.*))?$")
_LOOP_KINDS: dict[str, Literal["measurement", "loop", "scan"]] = {
    "M": "measurement",
    "L": "loop",
    "C": "scan",
    "*": "measurement",
    "+": "loop",
    "-": "scan",
}


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in _HEX for c in text)


def decode_variable(token: str) -> Variable:
    """Decode one variable such as ``ba82AB973f,14,284``.

    Raises:
        InstrumentReplyError: the token is not a variable as the manual describes it.
    """
    head, *metadata = token.split(",")
    if len(head) != 10:
        raise InstrumentReplyError(f"MethodSCRIPT variable {token!r}: expected 10 characters before ','")
    type_id, body = head[:2], head[2:]
    if not (type_id.isascii() and type_id.isalpha() and type_id.islower()):
        raise InstrumentReplyError(f"MethodSCRIPT variable {token!r}: bad type id {type_id!r}")
    if body == NAN_FIELD:
        value = math.nan
    else:
        digits, prefix = body[:7], body[7]
        if not _is_hex(digits):
            raise InstrumentReplyError(f"MethodSCRIPT variable {token!r}: {digits!r} is not 7 hex digits")
        if prefix not in SI_PREFIXES:
            raise InstrumentReplyError(f"MethodSCRIPT variable {token!r}: unknown SI prefix {prefix!r}")
        value = (int(digits, 16) - VALUE_OFFSET) * SI_PREFIXES[prefix]
    status, range_index = Status.OK, None
    for item in metadata:
        if len(item) == 2 and item[0] == "1" and _is_hex(item[1]):
            status = Status(int(item[1], 16))
        elif len(item) == 3 and item[0] == "2" and _is_hex(item[1:]):
            range_index = int(item[1:], 16)
        else:
            raise InstrumentReplyError(f"MethodSCRIPT variable {token!r}: unknown metadata {item!r}")
    return Variable(type_id, value, status, range_index)


def decode_package(line: str) -> DataPackage:
    """Decode a ``P`` line (``Pda7F85F3Fu;ba48D503Dp,10,288``) into its variables.

    Raises:
        InstrumentReplyError: the line is not a data package.
    """
    if not line.startswith("P") or len(line) < 2:
        raise InstrumentReplyError(f"not a MethodSCRIPT data package: {line[:80]!r}")
    return DataPackage(tuple(decode_variable(token) for token in line[1:].split(";")))


def parse_error(line: str) -> ErrorReply | None:
    """The error in `line` if it is an error reply (``Z!0006``, ``e!0004: Line 3``), else None."""
    error = _ERROR.match(line)
    if error is None:
        return None
    return ErrorReply(int(error["code"], 16), error["command"], (error["details"] or "").strip())


def decode_line(line: str) -> StreamItem:
    """Classify and decode one line of a script's output (terminator already stripped).

    Raises:
        InstrumentReplyError: the line fits none of the documented forms.
    """
    if line == "":
        return EndOfScript()
    error = parse_error(line)
    if error is not None:
        return error
    first = line[0]
    if first == "P":
        return decode_package(line)
    if line == "e":
        return ExecuteAck()
    if line == "Z":
        return AbortAck()
    if first in "MC" and len(line) == 5 and _is_hex(line[1:]):
        return LoopStart(_LOOP_KINDS[first], int(line[1:], 16))
    if line == "L":
        return LoopStart("loop")
    if line in ("*", "+", "-"):
        return LoopEnd(_LOOP_KINDS[line])
    if first == "T":
        return TextLine(line[1:])
    raise InstrumentReplyError(f"unexpected MethodSCRIPT output line {line[:80]!r}")


def encode_variable(
    type_id: str, value: float, *, status: int | None = None, range_index: int | None = None
) -> str:
    """Encode a value as the instrument would (the inverse of `decode_variable`).

    Picks the SI prefix that keeps the most digits within the 7-hex-digit field. Used by tests
    and transcripts; labctl never sends variables to an instrument.
    """
    if math.isnan(value):
        body = NAN_FIELD
    else:
        for prefix in ("a", "f", "p", "n", "u", "m", " ", "k", "M", "G", "T", "P", "E"):
            mantissa = round(value / SI_PREFIXES[prefix])
            if -VALUE_OFFSET <= mantissa < VALUE_OFFSET:
                break
        else:
            raise ValueError(f"{value!r} is too large to encode")
        body = f"{mantissa + VALUE_OFFSET:07X}{prefix}"
    token = type_id + body
    if status is not None:
        token += f",1{status:X}"
    if range_index is not None:
        token += f",2{range_index:02X}"
    return token


# --------------------------------------------------------------------------------------------
# Script literals and builders


def si_literal(value: float, *, integer: bool = False) -> str:
    """A number as a MethodSCRIPT literal: an integer mantissa with an SI suffix.

    The shortest exact form is preferred (``100k``, ``200m``, ``78500n``); a value with more
    digits than a 28-bit mantissa holds is rounded at the finest prefix that fits. Integers
    (counts) get the ``i`` suffix (``11i``).
    """
    if integer:
        if value != int(value):
            raise ValueError(f"{value!r} is not an integer")
        return f"{int(value)}i"
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be written in a script")
    if value == 0:
        return "0"
    candidates = ("E", "P", "T", "G", "M", "k", " ", "m", "u", "n", "p", "f", "a")
    for prefix in candidates:
        mantissa = value / SI_PREFIXES[prefix]
        whole = round(mantissa)
        if whole != 0 and abs(whole) < VALUE_OFFSET and abs(mantissa - whole) <= 1e-9 * abs(mantissa):
            return f"{whole}{prefix.strip()}"
    for prefix in reversed(candidates):  # not exact anywhere: the finest prefix that still fits
        whole = round(value / SI_PREFIXES[prefix])
        if abs(whole) < VALUE_OFFSET:
            return f"{whole}{prefix.strip()}"
    raise ValueError(f"{value!r} is out of range for a script literal")


CURRENT_RANGE_DECADES: tuple[float, ...] = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Current ranges of the EmStat4/Nexus families (each model offers a contiguous part)."""


def current_range_for(current_a: float, *, lowest_a: float = 1e-9, highest_a: float = 1.0) -> float:
    """The smallest range decade that holds `current_a` (magnitude), within the model's ranges."""
    magnitude = abs(current_a)
    for decade in CURRENT_RANGE_DECADES:
        if lowest_a <= decade <= highest_a and decade >= magnitude * (1 - 1e-9):
            return decade
    return highest_a


def points_for(f_start_hz: float, f_end_hz: float, points_per_decade: float) -> int:
    """How many logarithmically spaced frequencies give `points_per_decade` from start to end.

    Both ends are measured, so 1 decade at 10 points per decade is 11 points.
    """
    if f_start_hz <= 0 or f_end_hz <= 0:
        raise ValueError("frequencies must be positive")
    if points_per_decade <= 0:
        raise ValueError("points_per_decade must be positive")
    decades = abs(math.log10(f_start_hz / f_end_hz))
    return max(1, round(decades * points_per_decade)) + (1 if decades > 0 else 0)


@dataclass(frozen=True)
class Script:
    """A generated script and the layout of the packages it streams.

    Attributes:
        text: what is sent to the instrument, from the ``e`` line to the closing empty line.
        columns: the type class of each package variable, in ``pck_add`` order: "V", "A", "Hz",
            "Ohm" — checked against the decoded type ids so a script/parser mismatch is caught.
        interval_s: the sample interval of a timed loop (None for EIS and plain scripts).
    """

    text: str
    columns: tuple[str, ...] = ()
    interval_s: float | None = None
    limits: dict[str, float] = field(default_factory=dict)
    """The limits checked inside the loop (`voltage_v` or `current_a`, magnitudes)."""


def _script(lines: list[str]) -> str:
    # `e` starts execution; an empty line ends the script (INSTRUMENTS.md §2.5).
    return "e\n" + "\n".join(lines) + "\n\n"


def _packages(*names: str) -> list[str]:
    return ["    pck_start", *(f"        pck_add {name}" for name in names), "    pck_end"]


def _limit_checks(variable: str, limit: float | None) -> list[str]:
    """Stop the loop (and so, through on_finished, switch the cell off) beyond ±limit."""
    if limit is None:
        return []
    return [
        f"    if {variable} > {si_literal(abs(limit))}",
        "        breakloop",
        "    endif",
        f"    if {variable} < {si_literal(-abs(limit))}",
        "        breakloop",
        "    endif",
    ]


def _bandwidth_for(interval_s: float) -> float:
    # Official timed-loop examples filter at 10–300 Hz for 100 ms intervals [src]; scale with the
    # sampling rate so short intervals are not smoothed away [mem].
    return float(max(60, math.ceil(6.0 / interval_s)))


def _check_timing(interval_s: float, run_time_s: float) -> None:
    if interval_s <= 0:
        raise ValueError(f"sample interval must be positive, not {interval_s!r} s")
    if run_time_s < interval_s:
        raise ValueError(f"run time {run_time_s!r} s is shorter than the interval {interval_s!r} s")


def chronopotentiometry_script(
    *,
    current_a: float,
    interval_s: float,
    run_time_s: float,
    potential_range_v: float,
    voltage_limit_v: float | None = None,
    current_range_a: float | None = None,
) -> Script:
    """Galvanostatic constant current (CP) that streams (potential, current) every interval.

    EmStat4/Nexus only (pgstat mode 6); the EmStat Pico has no galvanostat [src `MSLoopExample009`].

    Args:
        current_a: applied current, A (sign as the instrument's: positive = anodic at WE).
        interval_s: sample interval, s.
        run_time_s: how long the loop runs, s (the driver uses a long time and aborts with ``Z``).
        potential_range_v: potential measurement range, V (autoranging from 100 mV up to it).
        voltage_limit_v: if given, the loop stops when |E| passes it and `on_finished` switches the
            cell off: a galvanostat has no compliance clamp, so this is its protective equivalent.
        current_range_a: applied-current range, A (default: the decade that holds `current_a`).
    """
    _check_timing(interval_s, run_time_s)
    i_range = current_range_a or current_range_for(max(abs(current_a), 1e-6))
    v_range = abs(potential_range_v)
    lines = [
        "var p",
        "var i",
        "var i_dc",
        "var dt",
        "var t_run",
        f"store_var i_dc {si_literal(current_a)} ja",
        f"store_var dt {si_literal(interval_s)} ja",
        f"store_var t_run {si_literal(run_time_s)} ja",
        "set_pgstat_chan 0",
        "set_pgstat_mode 6",
        f"set_max_bandwidth {si_literal(_bandwidth_for(interval_s))}",
        f"set_range ab {si_literal(v_range)}",
        f"set_autoranging ab {si_literal(min(0.1, v_range))} {si_literal(v_range)}",
        f"set_range db {si_literal(i_range)}",
        f"set_autoranging db {si_literal(i_range)} {si_literal(i_range)}",
        "set_i 0",
        "cell_on",
        "meas_loop_cp p i i_dc dt t_run",
        *_packages("p", "i"),
        *_limit_checks("p", voltage_limit_v),
        "endloop",
        "on_finished:",
        "    cell_off",
    ]
    limits = {} if voltage_limit_v is None else {"voltage_v": abs(voltage_limit_v)}
    return Script(_script(lines), ("V", "A"), interval_s, limits)


def chronoamperometry_script(
    *,
    potential_v: float,
    interval_s: float,
    run_time_s: float,
    current_range_a: float,
    lowest_current_range_a: float = 1e-7,
    current_limit_a: float | None = None,
) -> Script:
    """Potentiostatic constant potential (CA) that streams (applied potential, current).

    Args:
        potential_v: applied potential, V (WE vs RE).
        interval_s: sample interval, s.
        run_time_s: how long the loop runs, s.
        current_range_a: highest current range, A (autoranging from `lowest_current_range_a`).
        lowest_current_range_a: lowest autoranging current range, A.
        current_limit_a: if given, the loop stops when |I| passes it and the cell is switched off.
    """
    _check_timing(interval_s, run_time_s)
    lowest = min(lowest_current_range_a, current_range_a)
    lines = [
        "var p",
        "var i",
        "var e_dc",
        "var dt",
        "var t_run",
        f"store_var e_dc {si_literal(potential_v)} ja",
        f"store_var dt {si_literal(interval_s)} ja",
        f"store_var t_run {si_literal(run_time_s)} ja",
        "set_e e_dc",
        "set_pgstat_chan 0",
        "set_pgstat_mode 3",
        f"set_max_bandwidth {si_literal(_bandwidth_for(interval_s))}",
        "set_range_minmax da e_dc e_dc",
        f"set_range ba {si_literal(current_range_a)}",
        f"set_autoranging ba {si_literal(lowest)} {si_literal(current_range_a)}",
        "cell_on",
        "meas_loop_ca p i e_dc dt t_run",
        *_packages("p", "i"),
        *_limit_checks("i", current_limit_a),
        "endloop",
        "on_finished:",
        "    cell_off",
    ]
    limits = {} if current_limit_a is None else {"current_a": abs(current_limit_a)}
    return Script(_script(lines), ("V", "A"), interval_s, limits)


def ocp_script(*, interval_s: float, run_time_s: float, potential_range_v: float = 1.0) -> Script:
    """Open-circuit potential: cell off, stream the potential every interval [src `MSExample034`]."""
    _check_timing(interval_s, run_time_s)
    v_range = abs(potential_range_v)
    lines = [
        "var p",
        "var dt",
        "var t_run",
        f"store_var dt {si_literal(interval_s)} ja",
        f"store_var t_run {si_literal(run_time_s)} ja",
        "set_pgstat_chan 0",
        "set_pgstat_mode 3",
        f"set_max_bandwidth {si_literal(_bandwidth_for(interval_s))}",
        f"set_range ab {si_literal(v_range)}",
        f"set_autoranging ab {si_literal(min(0.01, v_range))} {si_literal(v_range)}",
        "cell_off",
        "meas_loop_ocp p dt t_run",
        *_packages("p"),
        "endloop",
        "on_finished:",
        "    cell_off",
    ]
    return Script(_script(lines), ("V",), interval_s)


def _check_eis(amplitude: float, f_start_hz: float, f_end_hz: float, n_points: int) -> None:
    if amplitude <= 0:
        raise ValueError(f"EIS amplitude must be positive, not {amplitude!r}")
    if f_start_hz <= 0 or f_end_hz <= 0:
        raise ValueError("EIS frequencies must be positive")
    if n_points < 1:
        raise ValueError(f"EIS needs at least one point, not {n_points!r}")


def peis_script(
    *,
    amplitude_v: float,
    f_start_hz: float,
    f_end_hz: float,
    n_points: int,
    e_dc_v: float,
    current_range_a: float = 1e-3,
    lowest_current_range_a: float = 1e-7,
    potential_range_v: float = 4.0,
) -> Script:
    """Potentiostatic EIS: (frequency, Z′, Z″) per frequency, log-spaced [src `MSLoopExample012`].

    Args:
        amplitude_v: AC amplitude, V.
        f_start_hz: first frequency, Hz.
        f_end_hz: last frequency, Hz.
        n_points: number of frequencies (both ends included).
        e_dc_v: DC potential, V.
        current_range_a: highest current range, A (autoranging down to `lowest_current_range_a`).
        lowest_current_range_a: lowest autoranging current range, A.
        potential_range_v: potential measurement range, V.
    """
    _check_eis(amplitude_v, f_start_hz, f_end_hz, n_points)
    lowest = min(lowest_current_range_a, current_range_a)
    bandwidth = 10 * max(f_start_hz, f_end_hz)
    lines = [
        "var f",
        "var z_re",
        "var z_im",
        "var e_ac",
        "var f_start",
        "var f_end",
        "var n_f",
        "var e_dc",
        f"store_var e_ac {si_literal(amplitude_v)} ja",
        f"store_var f_start {si_literal(f_start_hz)} ja",
        f"store_var f_end {si_literal(f_end_hz)} ja",
        f"store_var n_f {si_literal(n_points, integer=True)} ja",
        f"store_var e_dc {si_literal(e_dc_v)} ja",
        "set_e e_dc",
        "set_pgstat_chan 0",
        "set_pgstat_mode 3",
        f"set_max_bandwidth {si_literal(bandwidth)}",
        "set_range_minmax da e_dc e_dc",
        f"set_range ba {si_literal(current_range_a)}",
        f"set_autoranging ba {si_literal(lowest)} {si_literal(current_range_a)}",
        f"set_range ab {si_literal(potential_range_v)}",
        f"set_autoranging ab {si_literal(potential_range_v)} {si_literal(potential_range_v)}",
        "cell_on",
        "meas_loop_eis f z_re z_im e_ac f_start f_end n_f e_dc",
        *_packages("f", "z_re", "z_im"),
        "endloop",
        "on_finished:",
        "    cell_off",
    ]
    return Script(_script(lines), ("Hz", "Ohm", "Ohm"))


def geis_script(
    *,
    amplitude_a: float,
    f_start_hz: float,
    f_end_hz: float,
    n_points: int,
    i_dc_a: float,
    current_range_a: float | None = None,
    potential_range_v: float = 2.0,
) -> Script:
    """Galvanostatic EIS around a DC current; EmStat4/Nexus only [src `MSLoopExample013`].

    Args:
        amplitude_a: AC amplitude, A.
        f_start_hz: first frequency, Hz.
        f_end_hz: last frequency, Hz.
        n_points: number of frequencies (both ends included).
        i_dc_a: DC current, A.
        current_range_a: applied-current range, A (default: the decade holding |I_dc| + 2·amplitude).
        potential_range_v: potential range, V (autoranging from 100 mV up to it).
    """
    _check_eis(amplitude_a, f_start_hz, f_end_hz, n_points)
    i_range = current_range_a or current_range_for(abs(i_dc_a) + 2 * amplitude_a)
    v_range = abs(potential_range_v)
    bandwidth = 10 * max(f_start_hz, f_end_hz)
    lines = [
        "var f",
        "var z_re",
        "var z_im",
        "var i_ac",
        "var f_start",
        "var f_end",
        "var n_f",
        "var i_dc",
        f"store_var i_ac {si_literal(amplitude_a)} ja",
        f"store_var f_start {si_literal(f_start_hz)} ja",
        f"store_var f_end {si_literal(f_end_hz)} ja",
        f"store_var n_f {si_literal(n_points, integer=True)} ja",
        f"store_var i_dc {si_literal(i_dc_a)} ja",
        "set_i 0",
        "set_pgstat_chan 0",
        "set_pgstat_mode 6",
        f"set_max_bandwidth {si_literal(bandwidth)}",
        f"set_range ab {si_literal(v_range)}",
        f"set_autoranging ab {si_literal(min(0.1, v_range))} {si_literal(v_range)}",
        f"set_range db {si_literal(i_range)}",
        f"set_autoranging db {si_literal(i_range)} {si_literal(i_range)}",
        "cell_on",
        "meas_loop_geis f z_re z_im i_ac f_start f_end n_f i_dc",
        *_packages("f", "z_re", "z_im"),
        "endloop",
        "on_finished:",
        "    cell_off",
    ]
    return Script(_script(lines), ("Hz", "Ohm", "Ohm"))


def cell_off_script() -> Script:
    """Switch the cell off and nothing else; its reply is ``e`` then the end-of-script line."""
    return Script(_script(["cell_off"]))
