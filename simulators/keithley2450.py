"""Keithley 2450 SourceMeter simulator, native SCPI command set, with a TCP front-end.

`Keithley2450Simulator` is the instrument model: settings, a source-measure unit driving an
`ElectricalLoad`, reading buffers, a trigger model and the error queue. It maps one received line
to one reply (`handle_line`) and knows nothing of sockets, so other transports (a pty, a pyserial
`socket://` URL) can drive it later. `Keithley2450Server` serves it over TCP (`simulators.tcp`),
and `serve_keithley2450` runs one standalone on the wall clock (`labctl sim serve keithley2450`).

Time. The model is lazy: before every command it catches up to `time_source()`, integrating the
load in sub-steps of at most `max_step_s` (1 s) at the operating current, and, while a trigger
model runs, taking each reading at its exact trigger time with the load advanced exactly to that
time first. Nothing reads the wall clock except through `time_source`, and noise comes from
`random.Random(seed)`: the same commands at the same simulated times give byte-identical replies.
The model's clock never runs backwards; a few operations (`*OPC?`/`*WAI` while the trigger model
runs, `:READ?` with `:SENS:COUN` > 1) move it ahead of the time source, and commands that arrive
before the time source catches up execute at the model's time.

Sources of behaviour. [man] = Keithley 2450/2461 reference manual text (the 2461, 2461-901-01
Rev. A, is the same command set; read through its public conversion) or INSTRUMENTS.md §2.1 [man]
marks; [mem] = not confirmed against a manual, a plausible choice to check on hardware.

* [man] `:TRACe:DATA? <start>, <end>, "<buf>", <elements…>` returns one flat comma-separated list,
  at most 14 elements; `:TRACe:ACTual:STARt?`/`END?` and `:TRACe:FILL:MODE` (defbuffer1/2 CONTinuous,
  user buffers ONCE); `:TRACe:MAKE` minimum size 10; `:TRIGger:LOAD "SimpleLoop", <count>[, <delay>
  [, "<buf>"]]` and `"DurationLoop", <duration>[, <delay>[, "<buf>"]]` (delay before each
  measurement, default 0); `:TRIGger:STATe?` returns `<state>;<state>;<last block>` e.g.
  `IDLE;IDLE;9`; a compound query `:TRAC:ACT:STAR? "b" ; END? "b"` answers `1;6` (replies of one
  line joined by `;`); UNIT strings like `Watt DC`; the STATus element's bits (questionable 0x1,
  front terminal 0x8).
* [mem] `*RST` defaults: source voltage 0 V, measure current, VLIM 21 V, ILIM 105 µA, NPLC 1,
  autorange on, 2-wire, readback on, front terminals. Changing the source function turns the
  output off. `*LANG?` reports the active language, not one pending a power cycle.
* [mem] Trigger-model blocks: both templates are modelled as 1 DELAY_CONSTANT, 2 MEASURE,
  3 BRANCH (no buffer-clear block: `:INIT` appends to the buffer). States: `IDLE;IDLE;0` before
  any run, `RUNNING;RUNNING;1|2` (in the delay | measuring), `IDLE;IDLE;3` when done,
  `ABORTED;ABORTED;<block>` after `:ABORt`.
* [mem] Buffer element formats: READ, SOUR, REL, FRAC, STAT, SOURSTAT as `%.6E`; SEC integer
  POSIX seconds; DATE `MM/DD/YYYY`; TIME `HH:MM:SS`; TST `MM/DD/YYYY HH:MM:SS.fffffffff`; UNIT and
  SOURUNIT `Volt DC`/`Amp DC`/`Ohm`; FORM/SOURFORM like the display (`+123.4567 mV`, `u` for µ).
  SOURSTAT bits: protection 0x1, readback 0x2, over-temperature 0x4, limited 0x8, 4-wire 0x10,
  output on 0x20.
* [mem] Event log (`:SYSTem:EVENtlog:NEXT?`) and error queue (`:SYSTem:ERRor[:NEXT]?`) are one
  queue here: reading an error through either removes it.

Modelling choices (documented, not claims about the instrument):

* Output OFF: the output relay is treated as open. No current flows (`load.advance(dt, 0.0)`),
  readings are noise around 0 (the load is not seen), SOUR with readback is ~0. A real 2450 in
  its default NORMAL output-off state may instead hold 0 V with a current limit [mem]: check this
  before trusting the simulator for a cell left connected with the output off.
* Compliance: sourcing current, if |V(load, I_set)| would exceed VLIM (or 37 V while the
  interlock is not asserted, INSTRUMENTS.md §2.1), the output holds ±VLIM and the current is what
  the load draws there, found by bisection on the monotonic `load.voltage(I)` within
  |I| ≤ |I_set|. Sourcing voltage, the current is clamped to ±ILIM. `:SOUR:<f>:<x>LIM:TRIP?` is 1
  while limited, and readings carry SOURSTAT bit 0x8.
* Readings: value + Gaussian noise (10 µV rms for volts, 1 ppm of the current range for amps,
  both scaled by 1/sqrt(NPLC)), quantised to 6½ digits of the autorange (20 mV: 10 nV, 200 mV:
  100 nV, 2 V: 1 µV, 20 V: 10 µV, 200 V: 100 µV; current ranges 10 nA…1 A at 1 ppm of range);
  above 105 % of the top (or fixed) range the reading is 9.9E+37 with STAT bit 0x1.
* Trigger model timing: period P = delay + NPLC/line frequency (NPLC of the sense function at
  `:INIT`; changing NPLC later does not change a running model). Reading k (k = 1, 2, …) is taken
  at exactly t_init + k·P, where t_init is the model time of `:INIT`; SimpleLoop takes `count`
  readings, DurationLoop max(1, floor(duration/P)). The model is RUNNING until its last reading.
  Source and limit changes while it runs take effect at the time of the command [mem].
* `*OPC?` and `*WAI` while the trigger model runs complete it at once (the model, its readings and
  the load are fast-forwarded to its end, up to `max_fast_forward_readings` remaining readings;
  beyond that they return at once without waiting). The catch-up runs in the event loop: about
  1 s of wall time per 100 000 readings, during which no client is answered. `*OPC` sets ESR
  bit 0 when the model ends.
* `:READ?` and `:TRAC:TRIG` take `:SENS:COUN` readings, the first at the present time and the
  rest NPLC/line frequency apart; they are refused with -221 while the trigger model runs [mem].
* Buffers in CONTinuous fill mode wrap: indexes always count from the oldest stored reading
  (1 … `:TRAC:ACT?`), so after a wrap index 1 is a newer reading than before. REL is measured from
  the first reading stored since the buffer was last cleared, so it never changes once read.
* Languages: `*LANG TSP|SCPI|SCPI2400` takes effect at `power_cycle()`. In TSP mode only
  IEEE 488.2 common commands (`*IDN?`, `*LANG?`, `*RST`, `*OPC?`, …) are answered; every other
  line is taken as Lua the simulator does not run: no reply and nothing a SCPI client can read
  (a real 2450 would log a TSP syntax error). In SCPI2400 mode `*IDN?` reports a MODEL 2400
  [mem], the common commands and `:SYSTem:ERRor` queries work, and every other header is -113:
  the 2400 command set is not emulated, so a native-SCPI driver fails loudly, as it should after
  checking `*LANG?`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntFlag
from functools import partial
from itertools import islice

from simulators.base import ElectricalLoad, ResistorLoad, TimeSource, wall_time_source
from simulators.scpi import (
    Args,
    Command,
    CommandSet,
    ErrorEvent,
    ErrorQueue,
    ScpiDispatcher,
    ScpiError,
    format_bool,
    format_nr3,
    mnemonic_matches,
    quote,
)
from simulators.tcp import Faults, LineServer

log = logging.getLogger(__name__)

LANGUAGES = ("SCPI", "TSP", "SCPI2400")
"""Command sets a 2450 can run (`*LANG`)."""

CURRENT_MAX_A = 1.05
"""Largest source current magnitude, A [man: QCoDeS/PyMeasure docstrings, ±1.05 A]."""
VOLTAGE_MAX_V = 210.0
NORMAL_OFF_CURRENT_LIMIT_A = 105e-6  # NORMal output-off current limit (see _Settings.off_mode)
"""Largest source voltage magnitude, V (200 V range with 5 % overrange)."""
VLIM_MIN_V = 0.02
"""Smallest voltage limit, V [mem]."""
ILIM_MIN_A = 1e-9
"""Smallest current limit, A [mem]."""
NPLC_MIN = 0.01
NPLC_MAX = 10.0
INTERLOCK_OPEN_MAX_V = 37.0
"""Output voltage ceiling while the interlock is not asserted, V (INSTRUMENTS.md §2.1)."""
SENSE_COUNT_MAX = 300_000
"""Largest `:SENSe:COUNt` [mem]."""
DEFAULT_BUFFER_CAPACITY = 100_000
"""Capacity of defbuffer1/defbuffer2 after reset [man: INSTRUMENTS.md §2.1]."""
MIN_BUFFER_CAPACITY = 10
"""Smallest buffer size [man: `:TRACe:MAKE`, "minimum is 10"]."""
MAX_BUFFER_CAPACITY = 6_875_000
"""Largest standard buffer [man: 2461 total standard-buffer capacity; assumed for the 2450]."""
MAX_ELEMENTS = 14
"""Most buffer elements per `:TRACe:DATA?`/`:READ?`/`:FETCh?` [man]."""
OVERRANGE = 1.05
"""Readings up to 105 % of a range are valid."""
OVERFLOW = 9.9e37
"""The value an overflowed reading reports (SCPI convention)."""
DEFAULT_CLOCK_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Real-time-clock reading of the simulated instrument at construction, unless given."""

