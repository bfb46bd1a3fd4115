"""Keithley 2450 SourceMeter in its native SCPI command set, as a Potentiostat.

Why native SCPI and not the "SCPI 2400" emulation PyMeasure uses: the native set has the 2450's
reading buffers and trigger models, so 1–10 Hz sampling costs two round trips per *poll* (how many
readings are stored, then all new ones), not one per sample. Commands follow the 2450 Reference
Manual (2450-901-01) and QCoDeS's Keithley_2450 driver. Marked [mem] in INSTRUMENTS.md and not yet
confirmed on hardware: that source levels may change while a SimpleLoop trigger model runs, and
that the REL buffer element counts from the first reading, taken one period after `:INIT`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.base import Reading
from drivers.errors import InstrumentReplyError, InstrumentStateError
from drivers.lifetime import DriverLifetime
from drivers.scpi import (
    MessageTransport,
    ScpiInstrument,
    ScpiSetting,
    in_range,
    one_of,
    parse_bool,
    parse_quoted,
)

BUFFER = "defbuffer1"
ONE_SHOT_BUFFER = "defbuffer2"
BUFFER_CAPACITY = 100_000
ROLLOVER_FRACTION = 0.8  # restart acquisition well before the buffer wraps, so no index is reused
MAX_DRAINED_ERRORS = 100  # the 2450's error queue holds at most this many


@dataclass(frozen=True, slots=True)
class FoundState:
    """What `Keithley2450.reconnect()` found on the instrument, before making it safe.

    Attributes:
        output_on: whether the output was on (a lost link does not stop a 2450 sourcing).
        function: the source function, "CURR" or "VOLT".
        level: the programmed source level (A or V).
        stored: readings in the acquisition buffer.
        salvaged: readings stored before or during the outage and collected now; the next
            `fetch()` returns them (each exactly once).
        reset: the instrument lost its state (power cycle, `*RST`): readings not fetched before the
            outage are gone.
        errors: what the error queue held (drained, not raised).
    """

    output_on: bool
    function: str
    level: float
    stored: int
    salvaged: int
    reset: bool
    errors: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the journal."""
        unit = "A" if self.function == "CURR" else "V"
        output = "on" if self.output_on else "off"
        words = [f"output {output}, source {self.function} {self.level:.6g} {unit}"]
        if self.reset:
            words.append("instrument reset: unfetched readings lost")
        else:
            words.append(f"{self.salvaged} buffered readings collected")
        if self.errors:
            words.append(f"error queue: {'; '.join(self.errors)}")
        return "; ".join(words)


