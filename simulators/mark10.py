r"""Mark-10 Series 5 / Series 7 force gauge simulator speaking GCL2, on a pty and on TCP.

Layers, as in `simulators.emstat`:

* `Mark10Simulator` is the gauge as its serial port sees it: `handle_bytes` takes received bytes
  and returns the replies due. Commands end with CR (a CRLF's LF, or any LF, is ignored); every
  reply ends with CRLF. The force comes from a `ForceSource` (a `StackMechanics`, or anything with
  `force_n()`), advanced to `time_source()` before each command when it has `advance_to`.
* `Mark10Server` (TCP, pyserial `socket://127.0.0.1:PORT`) and `Mark10PtyServer` (a pseudo-terminal,
  `/dev/pts/N`) are the EmStat4 streaming front-ends of `simulators.emstat` reused for a CRLF
  protocol: same `Faults` (`simulators.tcp`), `unplug()`/`replug()` on the pty, `drop_connections()`
  on TCP. `garble_next_reply` corrupts the next reply's text but keeps its CRLF, so a client reads
  one bad line (not a frame that never ends). `drop_next_command` fires on a chunk holding an LF,
  so it catches CRLF-terminated commands (what `drivers.mark10` sends), not bare-CR ones.

Sources: [src] = INSTRUMENTS.md §3.1 (Series 5/7i user guides, Opentrons' `mark10_fg.py`);
[mem] = a plausible choice not confirmed against the manual or hardware.

* [src] `?` → the displayed (primary) reading, e.g. `12.345 N`; `?C` the current reading;
  `?PT`/`?PC` the peaks; `LB OZ KG G N MN KN` units; `CUR PT PC` primary mode; `CLR` clears peaks;
  `Z` zeroes and clears; `FLTCn`/`FLTPn` filters, n = 0..10 (2^n samples averaged); `RN RM RV RS`;
  `LIST` → `V1.00;N;CUR;FLTC8;FLTP1;AOUT00;AOFF5;FULL;MIT;POL;B0`; errors `*10` illegal command,
  `*11` not applicable, `*12` invalid specifier, `*22` value too large.
* [mem] Sign: compression positive, tension negative (the Series 4 doc's "tension negative"); peaks
  are shown with the same sign (`?PT` ≤ 0, `?PC` ≥ 0). Peaks are tracked over the readings this
  model evaluates (one per command), not over a 7 kHz sample stream.
* [mem] Setting commands (units, modes, filters, `Z`, `CLR`, `SAVE`, `AOFFn`) answer an empty line
  (CRLF alone); Opentrons' driver expects an empty acknowledgement (`FG_ACK = ""`).
* [mem] Unit strings `N`, `lbF`, `kgF`, `gF`, `ozF`, `mN`, `kN`; a unit whose full scale would need
  more than 5 digits is `*11` (mN and gF on a 2500 N gauge). Commands are case-insensitive.
* [mem] Resolution capacity/10000 (Series 7; Series 5 is /5000); readings are quantised to it.
  Beyond 110 % of capacity (tension or compression, before tare) the gauge answers `OVER`.
* [mem] Noise: Gaussian, `noise_n` standard deviation for FLTC0, divided by √(2^n) for FLTCn
  (averaging); the filter's lag is not modelled. `?A`, `?ET`, `MEM`, `STA`, set points: `*11`.
* [mem] `RN` → `Series 7`, `RM` → the model (`M7-500`), `RV` → `V1.00`, `RS` → the serial.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Protocol

from simulators.base import TimeSource
from simulators.emstat import EmStat4PtyServer, EmStat4Server
from simulators.tcp import Faults

log = logging.getLogger(__name__)

CRLF = "\r\n"

UNITS: dict[str, tuple[str, float]] = {
    "N": ("N", 1.0),
    "LB": ("lbF", 4.4482216152605),
    "KG": ("kgF", 9.80665),
    "G": ("gF", 9.80665e-3),
    "OZ": ("ozF", 0.27801385095378125),
    "MN": ("mN", 1e-3),
    "KN": ("kN", 1e3),
}
"""Unit command → (displayed unit, newtons per unit)."""

OVERLOAD_FRACTION = 1.1
"""Beyond this fraction of capacity the gauge reports `OVER` [mem]."""


class ForceSource(Protocol):
    """What the gauge measures: `simulators.mechanics.StackMechanics` or any force model."""

    def force_n(self) -> float:
        """Force on the sensor, N, compression positive."""
        ...


class ConstantForce:
    """A fixed force, N: a test source (settable `value_n`)."""

    def __init__(self, value_n: float = 0.0) -> None:
        self.value_n = value_n

    def force_n(self) -> float:
        """The set force, N."""
        return self.value_n


class GclError(Exception):
    """A GCL2 error reply (`*10`, `*11`, `*12`, `*22`)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"*{code}")
        self.code = code