_VOLTAGE_RANGES = (0.02, 0.2, 2.0, 20.0, 200.0)
_CURRENT_RANGES = (10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)
_RESISTANCE_RANGES = (20.0, 200.0, 2e3, 20e3, 200e3, 2e6, 20e6, 200e6)
_RANGES = {"VOLT": _VOLTAGE_RANGES, "CURR": _CURRENT_RANGES, "RES": _RESISTANCE_RANGES}
_RESOLUTION = {"VOLT": 5e-7, "CURR": 1e-6, "RES": 5e-7}
"""6½-digit resolution as a fraction of the range (200 mV range: 100 nV)."""
_VOLTAGE_NOISE_V = 10e-6
_CURRENT_NOISE_PPM = 1e-6
_UNITS = {"VOLT": "Volt DC", "CURR": "Amp DC", "RES": "Ohm"}
_DISPLAY_UNITS = {"VOLT": "V", "CURR": "A", "RES": "Ohm"}
_PREFIXES = ((1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"))
_SENSE_QUERY_NAMES = {"VOLT": "VOLT:DC", "CURR": "CURR:DC", "RES": "RES"}

ELEMENTS = (
    "READing",
    "SOURce",
    "RELative",
    "SEConds",
    "FRACtional",
    "TSTamp",
    "STATus",
    "UNIT",
    "SOURUNIT",
    "DATE",
    "TIME",
    "FORMatted",
    "SOURFORMatted",
    "SOURSTATus",
)
"""Buffer elements for `:TRACe:DATA?`, `:READ?` and `:FETCh?` [man]."""

DEFAULT_BUFFERS = ("defbuffer1", "defbuffer2")

_BLOCK_DELAY, _BLOCK_MEASURE, _BLOCK_BRANCH = 1, 2, 3


class MeasureStatus(IntFlag):
    """Bits of a reading's STATus element [man: "Buffer status bits for sense measurements"]."""

    QUESTIONABLE = 0x1
    """The reading is questionable (here: overflow)."""
    TERMINAL_FRONT = 0x8
    """Measured on the front terminals (rear: bit clear)."""


class SourceStatus(IntFlag):
    """Bits of a reading's SOURSTATus element (meanings [man], values [mem])."""

    PROTECTION = 0x1
    """Overvoltage protection was active."""
    READBACK = 0x2
    """The measured, not programmed, source value was recorded."""
    OVER_TEMP = 0x4
    """Overtemperature condition."""
    LIMIT = 0x8
    """The source level was limited (compliance)."""
    SENSE = 0x10
    """Four-wire sense was used."""
    OUTPUT = 0x20
    """The output was on."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One stored measurement."""

    time: float
    """When it was taken, on the simulator clock (time-source seconds)."""
    value: float
    """Measured value in the unit of `function` (9.9E+37 on overflow)."""
    function: str
    """Sense function: "VOLT", "CURR" or "RES"."""
    range: float
    """Measure range used."""
    source_value: float
    """Readback (measured) source value if readback was on, else the programmed level."""
    source_function: str
    """Source function: "VOLT" or "CURR"."""
    status: int
    """`MeasureStatus` bits."""
    source_status: int
    """`SourceStatus` bits."""


class ReadingBuffer:
    """A named reading buffer: `defbuffer1`, `defbuffer2` or one made with `:TRACe:MAKE`.

    Args:
        name: the buffer name.
        capacity: most readings kept.
        continuous: fill mode; True wraps (oldest dropped), False stops storing when full.
    """

    def __init__(self, name: str, capacity: int, *, continuous: bool) -> None:
        self.name = name
        self.capacity = capacity
        self.continuous = continuous
        self._readings: deque[Reading] = deque(maxlen=capacity)
        self.first_time: float | None = None
        """Time of the first reading since the last clear (REL is measured from it)."""

    def clear(self) -> None:
        """Drop every reading."""
        self._readings.clear()
        self.first_time = None

    def resize(self, capacity: int) -> None:
        """Change the capacity; like the instrument, this clears the buffer."""
        self.capacity = capacity
        self._readings = deque(maxlen=capacity)
        self.first_time = None

    def append(self, reading: Reading) -> None:
        """Store a reading (dropped if the buffer is full and fills once)."""
        if not self.continuous and len(self._readings) >= self.capacity:
            return
        if self.first_time is None:
            self.first_time = reading.time
        self._readings.append(reading)

    def latest(self) -> Reading | None:
        """The newest reading, if any."""
        return self._readings[-1] if self._readings else None

    def span(self, start: int, end: int) -> Iterator[Reading]:
        """Readings `start` … `end`, 1-based and inclusive, counted from the oldest stored."""
        return islice(self._readings, start - 1, end)

    def __len__(self) -> int:
        return len(self._readings)


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where the source-measure unit and its load sit at one instant."""

    current_a: float
    """Current into the load, A (0 with the output off)."""
    voltage_v: float
    """Voltage across the output, V (0 with the output off: the relay is open)."""
    limited: bool
    """The source is in compliance (VLIM or ILIM active)."""


@dataclass
class _Settings:
    """Everything `*RST` restores [mem: defaults]."""

    source_function: str = "VOLT"
    source_level: dict[str, float] = field(default_factory=lambda: {"CURR": 0.0, "VOLT": 0.0})
    vlim_v: float = 21.0
    ilim_a: float = 105e-6
    readback: dict[str, bool] = field(default_factory=lambda: {"CURR": True, "VOLT": True})
    source_autorange: dict[str, bool] = field(default_factory=lambda: {"CURR": True, "VOLT": True})
    source_delay_auto: dict[str, bool] = field(default_factory=lambda: {"CURR": True, "VOLT": True})
    sense_function: str = "CURR"
    nplc: dict[str, float] = field(default_factory=lambda: {"VOLT": 1.0, "CURR": 1.0, "RES": 1.0})
    sense_autorange: dict[str, bool] = field(
        default_factory=lambda: {"VOLT": True, "CURR": True, "RES": True}
    )
    sense_range: dict[str, float] = field(default_factory=lambda: {"VOLT": 0.02, "CURR": 10e-9, "RES": 20.0})
    remote_sense: dict[str, bool] = field(
        default_factory=lambda: {"VOLT": False, "CURR": False, "RES": False}
    )
    count: int = 1
    terminals: str = "FRON"
    output_on: bool = False
    off_mode: dict[str, str] = field(default_factory=lambda: {"CURR": "NORM", "VOLT": "NORM"})
    """Output-off state per source function: NORMal (0 V source, current limited to 105 µA:
    it drains a charged cell), ZERO (0 V source at the present limit), HIMPedance or GUARd
    (relay open) [man: `:OUTPut[1]:<function>:SMODe`; the 105 µA NORMal limit is 0.5 % of the
    21 mA range, reported from hardware]."""


@dataclass
class _TriggerModel:
    """A loaded trigger-model template and, once initiated, its run."""

    template: str
    """"SimpleLoop" or "DurationLoop"."""
    count: int
    """SimpleLoop: readings to take."""
    duration_s: float
    """DurationLoop: how long to measure, s."""
    delay_s: float
    """Delay before each measurement, s."""
    buffer_name: str
    t_init: float = 0.0
    period_s: float = 0.0
    total: int = 0
    done: int = 0

    def next_time(self) -> float:
        """Trigger time of the next reading: exactly t_init + k·P."""
        return self.t_init + (self.done + 1) * self.period_s

    def end_time(self) -> float:
        """Time of the last reading."""
        return self.t_init + self.total * self.period_s


class Keithley2450Simulator:
    """A Keithley 2450 SourceMeter driving an electrical load, speaking native SCPI.

    Args:
        load: the device on the output terminals.
        time_source: where time comes from (`time.monotonic` standalone, a simulated clock in
            tests and `--sim` runs).
        seed: seeds the measurement noise.
        line_frequency_hz: mains frequency, 50 or 60 (sets the NPLC aperture; `:SYST:LFR?`).
        language: the command set active at power-on: "SCPI", "TSP" or "SCPI2400".
        serial_number: reported by `*IDN?`.
        firmware_version: reported by `*IDN?`.
        clock_epoch: the instrument's real-time clock at construction (buffer DATE/TIME elements,
            event-log timestamps); fixed by default so replies are reproducible.
        interlock_asserted: state of the safety interlock (`:OUTP:INT:TRIP?`); while not
            asserted the output is limited to ±37 V.
        max_step_s: longest single load integration step, s.
        error_queue_size: capacity of the error queue.
        max_fast_forward_readings: `*OPC?`/`*WAI` complete a running trigger model at once only
            if at most this many readings remain (computing them costs real time).
    """

    def __init__(
        self,
        load: ElectricalLoad,
        time_source: TimeSource,
        seed: int = 0,
        line_frequency_hz: float = 50.0,
        language: str = "SCPI",
        *,
        serial_number: str = "04455231",
        firmware_version: str = "1.7.12b",
        clock_epoch: datetime = DEFAULT_CLOCK_EPOCH,
        interlock_asserted: bool = False,
        max_step_s: float = 1.0,
        error_queue_size: int = 100,
        max_fast_forward_readings: int = 200_000,
    ) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
        if line_frequency_hz not in (50.0, 60.0):
            raise ValueError("a 2450 runs on 50 Hz or 60 Hz mains")
        if max_step_s <= 0:
            raise ValueError("max_step_s must be positive")
        self.load = load
        self._time_source = time_source
        self.seed = seed
        self.line_frequency_hz = float(line_frequency_hz)
        self.serial_number = serial_number
        self.firmware_version = firmware_version
        self.interlock_asserted = interlock_asserted
        self.max_step_s = max_step_s
        self.max_fast_forward_readings = max_fast_forward_readings
        self._language = language
        self._pending_language = language
        self._rng = random.Random(seed)
        self._t = float(time_source())
        self._t0 = self._t
        if clock_epoch.tzinfo is None:
            raise ValueError("clock_epoch must be timezone-aware (UTC)")
        since_1970 = clock_epoch - datetime(1970, 1, 1, tzinfo=UTC)
        self._epoch_ns = (
            since_1970.days * 86_400 + since_1970.seconds
        ) * 1_000_000_000 + since_1970.microseconds * 1000

        self._errors = ErrorQueue(error_queue_size, on_push=self._note_error)
        self._tsp_errors = ErrorQueue(error_queue_size)  # not readable over SCPI, like the real one
        self._esr = 0
        self._ese = 0
        self._sre = 0
        self._opc_pending = False
        self._settings = _Settings()
        self._buffers: dict[str, ReadingBuffer] = {}
        self._trigger: _TriggerModel | None = None
        self._trigger_state = "IDLE"
        self._trigger_block = 0
        self._reset_instrument()

        def dispatcher(commands: CommandSet, errors: ErrorQueue) -> ScpiDispatcher:
            return ScpiDispatcher(
                commands, self, errors, before_command=self._catch_up, clock=lambda: self._t
            )

        self._dispatchers = {
            "SCPI": dispatcher(NATIVE_COMMANDS, self._errors),
            "SCPI2400": dispatcher(SCPI2400_COMMANDS, self._errors),
            "TSP": dispatcher(COMMON_COMMANDS, self._tsp_errors),
        }

    # ------------------------------------------------------------------ public API

    @property
    def language(self) -> str:
        """The active command set."""
        return self._language

    @property
    def pending_language(self) -> str:
        """The command set selected with `*LANG`, active after `power_cycle()`."""
        return self._pending_language

    @property
    def time(self) -> float:
        """The model's clock (time-source seconds); may lead the time source, never lag it."""
        return self._t

    @property
    def output_enabled(self) -> bool:
        """Whether the output is on."""
        return self._settings.output_on

    def handle_line(self, line: str) -> str | None:
        """Execute one received line; return the reply (replies joined by `;`) or None.

        The reply has no terminator: framing belongs to the transport.
        """
        if self._language == "TSP" and not line.lstrip().startswith("*"):
            self._catch_up()
            log.debug("TSP mode: ignoring non-common line %r", line)
            return None
        replies = self._dispatchers[self._language].execute(line)
        return ";".join(replies) if replies else None

    def power_cycle(self) -> None:
        """Switch off and on: a pending `*LANG` takes effect, everything volatile is reset.

        The load is not reset (it is a separate device); it is integrated up to now first.
        """
        self._catch_up()
        self._language = self._pending_language
        self._reset_instrument()
        self._errors.clear()
        self._tsp_errors.clear()
        self._esr = self._ese = self._sre = 0

    def operating_point(self) -> OperatingPoint:
        """The source and load now (after catching up with the time source), without noise."""
        self._catch_up()
        return self._operating_point()

    # ------------------------------------------------------------------ time and physics

    def _catch_up(self) -> None:
        self._advance_to(self._time_source())

    def _advance_to(self, t: float) -> None:
        """Bring the model to time t, taking due trigger-model readings on the way."""
        trigger = self._trigger
        while trigger is not None and self._trigger_state == "RUNNING" and trigger.next_time() <= t:
            reading_time = trigger.next_time()
            self._integrate_to(reading_time)
            self._buffers[trigger.buffer_name].append(self._measure())
            trigger.done += 1
            if trigger.done >= trigger.total:
                self._finish_trigger(_BLOCK_BRANCH)
        self._integrate_to(t)

    def _integrate_to(self, t: float) -> None:
        while self._t < t:
            t_next = min(self._t + self.max_step_s, t)
            self.load.advance(t_next - self._t, self._operating_point().current_a)
            self._t = t_next

    def _voltage_ceiling(self) -> float:
        return VOLTAGE_MAX_V if self.interlock_asserted else INTERLOCK_OPEN_MAX_V

    def _operating_point(self) -> OperatingPoint:
        settings = self._settings
        if not settings.output_on:
            mode = settings.off_mode[settings.source_function]
            if mode in ("HIMP", "GUAR"):
                return OperatingPoint(0.0, 0.0, False)
            limit = NORMAL_OFF_CURRENT_LIMIT_A if mode == "NORM" else settings.ilim_a
            i, _ = self._solve_current(0.0, -limit, limit)  # a 0 V source across the load
            return OperatingPoint(i, self.load.voltage(i), False)
        if settings.source_function == "CURR":
            i_set = settings.source_level["CURR"]
            v_max = min(settings.vlim_v, self._voltage_ceiling())
            v = self.load.voltage(i_set)
            if abs(v) <= v_max:
                return OperatingPoint(i_set, v, False)
            bound = abs(i_set)
            i, _ = self._solve_current(math.copysign(v_max, v), -bound, bound)
            return OperatingPoint(i, self.load.voltage(i), True)
        ceiling = self._voltage_ceiling()
        v_set = max(-ceiling, min(ceiling, settings.source_level["VOLT"]))
        i, clamped = self._solve_current(v_set, -settings.ilim_a, settings.ilim_a)
        return OperatingPoint(i, self.load.voltage(i) if clamped else v_set, clamped)

    def _solve_current(self, target_v: float, low: float, high: float) -> tuple[float, bool]:
        """Current in [low, high] at which the load shows target_v; (bound, True) if outside.

        Bisection assumes `load.voltage` increases with current (true of cells and resistors).
        """
        load = self.load
        if target_v <= load.voltage(low):
            return low, target_v < load.voltage(low)
        if target_v >= load.voltage(high):
            return high, target_v > load.voltage(high)
        for _ in range(200):
            mid = 0.5 * (low + high)
            if mid in (low, high):
                break
            if load.voltage(mid) < target_v:
                low = mid
            else:
                high = mid
        return 0.5 * (low + high), False

    def _aperture_s(self, function: str | None = None) -> float:
        function = function or self._settings.sense_function
        return self._settings.nplc[function] / self.line_frequency_hz

    def _measure(self) -> Reading:
        """One reading at the model's present time."""
        settings = self._settings
        function = settings.sense_function
        op = self._operating_point()
        on = settings.output_on
        scale = 1.0 / math.sqrt(settings.nplc[function])
        if function == "VOLT":
            raw = (op.voltage_v if on else 0.0) + self._rng.gauss(0.0, _VOLTAGE_NOISE_V * scale)
        elif function == "CURR":
            true_i = op.current_a if on else 0.0
            raw = true_i + self._rng.gauss(0.0, self._current_noise(true_i) * scale)
        else:
            v = (op.voltage_v if on else 0.0) + self._rng.gauss(0.0, _VOLTAGE_NOISE_V * scale)
            raw = v / op.current_a if on and abs(op.current_a) > 1e-15 else OVERFLOW
        value, rng = self._quantise(raw, function)

        source_function = settings.source_function
        if settings.readback[source_function]:
            actual = (op.current_a if source_function == "CURR" else op.voltage_v) if on else 0.0
            sigma = self._current_noise(actual) if source_function == "CURR" else _VOLTAGE_NOISE_V
            source_value = actual + self._rng.gauss(0.0, sigma * scale)
        else:
            source_value = settings.source_level[source_function]

        status = MeasureStatus(0)
        if settings.terminals == "FRON":
            status |= MeasureStatus.TERMINAL_FRONT
        if value >= OVERFLOW:
            status |= MeasureStatus.QUESTIONABLE
        source_status = SourceStatus(0)
        if settings.readback[source_function]:
            source_status |= SourceStatus.READBACK
        if op.limited:
            source_status |= SourceStatus.LIMIT
        if settings.remote_sense[function]:
            source_status |= SourceStatus.SENSE
        if on:
            source_status |= SourceStatus.OUTPUT
        return Reading(
            time=self._t,
            value=value,
            function=function,
            range=rng,
            source_value=source_value,
            source_function=source_function,
            status=int(status),
            source_status=int(source_status),
        )

    @staticmethod
    def _current_noise(current_a: float) -> float:
        ranges = _CURRENT_RANGES
        rng = next((r for r in ranges if abs(current_a) <= r * OVERRANGE), ranges[-1])
        return _CURRENT_NOISE_PPM * rng

    def _quantise(self, value: float, function: str) -> tuple[float, float]:
        """Round to the resolution of the range; (9.9E+37, range) above 105 % of it."""
        settings = self._settings
        ranges = _RANGES[function]
        if settings.sense_autorange[function]:
            rng = next((r for r in ranges if abs(value) <= r * OVERRANGE), None)
            if rng is None:
                return OVERFLOW, ranges[-1]
            settings.sense_range[function] = rng
        else:
            rng = settings.sense_range[function]
            if abs(value) > rng * OVERRANGE:
                return OVERFLOW, rng
        step = rng * _RESOLUTION[function]
        return round(value / step) * step, rng

    def _take_readings(self, buffer: ReadingBuffer) -> Reading:
        """`:SENS:COUN` readings into `buffer`, NPLC apart, starting now; return the last."""
        if self._trigger_state == "RUNNING":
            raise ScpiError(-221, "the trigger model is running")
        reading = self._measure()
        buffer.append(reading)
        for _ in range(self._settings.count - 1):
            self._advance_to(self._t + self._aperture_s())
            reading = self._measure()
            buffer.append(reading)
        return reading

    # ------------------------------------------------------------------ trigger model

    def _finish_trigger(self, block: int, state: str = "IDLE") -> None:
        self._trigger_state = state
        self._trigger_block = block
        if self._opc_pending:
            self._opc_pending = False
            self._esr |= 0x01

    def _running_block(self) -> int:
        trigger = self._trigger
        assert trigger is not None
        phase = (self._t - trigger.t_init) - trigger.done * trigger.period_s
        return _BLOCK_DELAY if phase < trigger.delay_s else _BLOCK_MEASURE

    def _complete_overlapped(self) -> None:
        """`*OPC?`/`*WAI`: run the trigger model to its end now (see module docs)."""
        trigger = self._trigger
        if trigger is None or self._trigger_state != "RUNNING":
            return
        if trigger.total - trigger.done > self.max_fast_forward_readings:
            log.warning("not fast-forwarding %d readings", trigger.total - trigger.done)
            return
        self._advance_to(trigger.end_time())

    # ------------------------------------------------------------------ status and reset

    def _note_error(self, event: ErrorEvent) -> None:
        code = event.code
        if -199 <= code <= -100:
            self._esr |= 0x20  # CME, command error
        elif -299 <= code <= -200:
            self._esr |= 0x10  # EXE, execution error
        elif -399 <= code <= -300:
            self._esr |= 0x08  # DDE, device-dependent error
        elif -499 <= code <= -400:
            self._esr |= 0x04  # QYE, query error
        log.debug("SCPI error %s", event.scpi())

    def _reset_instrument(self) -> None:
        """`*RST`: defaults, output off, empty trigger model, buffers cleared, user buffers deleted.

        Buffers are "affected by instrument reset" [man: `:TRACe:ACTual?` table].
        """
        self._settings = _Settings()
        self._trigger = None
        self._trigger_state = "IDLE"
        self._trigger_block = 0
        self._opc_pending = False
        self._buffers = {
            name: ReadingBuffer(name, DEFAULT_BUFFER_CAPACITY, continuous=True) for name in DEFAULT_BUFFERS
        }

    def _utc(self, t: float) -> tuple[int, int]:
        """(POSIX seconds, nanoseconds) on the instrument's real-time clock at model time t."""
        nanoseconds = self._epoch_ns + round((t - self._t0) * 1e9)
        seconds, nanos = divmod(nanoseconds, 1_000_000_000)
        return seconds, nanos

    def _event_time(self, t: float) -> str:
        seconds, nanos = self._utc(t)
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y/%m/%d %H:%M:%S")
        return f"{stamp}.{nanos // 1_000_000:03d}"

    # ------------------------------------------------------------------ helpers for handlers

    def _buffer(self, args: Args, index: int) -> ReadingBuffer:
        name = args.string(index) if args.has(index) else "defbuffer1"
        buffer = self._buffers.get(name)
        if buffer is None:
            raise ScpiError(-224, f"no reading buffer named {name!r}")
        return buffer

    def _elements(self, args: Args, first: int) -> list[str]:
        if len(args) - first > MAX_ELEMENTS:
            raise ScpiError(-108, f"at most {MAX_ELEMENTS} buffer elements")
        elements = [args.choice(i, ELEMENTS) for i in range(first, len(args))]
        return elements or ["READing"]

    def _format_reading(self, reading: Reading, elements: list[str], buffer: ReadingBuffer) -> str:
        return ",".join(self._element(reading, element, buffer) for element in elements)

    def _element(self, reading: Reading, element: str, buffer: ReadingBuffer) -> str:
        if element == "READing":
            return format_nr3(reading.value)
        if element == "SOURce":
            return format_nr3(reading.source_value)
        if element == "RELative":
            first = buffer.first_time if buffer.first_time is not None else reading.time
            return format_nr3(reading.time - first)
        if element == "STATus":
            return format_nr3(reading.status)
        if element == "SOURSTATus":
            return format_nr3(reading.source_status)
        if element == "UNIT":
            return _UNITS[reading.function]
        if element == "SOURUNIT":
            return _UNITS[reading.source_function]
        if element == "FORMatted":
            return _display(reading.value, reading.range, reading.function)
        if element == "SOURFORMatted":
            source_range = _autorange(reading.source_value, reading.source_function)
            return _display(reading.source_value, source_range, reading.source_function)
        seconds, nanos = self._utc(reading.time)
        when = datetime.fromtimestamp(seconds, UTC)
        if element == "SEConds":
            return str(seconds)
        if element == "FRACtional":
            return format_nr3(nanos / 1e9)
        if element == "DATE":
            return when.strftime("%m/%d/%Y")
        if element == "TIME":
            return when.strftime("%H:%M:%S")
        # TSTamp
        return when.strftime("%m/%d/%Y %H:%M:%S") + f".{nanos:09d}"

    def _set_level(self, function: str, value: float) -> None:
        self._settings.source_level[function] = value

    # ------------------------------------------------------------------ handlers: common

    def _q_idn(self, args: Args) -> str:
        args.expect(0, 0)
        if self._language == "SCPI2400":
            return f"KEITHLEY INSTRUMENTS INC.,MODEL 2400,{self.serial_number},{self.firmware_version}"
        return f"KEITHLEY INSTRUMENTS,MODEL 2450,{self.serial_number},{self.firmware_version}"

    def _w_lang(self, args: Args) -> None:
        args.expect(1, 1)
        self._pending_language = args.choice(0, LANGUAGES)

    def _q_lang(self, args: Args) -> str:
        args.expect(0, 0)
        return self._language

    def _w_rst(self, args: Args) -> None:
        args.expect(0, 0)
        self._reset_instrument()

    def _w_cls(self, args: Args) -> None:
        args.expect(0, 0)
        self._errors.clear()
        self._esr = 0
        self._opc_pending = False

    def _w_opc(self, args: Args) -> None:
        args.expect(0, 0)
        if self._trigger_state == "RUNNING":
            self._opc_pending = True
        else:
            self._esr |= 0x01

    def _q_opc(self, args: Args) -> str:
        args.expect(0, 0)
        self._complete_overlapped()
        return "1"

    def _w_wai(self, args: Args) -> None:
        args.expect(0, 0)
        self._complete_overlapped()

    def _q_esr(self, args: Args) -> str:
        args.expect(0, 0)
        value, self._esr = self._esr, 0
        return str(value)

    def _w_ese(self, args: Args) -> None:
        args.expect(1, 1)
        self._ese = args.integer(0, 0, 255)

    def _q_ese(self, args: Args) -> str:
        args.expect(0, 0)
        return str(self._ese)

    def _w_sre(self, args: Args) -> None:
        args.expect(1, 1)
        self._sre = args.integer(0, 0, 255) & ~0x40

    def _q_sre(self, args: Args) -> str:
        args.expect(0, 0)
        return str(self._sre)

    def _q_stb(self, args: Args) -> str:
        args.expect(0, 0)
        status = 0
        if len(self._errors):
            status |= 0x04  # EAV: error available [mem: 2450 status byte bit 2]
        if self._esr & self._ese:
            status |= 0x20  # ESB
        if status & self._sre:
            status |= 0x40  # MSS
        return str(status)

    def _w_trg(self, args: Args) -> None:
        args.expect(0, 0)  # no wait-for-trigger blocks are simulated

    def _q_tst(self, args: Args) -> str:
        args.expect(0, 0)
        return "0"

    # ------------------------------------------------------------------ handlers: system

    def _q_err_next(self, args: Args) -> str:
        args.expect(0, 0)
        event = self._errors.pop()
        return event.scpi() if event else '0,"No error"'

    def _q_err_count(self, args: Args) -> str:
        args.expect(0, 0)
        return str(len(self._errors))

    def _q_err_all(self, args: Args) -> str:
        args.expect(0, 0)
        events = list(self._errors)
        self._errors.clear()
        return ",".join(event.scpi() for event in events) if events else '0,"No error"'

    def _q_event_next(self, args: Args) -> str:
        args.expect(0, 0)
        event = self._errors.pop()
        if event is None:
            return '0,"No error;0;1970/01/01 00:00:00.000"'
        return f'{event.code},"{event.message};1;{self._event_time(event.time)}"'

    def _w_syst_clear(self, args: Args) -> None:
        args.expect(0, 0)
        self._errors.clear()

    def _w_stat_clear(self, args: Args) -> None:
        args.expect(0, 0)  # operation/questionable registers are not modelled

    def _q_line_frequency(self, args: Args) -> str:
        args.expect(0, 0)
        return f"{self.line_frequency_hz:g}"

    # ------------------------------------------------------------------ handlers: output, route

    def _w_output(self, args: Args) -> None:
        args.expect(1, 1)
        self._settings.output_on = args.boolean(0)

    def _w_off_mode(self, args: Args, *, function: str) -> None:
        args.expect(1, 1)
        self._settings.off_mode[function] = args.choice(0, ["NORMal", "HIMPedance", "ZERO", "GUARd"])[
            :4
        ].upper()

    def _q_off_mode(self, args: Args, *, function: str) -> str:
        args.expect(0, 0)
        return self._settings.off_mode[function]

    def _q_output(self, args: Args) -> str:
        args.expect(0, 0)
        return format_bool(self._settings.output_on)

    def _q_interlock(self, args: Args) -> str:
        args.expect(0, 0)
        return format_bool(self.interlock_asserted)

    def _w_terminals(self, args: Args) -> None:
        args.expect(1, 1)
        self._settings.terminals = args.choice(0, ["FRONt", "REAR"])[:4].upper()

    def _q_terminals(self, args: Args) -> str:
        args.expect(0, 0)
        return self._settings.terminals

    # ------------------------------------------------------------------ handlers: source

    def _w_source_function(self, args: Args) -> None:
        args.expect(1, 1)
        function = args.choice(0, ["CURRent", "VOLTage"])[:4].upper()
        if function != self._settings.source_function:
            self._settings.output_on = False  # [mem] a function change turns the output off
        self._settings.source_function = function

    def _q_source_function(self, args: Args) -> str:
        args.expect(0, 0)
        return self._settings.source_function

    def _w_level(self, args: Args, *, function: str) -> None:
        args.expect(1, 1)
        limit = CURRENT_MAX_A if function == "CURR" else VOLTAGE_MAX_V
        self._set_level(function, args.number(0, -limit, limit, default=0.0))

    def _q_level(self, args: Args, *, function: str) -> str:
        args.expect(0, 0)
        return format_nr3(self._settings.source_level[function])

    def _w_vlim(self, args: Args) -> None:
        args.expect(1, 1)
        self._settings.vlim_v = args.number(0, VLIM_MIN_V, VOLTAGE_MAX_V, default=21.0)

    def _q_vlim(self, args: Args) -> str:
        args.expect(0, 0)
        return format_nr3(self._settings.vlim_v)

    def _w_ilim(self, args: Args) -> None:
        args.expect(1, 1)
        self._settings.ilim_a = args.number(0, ILIM_MIN_A, CURRENT_MAX_A, default=105e-6)

    def _q_ilim(self, args: Args) -> str:
        args.expect(0, 0)
        return format_nr3(self._settings.ilim_a)

    def _q_tripped(self, args: Args, *, function: str) -> str:
        args.expect(0, 0)
        active = self._settings.source_function == function and self._operating_point().limited
        return format_bool(active)

    def _w_flag(self, args: Args, *, table: str, function: str) -> None:
        args.expect(1, 1)
        getattr(self._settings, table)[function] = args.boolean(0)

    def _q_flag(self, args: Args, *, table: str, function: str) -> str:
        args.expect(0, 0)
        return format_bool(getattr(self._settings, table)[function])

    # ------------------------------------------------------------------ handlers: sense

    def _w_sense_function(self, args: Args) -> None:
        args.expect(1, 1)
        parts = args.string(0).split(":")
        function = None
        for name in ("VOLTage", "CURRent", "RESistance"):
            if mnemonic_matches(parts[0], name):
                function = name[:4].upper() if name != "RESistance" else "RES"
        dc_ok = len(parts) == 1 or (len(parts) == 2 and parts[1].upper() == "DC")
        if function is None or not dc_ok or (function == "RES" and len(parts) > 1):
            raise ScpiError(-224, f"unknown measure function {args.string(0)!r}")
        self._settings.sense_function = function

    def _q_sense_function(self, args: Args) -> str:
        args.expect(0, 0)
        return quote(_SENSE_QUERY_NAMES[self._settings.sense_function])

    def _w_nplc(self, args: Args, *, function: str) -> None:
        args.expect(1, 1)
        self._settings.nplc[function] = args.number(0, NPLC_MIN, NPLC_MAX, default=1.0)

    def _q_nplc(self, args: Args, *, function: str) -> str:
        args.expect(0, 0)
        return format_nr3(self._settings.nplc[function])

    def _w_sense_range(self, args: Args, *, function: str) -> None:
        args.expect(1, 1)
        ranges = _RANGES[function]
        top = ranges[-1] * OVERRANGE
        value = abs(args.number(0, -top, top, default=ranges[-1]))
        self._settings.sense_range[function] = next(r for r in ranges if value <= r * OVERRANGE)
        self._settings.sense_autorange[function] = False

    def _q_sense_range(self, args: Args, *, function: str) -> str:
        args.expect(0, 0)
        return format_nr3(self._settings.sense_range[function])

    def _w_count(self, args: Args) -> None:
        args.expect(1, 1)
        self._settings.count = args.integer(0, 1, SENSE_COUNT_MAX, default=1)

    def _q_count(self, args: Args) -> str:
        args.expect(0, 0)
        return str(self._settings.count)

    # ------------------------------------------------------------------ handlers: measure

    def _q_read(self, args: Args) -> str:
        buffer = self._buffer(args, 0)
        elements = self._elements(args, 1)
        reading = self._take_readings(buffer)
        return self._format_reading(reading, elements, buffer)

    def _q_fetch(self, args: Args) -> str:
        buffer = self._buffer(args, 0)
        elements = self._elements(args, 1)
        reading = buffer.latest()
        if reading is None:
            raise ScpiError(-230, f"{buffer.name} is empty")
        return self._format_reading(reading, elements, buffer)

    # ------------------------------------------------------------------ handlers: trace

    def _w_trace_make(self, args: Args) -> None:
        args.expect(2, 3)
        name = args.string(0)
        capacity = args.integer(1, MIN_BUFFER_CAPACITY, MAX_BUFFER_CAPACITY)
        if args.has(2):
            style = args.choice(2, ["STANdard", "COMPact", "FULL", "WRITable", "FULLWRITable"])
            if style in ("WRITable", "FULLWRITable"):
                raise ScpiError(-224, "writable buffers are not simulated")
        if not name or name in self._buffers:
            raise ScpiError(-221, f"a buffer named {name!r} exists already")
        self._buffers[name] = ReadingBuffer(name, capacity, continuous=False)

    def _w_trace_delete(self, args: Args) -> None:
        args.expect(1, 1)
        buffer = self._buffer(args, 0)
        if buffer.name in DEFAULT_BUFFERS or self._buffer_in_use(buffer):
            raise ScpiError(-221, f"{buffer.name} cannot be deleted")
        del self._buffers[buffer.name]

    def _buffer_in_use(self, buffer: ReadingBuffer) -> bool:
        trigger = self._trigger
        return trigger is not None and self._trigger_state == "RUNNING" and trigger.buffer_name == buffer.name

    def _w_trace_clear(self, args: Args) -> None:
        args.expect(0, 1)
        self._buffer(args, 0).clear()

    def _w_trace_points(self, args: Args) -> None:
        args.expect(1, 2)
        capacity = args.integer(0, MIN_BUFFER_CAPACITY, MAX_BUFFER_CAPACITY)
        buffer = self._buffer(args, 1)
        if self._buffer_in_use(buffer):
            raise ScpiError(-221, f"{buffer.name} is in use by the running trigger model")
        buffer.resize(capacity)

    def _q_trace_points(self, args: Args) -> str:
        args.expect(0, 1)
        return str(self._buffer(args, 0).capacity)

    def _q_trace_actual(self, args: Args) -> str:
        args.expect(0, 1)
        return str(len(self._buffer(args, 0)))

    def _q_trace_start(self, args: Args) -> str:
        args.expect(0, 1)
        return "1" if len(self._buffer(args, 0)) else "0"

    def _q_trace_end(self, args: Args) -> str:
        args.expect(0, 1)
        return str(len(self._buffer(args, 0)))

    def _q_trace_data(self, args: Args) -> str:
        args.expect(2)
        start = args.integer(0, 1, 2**31)
        end = args.integer(1, 1, 2**31)
        buffer = self._buffer(args, 2)
        elements = self._elements(args, 3)
        if not start <= end <= len(buffer):
            raise ScpiError(-222, f"{start}..{end} is outside 1..{len(buffer)} of {buffer.name}")
        return ",".join(
            self._format_reading(reading, elements, buffer) for reading in buffer.span(start, end)
        )

    def _w_trace_trigger(self, args: Args) -> None:
        args.expect(0, 1)
        self._take_readings(self._buffer(args, 0))

    def _w_fill_mode(self, args: Args) -> None:
        args.expect(1, 2)
        continuous = args.choice(0, ["CONTinuous", "ONCE"]) == "CONTinuous"
        buffer = self._buffer(args, 1)
        if self._buffer_in_use(buffer):
            raise ScpiError(-221, f"{buffer.name} is in use by the running trigger model")
        buffer.continuous = continuous
        buffer.clear()  # [man] changing the fill mode clears the buffer

    def _q_fill_mode(self, args: Args) -> str:
        args.expect(0, 1)
        return "CONT" if self._buffer(args, 0).continuous else "ONCE"

    # ------------------------------------------------------------------ handlers: trigger

    def _w_trigger_load(self, args: Args) -> None:
        args.expect(1)
        template = args.string(0)
        if self._trigger_state == "RUNNING":
            raise ScpiError(-221, "the trigger model is running")
        if template.lower() == "empty":
            args.expect(1, 1)
            self._trigger = None
            self._trigger_state, self._trigger_block = "IDLE", 0
            return
        if template.lower() not in ("simpleloop", "durationloop"):
            raise ScpiError(-224, f"trigger-model template {template!r} is not simulated")
        args.expect(2, 5)
        simple = template.lower() == "simpleloop"
        count, duration = 0, 0.0
        if simple:
            count = args.integer(1, 1, 2**28 - 1)
        else:
            duration = args.number(1, 167e-9, 100e3)
        delay = args.number(2, 0.0, 10e3, default=0.0) if args.has(2) else 0.0
        buffer = self._buffer(args, 3)
        if args.has(4) and args.choice(4, ["ACTive", "MEASure", "DIGitize"]) == "DIGitize":
            raise ScpiError(-224, "digitize blocks are not simulated")
        self._trigger = _TriggerModel(
            template="SimpleLoop" if simple else "DurationLoop",
            count=count,
            duration_s=duration,
            delay_s=delay,
            buffer_name=buffer.name,
        )
        self._trigger_state, self._trigger_block = "IDLE", 0

    def _w_initiate(self, args: Args) -> None:
        args.expect(0, 0)
        trigger = self._trigger
        if trigger is None:
            return  # an empty trigger model has nothing to run
        if self._trigger_state == "RUNNING":
            raise ScpiError(-221, "the trigger model is already running")
        if trigger.buffer_name not in self._buffers:
            raise ScpiError(-221, f"buffer {trigger.buffer_name!r} was deleted")
        trigger.t_init = self._t
        trigger.period_s = trigger.delay_s + self._aperture_s()
        if trigger.template == "SimpleLoop":
            trigger.total = trigger.count
        else:
            trigger.total = max(1, math.floor(trigger.duration_s / trigger.period_s + 1e-9))
        trigger.done = 0
        self._trigger_state, self._trigger_block = "RUNNING", _BLOCK_DELAY

    def _w_abort(self, args: Args) -> None:
        args.expect(0, 0)
        if self._trigger_state == "RUNNING":
            self._finish_trigger(self._running_block(), state="ABORTED")

    def _q_trigger_state(self, args: Args) -> str:
        args.expect(0, 0)
        state = self._trigger_state
        block = self._running_block() if state == "RUNNING" else self._trigger_block
        return f"{state};{state};{block}"


def _autorange(value: float, function: str) -> float:
    ranges = _RANGES[function]
    return next((r for r in ranges if abs(value) <= r * OVERRANGE), ranges[-1])


def _display(value: float, rng: float, function: str) -> str:
    """A reading as the front panel shows it, 6½ digits in the range's unit: `+123.4567 mV`."""
    unit = _DISPLAY_UNITS[function]
    if value >= OVERFLOW:
        return f"Overflow {unit}"
    scale, prefix = next(((s, p) for s, p in _PREFIXES if rng >= s * 0.999), _PREFIXES[-1])
    integer_digits = len(str(round(rng / scale)))
    decimals = max(0, 7 - integer_digits)
    return f"{value / scale:+.{decimals}f} {prefix}{unit}"


# ---------------------------------------------------------------------- command tables

_K = Keithley2450Simulator

COMMON_COMMANDS = CommandSet(
    [
        Command("*IDN", query=_K._q_idn, doc="Identify: maker, model, serial, firmware."),
        Command("*LANG", write=_K._w_lang, query=_K._q_lang, doc="Command set (after a power cycle)."),
        Command("*RST", write=_K._w_rst, doc="Reset settings, buffers and trigger model."),
        Command("*CLS", write=_K._w_cls, doc="Clear the error queue and event status."),
        Command("*OPC", write=_K._w_opc, query=_K._q_opc, doc="Operation complete."),
        Command("*WAI", write=_K._w_wai, doc="Wait for overlapped commands (the trigger model)."),
        Command("*ESR", query=_K._q_esr, doc="Read and clear the standard event status register."),
        Command("*ESE", write=_K._w_ese, query=_K._q_ese, doc="Standard event status enable."),
        Command("*SRE", write=_K._w_sre, query=_K._q_sre, doc="Service request enable."),
        Command("*STB", query=_K._q_stb, doc="Status byte."),
        Command("*TRG", write=_K._w_trg, doc="Bus trigger (no effect: no wait blocks simulated)."),
        Command("*TST", query=_K._q_tst, doc="Self-test: always passes."),
    ]
)

_ERROR_QUERIES = [
    Command(":SYSTem:ERRor[:NEXT]", query=_K._q_err_next, doc="Oldest error, removed."),
    Command(":SYSTem:ERRor:COUNt", query=_K._q_err_count, doc="Number of queued errors."),
    Command(":SYSTem:ERRor:ALL", query=_K._q_err_all, doc="Every queued error, removed."),
]

SCPI2400_COMMANDS = CommandSet([*COMMON_COMMANDS, *_ERROR_QUERIES])


def _source_rows(function: str, word: str) -> list[Command]:
    f = function
    limit_word, limit_w, limit_q = (
        ("VLIMit", _K._w_vlim, _K._q_vlim) if f == "CURR" else ("ILIMit", _K._w_ilim, _K._q_ilim)
    )
    return [
        Command(
            f":SOURce[1]:{word}[:LEVel][:IMMediate][:AMPLitude]",
            write=partial(_K._w_level, function=f),
            query=partial(_K._q_level, function=f),
            doc=f"Source level ({'A, ±1.05' if f == 'CURR' else 'V, ±210'}).",
        ),
        Command(
            f":SOURce[1]:{word}:{limit_word}[:LEVel]",
            write=limit_w,
            query=limit_q,
            doc="Source limit (compliance).",
        ),
        Command(
            f":SOURce[1]:{word}:{limit_word}[:LEVel]:TRIPped",
            query=partial(_K._q_tripped, function=f),
            doc="1 while the source limit is active.",
        ),
        Command(
            f":SOURce[1]:{word}:READ:BACK",
            write=partial(_K._w_flag, table="readback", function=f),
            query=partial(_K._q_flag, table="readback", function=f),
            doc="Record the measured, not programmed, source value.",
        ),
        Command(
            f":SOURce[1]:{word}:RANGe:AUTO",
            write=partial(_K._w_flag, table="source_autorange", function=f),
            query=partial(_K._q_flag, table="source_autorange", function=f),
            doc="Source autorange (accepted, no effect on the model).",
        ),
        Command(
            f":SOURce[1]:{word}:DELay:AUTO",
            write=partial(_K._w_flag, table="source_delay_auto", function=f),
            query=partial(_K._q_flag, table="source_delay_auto", function=f),
            doc="Automatic source delay (accepted, no effect on the model).",
        ),
    ]


def _sense_rows(function: str, word: str) -> list[Command]:
    f = function
    node = f"[:SENSe[1]]:{word}" + ("[:DC]" if f != "RES" else "")
    return [
        Command(
            f"{node}:NPLCycles",
            write=partial(_K._w_nplc, function=f),
            query=partial(_K._q_nplc, function=f),
            doc="Integration time in power-line cycles, 0.01 to 10.",
        ),
        Command(
            f"{node}:RANGe:AUTO",
            write=partial(_K._w_flag, table="sense_autorange", function=f),
            query=partial(_K._q_flag, table="sense_autorange", function=f),
            doc="Measure autorange.",
        ),
        Command(
            f"{node}:RANGe[:UPPer]",
            write=partial(_K._w_sense_range, function=f),
            query=partial(_K._q_sense_range, function=f),
            doc="Measure range (setting one turns autorange off).",
        ),
        Command(
            f"{node}:RSENse",
            write=partial(_K._w_flag, table="remote_sense", function=f),
            query=partial(_K._q_flag, table="remote_sense", function=f),
            doc="Four-wire remote sense.",
        ),
    ]


NATIVE_COMMANDS = CommandSet(
    [
        *COMMON_COMMANDS,
        *_ERROR_QUERIES,
        Command(":SYSTem:EVENtlog:NEXT", query=_K._q_event_next, doc="Oldest event, removed."),
        Command(":SYSTem:CLEar", write=_K._w_syst_clear, doc="Clear the event log."),
        Command(":SYSTem:LFRequency", query=_K._q_line_frequency, doc="Line frequency, Hz."),
        Command(":STATus:CLEar", write=_K._w_stat_clear, doc="Clear event registers."),
        Command(":STATus:PRESet", write=_K._w_stat_clear, doc="Preset status registers."),
        Command(":OUTPut[1][:STATe]", write=_K._w_output, query=_K._q_output, doc="Output on/off."),
        *(
            Command(
                f":OUTPut[1]:{word}:SMODe",
                write=partial(_K._w_off_mode, function=word[:4].upper()),
                query=partial(_K._q_off_mode, function=word[:4].upper()),
                doc="Output-off state: NORMal, HIMPedance, ZERO or GUARd.",
            )
            for word in ("CURRent", "VOLTage")
        ),
        Command(
            ":OUTPut[1]:INTerlock:TRIPped",
            query=_K._q_interlock,
            doc="1 = interlock asserted (all ranges available).",
        ),
        Command(
            ":ROUTe:TERMinals",
            write=_K._w_terminals,
            query=_K._q_terminals,
            doc="FRONt or REAR terminals.",
        ),
        Command(
            ":SOURce[1]:FUNCtion[:MODE]",
            write=_K._w_source_function,
            query=_K._q_source_function,
            doc="Source function CURRent or VOLTage.",
        ),
        *_source_rows("CURR", "CURRent"),
        *_source_rows("VOLT", "VOLTage"),
        Command(
            "[:SENSe[1]]:FUNCtion[:ON]",
            write=_K._w_sense_function,
            query=_K._q_sense_function,
            doc='Measure function "VOLT[:DC]", "CURR[:DC]" or "RES".',
        ),
        *_sense_rows("VOLT", "VOLTage"),
        *_sense_rows("CURR", "CURRent"),
        *_sense_rows("RES", "RESistance"),
        Command("[:SENSe[1]]:COUNt", write=_K._w_count, query=_K._q_count, doc="Readings per READ?."),
        Command(":READ", query=_K._q_read, doc="Measure into a buffer and return the last reading."),
        Command(":FETCh", query=_K._q_fetch, doc="Latest reading of a buffer, no new measurement."),
        Command(":TRACe:MAKE", write=_K._w_trace_make, doc="Create a user buffer."),
        Command(":TRACe:DELete", write=_K._w_trace_delete, doc="Delete a user buffer."),
        Command(":TRACe:CLEar", write=_K._w_trace_clear, doc="Clear a buffer."),
        Command(
            ":TRACe:POINts",
            write=_K._w_trace_points,
            query=_K._q_trace_points,
            doc="Buffer capacity (setting it clears the buffer).",
        ),
        Command(":TRACe:ACTual", query=_K._q_trace_actual, doc="Readings stored."),
        Command(":TRACe:ACTual:STARt", query=_K._q_trace_start, doc="First index (0 if empty)."),
        Command(":TRACe:ACTual:END", query=_K._q_trace_end, doc="Last index (0 if empty)."),
        Command(":TRACe:DATA", query=_K._q_trace_data, doc="Elements of readings start..end."),
        Command(":TRACe:TRIGger", write=_K._w_trace_trigger, doc="Measure into a buffer."),
        Command(
            ":TRACe:FILL:MODE",
            write=_K._w_fill_mode,
            query=_K._q_fill_mode,
            doc="CONTinuous (wrap) or ONCE; changing it clears the buffer.",
        ),
        Command(":TRIGger:LOAD", write=_K._w_trigger_load, doc="Load a trigger-model template."),
        Command(":TRIGger:STATe", query=_K._q_trigger_state, doc="State;state;last block."),
        Command(":INITiate[:IMMediate]", write=_K._w_initiate, doc="Start the trigger model."),
        Command(":ABORt", write=_K._w_abort, doc="Stop the trigger model."),
    ]
)
"""The native SCPI command set this simulator answers; anything else is -113."""

# ---------------------------------------------------------------------- TCP front-end


class Keithley2450Server(LineServer):
    """Serves a `Keithley2450Simulator` over TCP (LF-terminated lines, like port 5025).

    Args:
        simulator: the instrument model; several servers may share one.
        faults: link faults to inject (see `simulators.tcp.Faults`).

    Example:
        async with Keithley2450Server(simulator) as server:
            resource = f"TCPIP0::127.0.0.1::{server.port}::SOCKET"
    """

    def __init__(self, simulator: Keithley2450Simulator, *, faults: Faults | None = None) -> None:
        super().__init__(simulator.handle_line, name="keithley2450", faults=faults)
        self.simulator = simulator

    async def power_cycle(self) -> None:
        """Switch the instrument off and on: every connection drops, all volatile state is lost.

        The output is off and the buffers are empty afterwards (`Keithley2450Simulator.power_cycle`);
        clients must reconnect, as after a real power cycle.
        """
        self.simulator.power_cycle()
        await self.drop_connections()


def _default_load() -> ElectricalLoad:
    """A symmetric Li|SE|Li cell if `simulators.cell` is available, else a 100 Ω resistor."""
    try:
        from simulators.cell import CellParameters, SymmetricCell
    except ImportError:
        log.warning("simulators.cell is not available: serving a 100 ohm resistor")
        return ResistorLoad(100.0)
    return SymmetricCell(CellParameters())


async def serve_keithley2450(
    port: int,
    host: str = "127.0.0.1",
    load: ElectricalLoad | None = None,
    seed: int = 0,
) -> None:
    """Serve a simulated 2450 on host:port on the wall clock until cancelled.

    This is what `labctl sim serve keithley2450 --port N` runs. The instrument's real-time clock
    starts at the present UTC time.

    Args:
        port: TCP port (0 picks a free one; it is logged).
        host: interface to listen on.
        load: the device on the terminals; by default a symmetric cell (`simulators.cell`) or, if
            that module is missing, a 100 Ω resistor.
        seed: measurement-noise seed.
    """
    simulator = Keithley2450Simulator(
        load if load is not None else _default_load(),
        wall_time_source(),
        seed=seed,
        clock_epoch=datetime.now(UTC),
    )
    server = Keithley2450Server(simulator)
    bound = await server.start(host, port)
    log.info("simulated Keithley 2450 at TCPIP0::%s::%d::SOCKET", host, bound)
    async with server:
        await asyncio.get_running_loop().create_future()  # until cancelled