class Keithley2450(DriverLifetime, ScpiInstrument):
    """Async driver for one Keithley 2450 over any message transport (TCP socket, USB-TMC, GPIB).

    Args:
        transport: an open-able message transport (e.g. `VisaTransport`); the driver opens it.
        time_source: monotonic seconds used to time-stamp buffered readings (labctl passes its
            clock so simulated runs stay deterministic).
        nplc: integration time in power-line cycles, 0.01..10.
        four_wire: remote sense (recommended for low-impedance cells).
    """

    SETTINGS = {
        "source_function": ScpiSetting(
            "Control the source function: CURR (galvanostatic) or VOLT (potentiostatic).",
            query=":SOUR:FUNC?",
            command=":SOUR:FUNC {}",
            parse=str.strip,
            validate=one_of("CURR", "VOLT"),
        ),
        "source_current": ScpiSetting(
            "Control the source current in A, -1.05..1.05.",
            query=":SOUR:CURR?",
            command=":SOUR:CURR {}",
            render="{:.9g}".format,
            validate=in_range(-1.05, 1.05),
        ),
        "source_voltage": ScpiSetting(
            "Control the source voltage in V, -210..210.",
            query=":SOUR:VOLT?",
            command=":SOUR:VOLT {}",
            render="{:.9g}".format,
            validate=in_range(-210, 210),
        ),
        "voltage_limit": ScpiSetting(
            "Control the voltage limit (compliance) while sourcing current, in V, 0.02..210.",
            query=":SOUR:CURR:VLIM?",
            command=":SOUR:CURR:VLIM {}",
            render="{:.6g}".format,
            validate=in_range(0.02, 210),
        ),
        "current_limit": ScpiSetting(
            "Control the current limit (compliance) while sourcing voltage, in A, 1e-9..1.05.",
            query=":SOUR:VOLT:ILIM?",
            command=":SOUR:VOLT:ILIM {}",
            render="{:.6g}".format,
            validate=in_range(1e-9, 1.05),
        ),
        "voltage_limit_tripped": ScpiSetting(
            "Get whether the voltage limit is active (bool).",
            query=":SOUR:CURR:VLIM:TRIP?",
            parse=parse_bool,
        ),
        "current_limit_tripped": ScpiSetting(
            "Get whether the current limit is active (bool).",
            query=":SOUR:VOLT:ILIM:TRIP?",
            parse=parse_bool,
        ),
        "current_readback": ScpiSetting(
            "Control whether the SOUR element holds the measured (ON) or programmed current.",
            command=":SOUR:CURR:READ:BACK {}",
            render=lambda on: "ON" if on else "OFF",
        ),
        "source_autorange": ScpiSetting(
            "Control current-source autoranging (bool).",
            command=":SOUR:CURR:RANG:AUTO {}",
            render=lambda on: "1" if on else "0",
        ),
        "sense_function": ScpiSetting(
            'Control the measure function: "VOLT" or "CURR".',
            query=":SENS:FUNC?",
            command=':SENS:FUNC "{}"',
            parse=parse_quoted,
            validate=one_of("VOLT", "CURR"),
        ),
        "sense_autorange": ScpiSetting(
            "Control voltage-measurement autoranging (bool).",
            command=":SENS:VOLT:RANG:AUTO {}",
            render=lambda on: "1" if on else "0",
        ),
        "nplc": ScpiSetting(
            "Control the voltage integration time in power-line cycles, 0.01..10.",
            query=":SENS:VOLT:NPLC?",
            command=":SENS:VOLT:NPLC {}",
            render="{:g}".format,
            validate=in_range(0.01, 10),
        ),
        "four_wire": ScpiSetting(
            "Control remote (4-wire) sense (bool).",
            query=":SENS:VOLT:RSEN?",
            command=":SENS:VOLT:RSEN {}",
            parse=parse_bool,
            render=lambda on: "ON" if on else "OFF",
        ),
        "output": ScpiSetting(
            "Control the output relay (bool).",
            query=":OUTP?",
            command=":OUTP {}",
            parse=parse_bool,
            render=lambda on: "ON" if on else "OFF",
        ),
        "interlock_tripped": ScpiSetting(
            "Get whether the interlock is asserted (bool; without it the 200 V range is disabled).",
            query=":OUTP:INT:TRIP?",
            parse=parse_bool,
        ),
        "line_frequency": ScpiSetting("Get the power-line frequency in Hz (50 or 60).", query=":SYST:LFR?"),
        "language": ScpiSetting(
            "Get the command language: SCPI, TSP or SCPI2400.", query="*LANG?", parse=str.strip
        ),
    }

    def __init__(
        self,
        transport: MessageTransport,
        *,
        time_source: Callable[[], float] = time.monotonic,
        nplc: float = 1.0,
        four_wire: bool = True,
    ) -> None:
        super().__init__(transport)
        self._time = time_source
        self.nplc = nplc
        self.four_wire = four_wire
        self.identity = ""
        self.line_frequency_hz = 50.0
        self._function = ""
        self._output_on = False
        self._limit = 0.0
        self._acquiring = False
        self._period_s = 1.0
        self._t_init = 0.0
        self._fetched = 0
        self._carried: list[Reading] = []

    SAFE_STATE = "output off"

    async def _leave_safe(self) -> None:
        await self.safe_state()

    async def _connect(self) -> None:
        await self._check_identity()
        await self._configure()

    async def _check_identity(self) -> None:
        resource = self.transport.resource
        identity = (await self.transport.query("*IDN?")).strip()
        if "2450" not in identity:
            raise InstrumentStateError(
                f"{resource} identifies as {identity!r}, not a Keithley 2450; check the address"
            )
        if self.identity and identity != self.identity:
            raise InstrumentStateError(
                f"{resource} now answers as {identity!r}, not {self.identity!r} as before; "
                "another instrument is on this address"
            )
        self.identity = identity
        language = await self.get("language")
        if language.upper() != "SCPI":
            raise InstrumentStateError(
                f"the 2450 at {resource} uses the {language} command set; labctl needs SCPI: on the front "
                "panel choose MENU > System > Settings > Command Set > SCPI (or send '*LANG SCPI') and "
                "power-cycle the instrument"
            )

    async def _configure(self) -> None:
        """Output off in high impedance, source 0 A, sense volts: the state after connecting."""
        # High-impedance output-off: the default NORMal off-state is a 0 V source that drains a
        # charged cell through the instrument (2450 manual, battery notes).
        await self.transport.write("*CLS;:ABOR;:OUTP:CURR:SMOD HIMP;:OUTP:VOLT:SMOD HIMP;:OUTP OFF")
        self.line_frequency_hz = await self.get("line_frequency")
        await self.configure(
            source_function="CURR",
            source_autorange=True,
            current_readback=True,
            source_current=0.0,
            sense_function="VOLT",
            sense_autorange=True,
            nplc=self.nplc,
            four_wire=self.four_wire,
        )
        self._function, self._output_on = "CURR", False

    async def _resync(self) -> FoundState:
        """After a reopen: resync, collect what was buffered, leave the instrument as after connecting.

        Status cleared (`*CLS`), error queue drained, identity and language checked, the state found
        recorded, then output off and acquisition stopped.

        Readings in the buffer past the last fetched index are collected once (the next `fetch()`
        returns them); if the buffer holds fewer than were fetched, the instrument was reset and
        they are gone. Either way the buffer index restarts with the next `start_acquisition`.
        """
        await self.transport.write("*CLS")  # clears the event status, not the queue on a 2450
        errors: list[str] = []
        for _ in range(MAX_DRAINED_ERRORS):
            reply = (await self.transport.query(self.ERROR_QUERY)).strip()
            if reply.split(",", 1)[0].strip().lstrip("+") in ("0", "-0"):
                break
            errors.append(reply)
        await self._check_identity()
        output_on = await self.get("output")
        function = await self.get("source_function")
        level = float(await self.get("source_current" if function == "CURR" else "source_voltage"))
        stored = int(self._floats(await self.transport.query(f':TRAC:ACT? "{BUFFER}"'), 1)[0])
        running = (await self.transport.query(":TRIG:STAT?")).strip().upper().startswith("RUNNING")
        await self.transport.write(":ABOR;:OUTP OFF")  # safe first; collecting the buffer can wait
        reset = self._acquiring and (stored < self._fetched or not running)  # nobody else stops it
        before = len(self._carried)
        if self._acquiring and not reset:
            self._carried += await self._fetch_new()
        self._acquiring, self._fetched = False, 0
        await self._configure()
        self._limit = 0.0
        salvaged = len(self._carried) - before
        return FoundState(output_on, function, level, stored, salvaged, reset, tuple(errors))

    async def set_current(self, current_a: float, voltage_limit_v: float) -> None:
        """Source `current_a` (A) with a voltage limit (V); turns the output on."""
        await self._source("CURR", current_a, voltage_limit_v)

    async def set_voltage(self, voltage_v: float, current_limit_a: float) -> None:
        """Source `voltage_v` (V) with a current limit (A), measuring current; turns the output on."""
        await self._source("VOLT", voltage_v, current_limit_a)

    async def _source(self, function: str, level: float, limit: float) -> None:
        """Program the source in as few commands as possible.

        Switching between current and voltage sourcing also switches what is measured (the other
        quantity), which the 2450 refuses while a trigger model runs: the readings taken so far
        are collected first (they keep their meaning), and acquisition restarts afterwards.
        """
        switching = self._function != function
        if switching and self._acquiring:
            await self.transport.write(":ABOR")  # stop first, so no reading lands after the collection
            self._carried += await self._fetch_new()
        commands = []
        if switching:  # a change of source function switches the output off [mem]
            sense = "VOLT" if function == "CURR" else "CURR"
            commands += [
                self.command_for("source_function", function),
                self.command_for("sense_function", sense),
                f":SENS:{sense}:RANG:AUTO 1",
                f":SENS:{sense}:NPLC {self.nplc:g}",
                f":SOUR:{function}:READ:BACK ON",
            ]
        if limit != self._limit or switching:
            commands.append(
                self.command_for("voltage_limit" if function == "CURR" else "current_limit", limit)
            )
        commands.append(self.command_for("source_current" if function == "CURR" else "source_voltage", level))
        if not self._output_on or switching:
            commands.append(self.command_for("output", True))
        await self.transport.write(";".join(commands))
        await self.check_errors()
        self._function, self._limit, self._output_on = function, limit, True
        if switching and self._acquiring:
            self._acquiring = False
            await self.start_acquisition(self._period_s)

    async def output_off(self) -> None:
        """Open the output relay."""
        await self.transport.write(self.command_for("output", False))
        self._output_on = False

    async def read(self) -> Reading:
        """The latest reading: the newest buffered one while acquiring, else one taken now.

        `:READ?` while a trigger model runs is a settings conflict (-221) on the 2450, so during
        acquisition the newest stored reading is fetched instead. A reading taken now goes to the
        second default buffer, so the acquisition buffer's indexes stay untouched.
        """
        if self._acquiring:
            reply = await self.transport.query(f':FETC? "{BUFFER}", READ, SOUR, REL')
            voltage, current, rel = self._floats(reply, 3)
            return Reading(self._t_init + self._period_s + rel, voltage, current)
        reply = await self.transport.query(f':READ? "{ONE_SHOT_BUFFER}", READ, SOUR')
        voltage, current = self._floats(reply, 2)
        return Reading(self._time(), voltage, current)

    async def start_acquisition(self, period_s: float) -> None:
        """Run a SimpleLoop trigger model storing a reading every `period_s` into the buffer."""
        if self._acquiring:
            await self.stop_acquisition()
        aperture = self.nplc / self.line_frequency_hz
        if period_s < aperture:
            raise ValueError(f"sample period {period_s:g} s is shorter than the {aperture:g} s aperture")
        self._period_s = period_s
        await self.transport.write(
            f':TRAC:CLE "{BUFFER}";:TRAC:POIN {BUFFER_CAPACITY}, "{BUFFER}";'
            f':TRIG:LOAD "SimpleLoop", {BUFFER_CAPACITY}, {period_s - aperture:.6g}, "{BUFFER}"'
        )
        await self.check_errors()
        await self.transport.write(":INIT")
        self._t_init = self._time()
        self._fetched = 0
        self._acquiring = True

    async def fetch(self) -> list[Reading]:
        """All readings stored since the last fetch; restarts the loop before the buffer wraps."""
        readings, self._carried = self._carried, []
        if not self._acquiring:
            return readings
        readings += await self._fetch_new()
        if self._fetched >= BUFFER_CAPACITY * ROLLOVER_FRACTION:
            await self.transport.write(":ABOR")
            readings += await self._fetch_new()
            await self.start_acquisition(self._period_s)
        return readings

    async def _fetch_new(self) -> list[Reading]:
        count = self._floats(await self.transport.query(f':TRAC:ACT? "{BUFFER}"'), 1)[0]
        if count < 0 or count != int(count):
            raise InstrumentReplyError(f"{self.transport.resource}: {count!r} is not a reading count")
        stored = int(count)
        if stored <= self._fetched:
            return []
        reply = await self.transport.query(
            f':TRAC:DATA? {self._fetched + 1}, {stored}, "{BUFFER}", READ, SOUR, REL'
        )
        values = self._floats(reply, 3 * (stored - self._fetched))
        self._fetched = stored
        first = self._t_init + self._period_s  # REL counts from the first reading, one period after :INIT
        # READ is the measured quantity and SOUR the source's read-back: which is which depends on
        # what is sourced.
        v, i = (0, 1) if self._function == "CURR" else (1, 0)
        readings = [
            Reading(first + values[k + 2], values[k + v], values[k + i]) for k in range(0, len(values), 3)
        ]
        if readings and self._output_on and self._limit > 0:
            last = readings[-1]
            limited = (
                abs(last.voltage_v if self._function == "CURR" else last.current_a) >= 0.98 * self._limit
            )
            trip = "voltage_limit_tripped" if self._function == "CURR" else "current_limit_tripped"
            if limited and await self.get(trip):
                readings[-1] = Reading(last.t, last.voltage_v, last.current_a, in_compliance=True)
        return readings

    async def stop_acquisition(self) -> None:
        """Stop the trigger model (the source stays as it is)."""
        if self._acquiring:
            await self.transport.write(":ABOR")
            self._acquiring = False

    async def safe_state(self) -> None:
        """Output off, acquisition stopped: the cell sees no current."""
        self._output_on = True  # unknown until confirmed: the caller must treat the cell as live
        await self.transport.write(":ABOR;:OUTP OFF")
        # Only now is the buffer finished with: after a failed write, `reconnect()` still collects it.
        self._acquiring = False
        # Confirm by asking: a write into a socket the peer already closed can still "succeed".
        if await self.get("output"):
            raise InstrumentStateError(f"{self.transport.resource}: the output is still on after :OUTP OFF")
        self._output_on = False

    def _floats(self, reply: str, count: int) -> list[float]:
        try:
            values = [float(token) for token in reply.strip().split(",")]
        except ValueError:
            raise InstrumentReplyError(
                f"{self.transport.resource}: expected numbers, got {reply[:80]!r}"
            ) from None
        if len(values) != count:
            raise InstrumentReplyError(
                f"{self.transport.resource}: expected {count} values, got {len(values)} in {reply[:80]!r}"
            )
        if not all(math.isfinite(v) for v in values):  # a garbled reply; the 2450 marks overflow 9.9e37
            raise InstrumentReplyError(f"{self.transport.resource}: non-finite number in {reply[:80]!r}")
        return values