class Mark10Simulator:
    """A Mark-10 gauge: GCL2 in, CRLF-terminated replies out.

    Args:
        source: the force model; advanced to `time_source()` per command if it has `advance_to`.
        time_source: monotonic seconds (a fake clock in tests, `time.monotonic` standalone).
        capacity_n: full scale, N (2500 N = an M7-500; a 10 mm cell at 5 MPa needs ~390 N).
        resolution_n: display step, N (default capacity/10000).
        noise_n: reading noise (standard deviation) with FLTC0, N (default 2 × resolution).
        seed: noise seed; the same commands at the same times give the same replies.
        model: what `RM` answers.
        serial_number: what `RS` answers.
    """

    def __init__(
        self,
        source: ForceSource,
        time_source: TimeSource,
        *,
        capacity_n: float = 2500.0,
        resolution_n: float | None = None,
        noise_n: float | None = None,
        seed: int = 0,
        model: str = "M7-500",
        serial_number: str = "1234567",
    ) -> None:
        if capacity_n <= 0:
            raise ValueError("capacity_n must be positive")
        self.source = source
        self.time_source = time_source
        self.capacity_n = capacity_n
        self.resolution_n = resolution_n if resolution_n is not None else capacity_n / 10000
        self.noise_n = noise_n if noise_n is not None else 2 * self.resolution_n
        self.model = model
        self.serial_number = serial_number
        self._rng = random.Random(seed)
        self._input = bytearray()
        self.commands: list[str] = []
        """Every command received, in order (for tests)."""
        self.reset()

    def reset(self) -> None:
        """Power-on settings: lbF, current mode, FLTC8, FLTP1, no tare, peaks cleared [mem]."""
        self.unit = "LB"
        self.mode = "CUR"
        self.filter_current = 8
        self.filter_peak = 1
        self.tare_n = 0.0
        self.clear_peaks()

    def clear_peaks(self) -> None:
        """Forget the peak readings."""
        self.peak_tension_n = 0.0
        self.peak_compression_n = 0.0

    # ------------------------------------------------------------------------------ byte interface

    def handle_bytes(self, data: bytes) -> bytes:
        """Take received bytes; return the replies to every command they complete (CR-terminated)."""
        self._input += data.replace(b"\n", b"")  # LF alone is ignored [src]
        out: list[str] = []
        while (end := self._input.find(b"\r")) >= 0:
            raw = bytes(self._input[:end])
            del self._input[: end + 1]
            out.append(self.handle_line(raw.decode("ascii", errors="replace")) + CRLF)
        return "".join(out).encode("ascii", errors="replace")

    def poll(self) -> bytes:
        """Nothing is sent unprompted (no continuous output mode in this model)."""
        return b""

    def handle_line(self, line: str) -> str:
        """One command (no terminator) → its reply (no terminator)."""
        command = line.strip().upper()
        self.commands.append(command)
        try:
            return self._execute(command)
        except GclError as error:
            return str(error)

    # ------------------------------------------------------------------------------ the gauge

    def raw_force_n(self) -> float:
        """The sensor's force now (source advanced to the time source), before tare and noise, N."""
        advance_to = getattr(self.source, "advance_to", None)
        if advance_to is not None:
            advance_to(self.time_source())
        return float(self.source.force_n())

    def _sample(self, filter_n: int) -> tuple[float, bool]:
        """One reading, N (tared, noisy, quantised) and whether the sensor is overloaded."""
        raw = self.raw_force_n()
        overload = abs(raw) > OVERLOAD_FRACTION * self.capacity_n
        noisy = raw + self._rng.gauss(0.0, self.noise_n / math.sqrt(2**filter_n))
        value = noisy - self.tare_n
        self.peak_compression_n = max(self.peak_compression_n, value)
        self.peak_tension_n = min(self.peak_tension_n, value)
        return value, overload

    def _format(self, value_n: float) -> str:
        label, factor = UNITS[self.unit]
        step = self.resolution_n / factor
        decimals = -math.floor(math.log10(step) + 1e-9)
        if abs(round(step, decimals) - step) > 0.01 * step:  # a 0.25 step needs 2 decimals, not 1
            decimals += 1
        decimals = max(0, decimals)
        quantised = round(value_n / factor / step) * step
        text = f"{quantised:.{decimals}f}"
        if float(text) == 0.0:
            text = text.lstrip("-")
        return f"{text} {label}"

    def _reading(self, which: str) -> str:
        value, overload = self._sample(self.filter_current)
        if overload:
            return "OVER"
        if which == "PT":
            return self._format(self.peak_tension_n)
        if which == "PC":
            return self._format(self.peak_compression_n)
        return self._format(value)

    def _execute(self, command: str) -> str:
        if command == "?":
            return self._reading(self.mode)
        if command == "?C":
            return self._reading("CUR")
        if command in ("?PT", "?PC"):
            return self._reading(command[1:])
        if command in UNITS:
            _label, factor = UNITS[command]
            if self.capacity_n / factor > 99999:
                raise GclError(11)  # full scale would not fit the display [mem]
            self.unit = command
            return ""
        if command in ("CUR", "PT", "PC"):
            self.mode = command
            return ""
        if command == "CLR":
            self.clear_peaks()
            return ""
        if command == "Z":
            self.tare_n = self.raw_force_n()
            self.clear_peaks()
            return ""
        if command.startswith(("FLTC", "FLTP")):
            n = self._number(command[4:], 10)
            if command.startswith("FLTC"):
                self.filter_current = n
            else:
                self.filter_peak = n
            return ""
        if command.startswith("AOFF"):
            self._number(command[4:], 30)
            return ""
        if command == "SAVE":
            return ""
        if command == "LIST":
            unit = UNITS[self.unit][0].upper()
            return (
                f"V1.00;{unit};{self.mode};FLTC{self.filter_current};FLTP{self.filter_peak};"
                "AOUT00;AOFF5;FULL;MIT;POL;B0"
            )
        identity = {"RN": "Series 7", "RM": self.model, "RV": "V1.00", "RS": self.serial_number}
        if command in identity:
            return identity[command]
        if command in ("?A", "?ET", "MEM", "STA") or command.startswith(("SPH", "SPL")):
            raise GclError(11)
        raise GclError(10)

    @staticmethod
    def _number(text: str, largest: int) -> int:
        if not text.isdigit():
            raise GclError(12)
        value = int(text)
        if value > largest:
            raise GclError(22)
        return value


# ---------------------------------------------------------------------------------- front-ends


class ByteInstrument(Protocol):
    """What the streaming front-ends drive: bytes in, bytes out (EmStat4Simulator's interface)."""

    def handle_bytes(self, data: bytes) -> bytes:
        """Replies to the complete commands in `data`."""
        ...

    def poll(self) -> bytes:
        """Output due without input."""
        ...


def garble_first_line(data: bytes) -> bytes:
    """Corrupt the first reply of a chunk: top bit set on its text, its CRLF kept."""
    end = data.find(b"\r\n")
    end = len(data) if end < 0 else end
    return bytes(byte | 0x80 for byte in data[:end]) + data[end:]


class CrlfServer(EmStat4Server):
    """`EmStat4Server` for any CRLF-reply byte instrument; `garble_next_reply` keeps the CRLF.

    Args:
        instrument: the model (`handle_bytes`/`poll`).
        faults: link faults (see the module docstring).
        poll_interval_s: wall-time period of the output poll, s.
        name: for log messages.
    """

    def __init__(
        self,
        instrument: ByteInstrument,
        *,
        faults: Faults | None = None,
        poll_interval_s: float = 0.01,
        name: str = "crlf",
    ) -> None:
        super().__init__(instrument, faults=faults, poll_interval_s=poll_interval_s, name=name)  # type: ignore[arg-type]

    def _received(self, data: bytes) -> None:
        self._deliver(_garble_if_asked(self.faults, self.simulator.handle_bytes(data)))


class CrlfPtyServer(EmStat4PtyServer):
    """`EmStat4PtyServer` for any CRLF-reply byte instrument; see `CrlfServer`.

    Start with `async with CrlfPtyServer(model) as pty:` and open `pty.path`; `unplug()` closes
    the pty (the client's next I/O fails), `replug()` makes a new one at a new path.
    """

    def __init__(
        self,
        instrument: ByteInstrument,
        *,
        faults: Faults | None = None,
        poll_interval_s: float = 0.01,
        name: str = "crlf pty",
    ) -> None:
        super().__init__(instrument, faults=faults, poll_interval_s=poll_interval_s, name=name)  # type: ignore[arg-type]

    def _received(self, data: bytes) -> None:
        self._deliver(_garble_if_asked(self.faults, self.simulator.handle_bytes(data)))


def _garble_if_asked(faults: Faults, data: bytes) -> bytes:
    if data and faults.garble_next_reply:
        faults.garble_next_reply = False
        return garble_first_line(data)
    return data


class Mark10Server(CrlfServer):
    """A `Mark10Simulator` on TCP: `async with Mark10Server(gauge) as s:` → `socket://127.0.0.1:{s.port}`."""

    def __init__(self, gauge: Mark10Simulator, *, faults: Faults | None = None, name: str = "mark10") -> None:
        super().__init__(gauge, faults=faults, name=name)


class Mark10PtyServer(CrlfPtyServer):
    """A `Mark10Simulator` on a pty: `async with Mark10PtyServer(gauge) as p:` → open `p.path`."""

    def __init__(
        self, gauge: Mark10Simulator, *, faults: Faults | None = None, name: str = "mark10 pty"
    ) -> None:
        super().__init__(gauge, faults=faults, name=name)
