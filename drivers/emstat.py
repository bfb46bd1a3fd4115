r"""PalmSens EmStat4 (and Nexus) over MethodSCRIPT, as a Potentiostat with impedance spectra.

A MethodSCRIPT instrument is not set and polled like an SMU: it runs a *script* that streams one
data package per sample until the script ends or is aborted (`Z`). So each source command of the
Potentiostat role starts a script:

- `set_current` aborts whatever runs and starts a chronopotentiometry (CP) script whose loop runs for
  `max_run_s` (days), streaming (potential, current) every sample period until the next command;
- `set_voltage` does the same with a chronoamperometry (CA) script;
- `output_off` aborts and runs a one-line `cell_off` script; `safe_state` does the same even when
  the driver's bookkeeping is in doubt (it resynchronises first), and confirms the `cell_off`
  script's completion.

One reader task, owned by the driver and cancelled on close, consumes a running script's output;
packages become `Reading`s in a buffer that `fetch` drains. Switching from one set-point to the next
aborts a script and starts another, so the cell is open-circuit for the few milliseconds between
them (`on_finished: cell_off` runs on abort [mem]); a galvanostat has no "change the level of the
running loop" command.

**Compliance.** A galvanostat has no voltage clamp. The CP script stops its loop when |E| passes the
voltage limit, and `on_finished` switches the cell off; the reading that passed it is flagged
`in_compliance` (the CA script does the same with the current limit).

**Timing.** A reading's `t` is `time_source()` when the measurement loop announced its start (the
`M` line) plus `k × interval` for the k-th package (k = 1, 2, …). The instrument paces its loop
with its own hardware timer (a late sample is flagged with the status bit `TIMING_ERROR`), so
counting samples is exact; reading the instrument's timer (`timer_get`, type `eb`) instead would mix
a second clock into labctl's journal (crystal drift against the host) and, under a simulated clock,
would depend on how the simulator maps time. Counting keeps every timestamp a pure function of the
start time and the index: identical from run to run in simulated time. `fetch` returns the readings
with `t ≤ time_source()` and first waits briefly (`catch_up_s` of wall time) for any package that is
due by then but still in flight, so batch boundaries do not depend on scheduling either. That the
first package comes one interval after the loop starts (not at zero) is [mem].

**Connect and resync** (PalmSens `abort_and_sync` [src]): send `\n` (flushes a half-received
command) and `Z\n`; skip everything up to the reply that starts with `Z`; after `Z` drain the
aborted script's output up to its end line; after `Z!0006` (nothing ran) wait > 50 ms before the
next command. Then `t` (firmware; its prefix names the model), `v` (MethodSCRIPT version) and a
`cell_off` script. The same resync runs after any error that leaves the instrument's state in
doubt, before the next command. Reconnection after a lost link is the caller's loop around
`async with` (STYLE.md rule 7); the resync on entry recovers a script left running.

Marked [mem] (not confirmed on hardware): the `t` reply's exact layout beyond its prefix and `*`
end; maximum currents per model; that `Z` runs `on_finished`; the bandwidth rule; the `T` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from drivers.base import EisMode, EisPoint, Reading
from drivers.errors import (
    InstrumentError,
    InstrumentRejectedError,
    InstrumentReplyError,
    InstrumentStateError,
    InstrumentTimeout,
)
from drivers.methodscript import (
    VAR_TYPES,
    AbortAck,
    DataPackage,
    EndOfScript,
    ErrorReply,
    ExecuteAck,
    LoopStart,
    Script,
    TextLine,
    cell_off_script,
    chronoamperometry_script,
    chronopotentiometry_script,
    current_range_for,
    decode_line,
    geis_script,
    ocp_script,
    parse_error,
    peis_script,
    points_for,
)

log = logging.getLogger(__name__)


class LineTransport(Protocol):
    """What the EmStat front-end needs from a transport: text out, LF-framed lines in."""

    resource: str

    async def write(self, text: str) -> None:
        """Send `text` as it is (the driver adds every terminator itself)."""
        ...

    async def read_line(self, timeout_s: float | None = None) -> str:
        """The next line without its terminator; InstrumentTimeout if none completes in time."""
        ...

    def discard_input(self) -> bytes:
        """Drop received bytes not yet read."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """What the driver needs to know about one MethodSCRIPT instrument model.

    Attributes:
        prefix: how the firmware string (`t` reply) starts [src `instrument.py`].
        name: the product name.
        galvanostat: it can source current (CP, GEIS); the EmStat Pico cannot [src examples].
        lowest_current_range_a: smallest current range, A [src `mscript.py` range tables].
        highest_current_range_a: largest current range, A [src].
        max_current_a: largest current it sources, A [mem].
        baudrate: the USB virtual COM port's speed [src `serialport.py`].
    """

    prefix: str
    name: str
    galvanostat: bool
    lowest_current_range_a: float
    highest_current_range_a: float
    max_current_a: float
    baudrate: int


DEVICE_MODELS: tuple[DeviceModel, ...] = (
    DeviceModel("es4_lr", "EmStat4 LR", True, 1e-9, 1e-2, 30e-3, 921600),
    DeviceModel("es4_hr", "EmStat4 HR", True, 1e-7, 1e-1, 200e-3, 921600),
    DeviceModel("mes4lr", "MultiEmStat4 LR", True, 1e-9, 1e-2, 30e-3, 921600),
    DeviceModel("mes4hr", "MultiEmStat4 HR", True, 1e-7, 1e-1, 200e-3, 921600),
    DeviceModel("nexus", "Nexus", True, 1e-10, 1.0, 1.0, 921600),
    DeviceModel("espico", "EmStat Pico", False, 1e-7, 5e-3, 5e-3, 230400),
    DeviceModel("senswb", "Sensit Wearable", False, 1e-7, 5e-3, 5e-3, 230400),
)
"""Known models by firmware prefix. `espbl` (EmStat Pico bootloader) is recognised and refused."""

BOOTLOADER_PREFIX = "espbl"


def model_for(firmware: str) -> DeviceModel | None:
    """The model whose prefix starts `firmware` (the `t` reply without its leading `t`)."""
    for model in DEVICE_MODELS:
        if firmware.startswith(model.prefix):
            return model
    return None


_STREAMING = ("cp", "ca", "ocp")


@dataclass(eq=False)
class _Run:
    """One script on the instrument, from `e` to its end line, as the reader task sees it."""

    kind: str
    """"cp", "ca", "ocp" (timed loops that become Readings), "eis", "sample" (one OCP reading),
    or "plain" (no loop, e.g. cell_off)."""
    script: Script
    silence_s: float
    """How long the output may stay silent before the link is declared dead."""
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    acked: bool = False
    t_start: float | None = None
    count: int = 0
    aborting: bool = False
    abort_acked: bool = False
    nothing_running: bool = False
    """The abort met no running script (`Z!0006`): the instrument wants a > 50 ms pause."""
    ended_by_itself: bool = False
    error: InstrumentError | None = None
    packages: list[tuple[float, DataPackage]] = field(default_factory=list)
    last_reading: Reading | None = None

    def close(self) -> None:
        self.started.set()
        self.progress.set()
        self.finished.set()


EIS_MAX_FREQUENCY_HZ = 200e3
EIS_MIN_FREQUENCY_HZ = 1e-5
"""EmStat4 impedance range, 10 µHz – 200 kHz (PalmSens specifications) [mem: not checked on hardware]."""

EIS_PERIODS_PER_POINT = 4
"""Periods measured per frequency, settling included (a generous bound of typical practice)."""
EIS_MIN_POINT_S = 0.2
EIS_START_S = 1.0


def expected_spectrum_s(f_start_hz: float, f_end_hz: float, n_points: int) -> float:
    """An upper bound of how long a spectrum takes: a few periods per frequency, ≥ 0.2 s each, +1 s.

    Used to let simulated time pass while the spectrum is measured: over-estimating only leaves
    the instrument idle for a moment, under-estimating would leave the driver waiting for points
    that a frozen clock never makes due. On hardware the driver then waits for the script's end.
    """
    if n_points < 2:
        return EIS_START_S + max(EIS_MIN_POINT_S, EIS_PERIODS_PER_POINT / f_start_hz)
    ratio = (f_end_hz / f_start_hz) ** (1.0 / (n_points - 1))
    return EIS_START_S + sum(
        max(EIS_MIN_POINT_S, EIS_PERIODS_PER_POINT / (f_start_hz * ratio**k)) for k in range(n_points)
    )


class EmStat4:
    """Async driver for a PalmSens EmStat4 (LR/HR) or Nexus over MethodSCRIPT.

    Args:
        transport: a line transport (e.g. `SerialTransport("/dev/ttyACM0", baudrate=921600)` or
            `SerialTransport("socket://127.0.0.1:4000")`); the driver opens and closes it.
        time_source: monotonic seconds used to time-stamp readings and EIS points (labctl passes
            its clock so simulated runs stay deterministic).
        require_galvanostat: refuse, at connect, a model without a galvanostat (EmStat Pico),
            because the Potentiostat role sources current; pass False for potentiostatic EIS only.
        default_period_s: sample interval of source scripts when no acquisition was started, s.
        max_run_s: run time written into streaming scripts, s; the driver aborts them long before.
        timeout_s: deadline for a reply to a command or a script to start, s.
        abort_timeout_s: deadline for a running script to finish after `Z`, s.
        poll_s: the reader's low-level wait slice, s (< 1 s, as PalmSens advises).
        catch_up_s: longest wall-clock wait in `fetch` for packages already due, s.
        error_pause_s: pause after a `!` reply before the next command (> 50 ms [src]), s.
        eis_current_range_a: highest current range of potentiostatic EIS, A (default: the model's).
        eis_potential_range_v: potential range of EIS, V.
        sleep: how to let time pass while a spectrum is measured (labctl passes its clock's sleep).
            Under a simulated clock nothing else advances time while the driver waits, so the
            driver first waits the spectrum's expected duration (`expected_spectrum_s`) on this
            clock, then for the rest in wall time. None: wait in wall time only.
    """

    def __init__(
        self,
        transport: LineTransport,
        *,
        time_source: Callable[[], float] = time.monotonic,
        require_galvanostat: bool = True,
        default_period_s: float = 1.0,
        max_run_s: float = 1e6,
        timeout_s: float = 5.0,
        abort_timeout_s: float = 30.0,
        poll_s: float = 0.5,
        catch_up_s: float = 0.5,
        error_pause_s: float = 0.1,
        eis_current_range_a: float | None = None,
        eis_potential_range_v: float = 4.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.transport = transport
        self._time = time_source
        self.require_galvanostat = require_galvanostat
        self.default_period_s = default_period_s
        self.max_run_s = max_run_s
        self.timeout_s = timeout_s
        self.abort_timeout_s = abort_timeout_s
        self.poll_s = poll_s
        self.catch_up_s = catch_up_s
        self.error_pause_s = error_pause_s
        self.eis_current_range_a = eis_current_range_a
        self.eis_potential_range_v = eis_potential_range_v
        self._sleep = sleep
        self.identity = ""
        """The firmware string from `t` (e.g. "es4_lr1.3#…"), known after connecting."""
        self.model: DeviceModel | None = None
        self.mscript_version = ""
        """The MethodSCRIPT version from `v`."""
        self._lock = asyncio.Lock()
        """One command at a time: a script launch or abort is never interleaved with another."""
        self._run: _Run | None = None
        self._reader: asyncio.Task[None] | None = None
        self._needs_sync = False
        self._source: tuple[str, float, float] | None = None
        """("current"|"voltage", level, limit) of the running source script; None when off."""
        self._acquiring = False
        self._period_s = default_period_s
        self._buffer: list[Reading] = []
        self._latest: Reading | None = None
        self._stream_error: InstrumentError | None = None

    @property
    def resource(self) -> str:
        """The transport's address, for messages."""
        return self.transport.resource

    # ---------------------------------------------------------------------------- lifetime

    async def __aenter__(self) -> EmStat4:
        opener = getattr(self.transport, "open", None)
        if opener is not None:
            await opener()
        try:
            await self._connect()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.safe_state()
        except InstrumentError as exc:
            # The engine's Station.make_safe already tried and reported this to the operator;
            # raising here would only hide the run's own outcome.
            log.error("%s: cell not confirmed off on close: %s", self.resource, exc)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        await self._stop_reader()
        closer = getattr(self.transport, "aclose", None)
        if closer is not None:
            await closer()

    async def _connect(self) -> None:
        async with self._lock:
            await self._resync()
            self.identity = await self._firmware()
            if self.identity.startswith(BOOTLOADER_PREFIX):
                raise InstrumentStateError(
                    f"{self.resource}: the EmStat Pico is in its bootloader ({self.identity!r}); "
                    "power-cycle it (or finish the firmware update) and connect again"
                )
            self.model = model_for(self.identity)
            if self.model is None:
                raise InstrumentStateError(
                    f"{self.resource} identifies as {self.identity!r}, not a MethodSCRIPT potentiostat "
                    "labctl knows (EmStat4 LR/HR, Nexus); check the port"
                )
            if self.require_galvanostat and not self.model.galvanostat:
                raise InstrumentStateError(self._no_galvanostat())
            self.mscript_version = await self._online("v")
            await self._run_plain(cell_off_script())
            self._source = None
        log.info(
            "%s: %s, firmware %s, MethodSCRIPT %s",
            self.resource,
            self.model.name,
            self.identity,
            self.mscript_version,
        )

    def _no_galvanostat(self) -> str:
        name = self.model.name if self.model else "this instrument"
        return (
            f"{self.resource} is an {name}: it has no galvanostat, and constant-current (CP) work "
            "needs an EmStat4 or a Nexus; use one of those (or, for potentiostatic EIS only, "
            "create the driver with require_galvanostat=False)"
        )

    # ---------------------------------------------------------------------------- Potentiostat role

    async def set_current(self, current_a: float, voltage_limit_v: float) -> None:
        """Source `current_a` (A) with a voltage limit (V, magnitude) and stream readings.

        Aborts whatever runs, then starts a CP script that runs until the next command. Beyond the
        limit the script stops and switches the cell off (see the module docstring).
        """
        model = self._require_model()
        if not model.galvanostat:
            raise InstrumentStateError(self._no_galvanostat())
        if not math.isfinite(current_a) or abs(current_a) > model.max_current_a:
            raise ValueError(
                f"current {current_a:g} A is outside ±{model.max_current_a:g} A of the {model.name}"
            )
        if not voltage_limit_v > 0:
            raise ValueError(f"voltage limit must be positive, not {voltage_limit_v!r} V")
        async with self._lock:
            await self._start_source("current", current_a, abs(voltage_limit_v))

    async def set_voltage(self, voltage_v: float, current_limit_a: float) -> None:
        """Hold `voltage_v` (V) with a current limit (A, magnitude) and stream readings (CA)."""
        model = self._require_model()
        if not current_limit_a > 0 or current_limit_a > model.max_current_a:
            raise ValueError(
                f"current limit {current_limit_a!r} A must be in (0, {model.max_current_a:g}] A "
                f"for the {model.name}"
            )
        if not math.isfinite(voltage_v):
            raise ValueError(f"voltage {voltage_v!r} V is not a number")
        async with self._lock:
            await self._start_source("voltage", voltage_v, abs(current_limit_a))

    async def output_off(self) -> None:
        """Abort the running script and switch the cell off (confirmed by the `cell_off` script)."""
        async with self._lock:
            await self._stop_script()
            await self._run_plain(cell_off_script())

    async def read(self) -> Reading:
        """The latest reading: the newest streamed one while a source runs, else an OCP sample.

        With the cell off, a short open-circuit script measures the potential (current 0 A).
        """
        self._require_model()
        run = self._run
        if run is not None and run.kind in _STREAMING and not run.finished.is_set():
            if run.last_reading is None:
                wait = (run.script.interval_s or 0.0) + self.timeout_s
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        while run.last_reading is None and not run.finished.is_set():
                            run.progress.clear()
                            await run.progress.wait()
            if run.last_reading is not None:
                return run.last_reading
            raise run.error or InstrumentTimeout(
                f"{self.resource}: no reading from the running {run.kind.upper()} script within "
                f"{(run.script.interval_s or 0) + self.timeout_s:g} s"
            )
        async with self._lock:
            await self._stop_script()
            interval = 0.1
            sample = _Run("sample", ocp_script(interval_s=interval, run_time_s=2 * interval), self.timeout_s)
            await self._launch(sample)
            await self._wait(sample, sample.finished, self.timeout_s + 1.0, "an open-circuit sample")
            self._raise_run_error(sample)
            if not sample.packages:
                raise InstrumentReplyError(f"{self.resource}: the open-circuit sample returned no data")
            voltage = self._values(sample, sample.packages[-1][1])[0]
            return Reading(self._time(), voltage, 0.0)

    async def start_acquisition(self, period_s: float) -> None:
        """Buffer a reading every `period_s` seconds from the running (and every later) source script.

        The period is the script's sample interval, so a running source script with another
        interval is restarted with this one.
        """
        self._require_model()
        if not period_s > 0:
            raise ValueError(f"sample period must be positive, not {period_s!r} s")
        async with self._lock:
            self._period_s = period_s
            self._acquiring = True
            run, source = self._run, self._source
            running = run is not None and run.kind in ("cp", "ca") and not run.finished.is_set()
            known = source is not None and source[0] in ("current", "voltage")
            if running and known and run.script.interval_s != period_s:
                await self._start_source(*source)

    async def fetch(self) -> list[Reading]:
        """Readings taken since the last fetch with `t ≤ time_source()`, oldest first.

        Raises (once the buffered readings are delivered) the error that ended the stream, if
        any: a lost link, an instrument error, or a script that ended by itself.
        """
        if not self._acquiring:
            return []
        now = self._time()
        await self._catch_up(now)
        ready = [r for r in self._buffer if r.t <= now + 1e-9]
        self._buffer = self._buffer[len(ready) :]
        if not ready and self._stream_error is not None:
            error, self._stream_error = self._stream_error, None
            raise error
        return ready

    async def stop_acquisition(self) -> None:
        """Stop buffering readings (a running source keeps running)."""
        self._acquiring = False
        self._buffer.clear()

    async def safe_state(self) -> None:
        r"""Abort any script and switch the cell off, confirmed, whatever the driver believes.

        When no script is known to run, a full resync (`\n`, `Z`) still goes first, so a script
        the driver lost track of is stopped too.
        """
        self._acquiring = False
        self._buffer.clear()
        async with self._lock:
            self._source = ("unknown", math.nan, math.nan)  # until confirmed: treat the cell as live
            run = self._run
            if run is not None and not run.finished.is_set():
                await self._abort(run)
            else:
                await self._resync()
            await self._run_plain(cell_off_script())
            self._source = None

    # ---------------------------------------------------------------------------- EIS

    async def impedance_spectrum(
        self,
        *,
        mode: EisMode,
        f_start_hz: float,
        f_end_hz: float,
        points_per_decade: float,
        amplitude: float,
        dc_level: float,
    ) -> list[EisPoint]:
        """Measure a spectrum (log-spaced, both ends included), then leave the cell off.

        Z″ arrives as MethodSCRIPT's `cd`, already in the math convention (negative =
        capacitive), so it is used as it is (INSTRUMENTS.md §2.5).

        Args:
            mode: "potentiostatic" (amplitude and dc_level in V) or "galvanostatic" (in A).
            f_start_hz: first frequency, Hz.
            f_end_hz: last frequency, Hz.
            points_per_decade: logarithmic spacing; n = round(decades × ppd) + 1.
            amplitude: excitation amplitude (V or A).
            dc_level: DC potential (V) or current (A).
        """
        model = self._require_model()
        if (
            max(f_start_hz, f_end_hz) > EIS_MAX_FREQUENCY_HZ
            or min(f_start_hz, f_end_hz) < EIS_MIN_FREQUENCY_HZ
        ):
            raise ValueError(
                f"the {model.name} measures impedance from {EIS_MIN_FREQUENCY_HZ:g} Hz to "
                f"{EIS_MAX_FREQUENCY_HZ / 1e3:g} kHz; change the spectrum's 'from'/'to'"
            )
        n_points = points_for(f_start_hz, f_end_hz, points_per_decade)
        if mode == "potentiostatic":
            script = peis_script(
                amplitude_v=amplitude,
                f_start_hz=f_start_hz,
                f_end_hz=f_end_hz,
                n_points=n_points,
                e_dc_v=dc_level,
                current_range_a=self.eis_current_range_a or model.highest_current_range_a,
                lowest_current_range_a=model.lowest_current_range_a,
                potential_range_v=self.eis_potential_range_v,
            )
        elif mode == "galvanostatic":
            if not model.galvanostat:
                raise InstrumentStateError(self._no_galvanostat())
            if abs(dc_level) + amplitude > model.max_current_a:
                raise ValueError(f"|I_dc| + amplitude exceeds the {model.name}'s {model.max_current_a:g} A")
            script = geis_script(
                amplitude_a=amplitude,
                f_start_hz=f_start_hz,
                f_end_hz=f_end_hz,
                n_points=n_points,
                i_dc_a=dc_level,
                current_range_a=current_range_for(
                    abs(dc_level) + 2 * amplitude,
                    lowest_a=model.lowest_current_range_a,
                    highest_a=model.highest_current_range_a,
                ),
                potential_range_v=self.eis_potential_range_v,
            )
        else:
            raise ValueError(f"mode must be 'potentiostatic' or 'galvanostatic', not {mode!r}")
        # The slowest frequency sets how long the output may be silent: several periods plus settling.
        silence = self.timeout_s + 20.0 / min(f_start_hz, f_end_hz)
        async with self._lock:
            await self._stop_script()
            run = _Run("eis", script, silence)
            await self._launch(run)
            # The loop must have started before time may pass: otherwise a simulated clock could
            # jump ahead of an instrument that has not yet read the script.
            await self._wait(run, run.started, self.timeout_s, "the spectrum to start")
            try:
                if self._sleep is not None:
                    await self._sleep(expected_spectrum_s(f_start_hz, f_end_hz, n_points))
                await run.finished.wait()  # bounded by the reader's silence watchdog
            except asyncio.CancelledError:
                await self._abort_quietly(run)
                raise
            self._source = None  # on_finished switched the cell off
            self._raise_run_error(run)
        points = []
        for t, package in run.packages:
            frequency, z_real, z_imag = self._values(run, package)
            points.append(
                EisPoint(
                    frequency_hz=frequency,
                    z_real_ohm=z_real,
                    z_imag_ohm=z_imag,
                    e_dc_v=dc_level if mode == "potentiostatic" else math.nan,
                    i_dc_a=dc_level if mode == "galvanostatic" else math.nan,
                    time_s=t,
                    status=int(package.status),
                )
            )
        if len(points) != n_points:
            log.warning("%s: EIS returned %d of %d points", self.resource, len(points), n_points)
        return points

    # ---------------------------------------------------------------------------- scripts

    def _require_model(self) -> DeviceModel:
        if self.model is None:
            raise InstrumentStateError(
                f"{self.resource}: not connected; use `async with EmStat4(transport) as pot:`"
            )
        return self.model

    async def _start_source(self, kind: str, level: float, limit: float) -> None:
        """Abort what runs and start the CP or CA script for `level` (caller holds the lock)."""
        model = self._require_model()
        await self._stop_script()
        interval = self._period_s
        if kind == "current":
            script = chronopotentiometry_script(
                current_a=level,
                interval_s=interval,
                run_time_s=self.max_run_s,
                potential_range_v=limit,
                voltage_limit_v=limit,
                current_range_a=current_range_for(
                    max(abs(level), 1e-6),
                    lowest_a=model.lowest_current_range_a,
                    highest_a=model.highest_current_range_a,
                ),
            )
            run_kind = "cp"
        else:
            script = chronoamperometry_script(
                potential_v=level,
                interval_s=interval,
                run_time_s=self.max_run_s,
                current_range_a=current_range_for(
                    limit, lowest_a=model.lowest_current_range_a, highest_a=model.highest_current_range_a
                ),
                lowest_current_range_a=model.lowest_current_range_a,
                current_limit_a=limit,
            )
            run_kind = "ca"
        run = _Run(run_kind, script, silence_s=3 * interval + self.timeout_s)
        self._stream_error = None
        self._source = (kind, level, limit)  # the cell may be live from here on
        await self._launch(run)
        await self._wait(run, run.started, self.timeout_s, f"the {run_kind.upper()} script to start")
        self._raise_run_error(run)
        if run.t_start is None:
            raise InstrumentReplyError(
                f"{self.resource}: the {run_kind.upper()} script ended before its measurement loop started"
            )

    async def _stop_script(self) -> None:
        """Leave the instrument idle: resync if in doubt, abort a running script (lock held)."""
        if self._needs_sync:
            await self._stop_reader()
            await self._resync()
        run = self._run
        if run is not None and not run.finished.is_set():
            await self._abort(run)
        self._source = None

    async def _launch(self, run: _Run) -> None:
        """Send a script and hand its output to a new reader task (lock held, nothing running)."""
        await self._stop_reader()
        self._run = run
        try:
            await self.transport.write(run.script.text)
        except BaseException:
            run.close()
            self._needs_sync = True
            raise
        self._reader = asyncio.create_task(self._read_output(run), name=f"emstat-{run.kind}-reader")

    async def _run_plain(self, script: Script) -> None:
        """Run a script without a measurement loop to its end; confirms it ran (lock held)."""
        run = _Run("plain", script, self.timeout_s)
        await self._launch(run)
        await self._wait(run, run.finished, self.timeout_s, "a script to complete")
        self._raise_run_error(run)
        if not run.acked:
            raise InstrumentReplyError(f"{self.resource}: the script ended without its 'e' acknowledgement")

    async def _wait(self, run: _Run, event: asyncio.Event, timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            await self._abort_quietly(run)
            raise InstrumentTimeout(
                f"{self.resource}: no answer while waiting for {what} within {timeout_s:g} s; check "
                "the cable and that the instrument is on (the cell state is unknown)"
            ) from None
        except asyncio.CancelledError:
            await self._abort_quietly(run)
            raise

    def _raise_run_error(self, run: _Run) -> None:
        if run.error is not None:
            self._stream_error = None  # reported here, not again by fetch
            raise run.error

    async def _abort(self, run: _Run) -> None:
        """`Z` a running script and wait for its end (lock held)."""
        run.aborting = True  # set before any await: the reader then waits for the Z reply
        await self.transport.write("Z\n")
        try:
            async with asyncio.timeout(self.abort_timeout_s):
                await run.finished.wait()
        except TimeoutError:
            self._needs_sync = True
            await self._stop_reader()
            raise InstrumentTimeout(
                f"{self.resource}: the running {run.kind.upper()} script did not stop within "
                f"{self.abort_timeout_s:g} s of an abort (Z); switch the cell off by hand or "
                "power-cycle the instrument"
            ) from None
        await self._stop_reader()
        if run.nothing_running:
            await asyncio.sleep(self.error_pause_s)  # > 50 ms after a '!' reply [src instrument.py]

    async def _abort_quietly(self, run: _Run) -> None:
        """Best-effort abort after a cancellation or a timeout: bounded, never raising its own error."""
        if run.finished.is_set():
            await self._stop_reader()
            return
        with contextlib.suppress(InstrumentError, TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await self._abort(run)
        if not run.finished.is_set():
            self._needs_sync = True
            await self._stop_reader()

    async def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader])  # unlike `await reader`, never mistakes its cancellation for ours
            if self._run is not None and not self._run.finished.is_set():
                self._run.close()
                self._needs_sync = True  # its output was not read to the end

    async def _resync(self) -> None:
        """PalmSens' abort-and-sync: stop any script, drain its output, leave the line idle."""
        await self._stop_reader()
        self.transport.discard_input()
        await self.transport.write("\n")  # flushes a half-received command
        await self.transport.write("Z\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.abort_timeout_s
        reply = await self._next_line_starting("Z", deadline)
        if reply == "Z":  # a script was running: its remaining output and end line follow
            while True:
                line = await self._line_before(deadline, "the aborted script's end")
                if line == "":
                    break
        elif reply.startswith("Z!"):
            await asyncio.sleep(self.error_pause_s)
            error = parse_error(reply)
            if error is None or error.code != 0x0006:
                raise InstrumentRejectedError(f"{self.resource}: abort (Z) refused: {reply!r}")
        else:
            raise InstrumentReplyError(f"{self.resource}: unexpected reply to an abort: {reply!r}")
        self._needs_sync = False
        self._source = None

    async def _next_line_starting(self, prefix: str, deadline: float) -> str:
        skipped = 0
        while True:
            line = await self._line_before(deadline, "a reply to the abort (Z)")
            if line.startswith(prefix):
                if skipped:
                    log.info("%s: skipped %d stale lines while resynchronising", self.resource, skipped)
                return line
            skipped += 1

    async def _line_before(self, deadline: float, what: str) -> str:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise InstrumentTimeout(f"{self.resource}: timed out waiting for {what}")
        try:
            return await self.transport.read_line(min(self.timeout_s, remaining))
        except InstrumentTimeout:
            raise InstrumentTimeout(
                f"{self.resource}: no reply while waiting for {what}; check the cable, the baud "
                "rate (921600 for EmStat4/Nexus, 230400 for EmStat Pico) and that the instrument is on"
            ) from None

    async def _online(self, command: str) -> str:
        """A one-line online command (`v`, `i`): reply = the command letter + the value."""
        await self.transport.write(command + "\n")
        line = await self._line_before(asyncio.get_running_loop().time() + self.timeout_s, f"{command!r}")
        return self._online_reply(command, line)

    async def _firmware(self) -> str:
        """`t`: one or more lines, the first starting with `t`, the last ending with `*`."""
        await self.transport.write("t\n")
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        lines = [self._online_reply("t", await self._line_before(deadline, "the firmware version (t)"))]
        while not lines[-1].endswith("*"):
            if len(lines) >= 8:
                raise InstrumentReplyError(f"{self.resource}: firmware reply without its '*' end: {lines!r}")
            lines.append(await self._line_before(deadline, "the firmware version (t)"))
        return " ".join(lines)[:-1].strip()

    def _online_reply(self, command: str, line: str) -> str:
        item = parse_error(line)
        if item is not None:
            raise InstrumentRejectedError(f"{self.resource}: {command!r} refused: {item.message}")
        if not line.startswith(command):
            raise InstrumentReplyError(f"{self.resource}: expected a reply to {command!r}, got {line[:80]!r}")
        return line[len(command) :]

    # ---------------------------------------------------------------------------- the reader task

    async def _read_output(self, run: _Run) -> None:
        """Consume one script's output until its end line, an error or a silent link."""
        loop = asyncio.get_running_loop()
        last_rx = loop.time()
        try:
            while True:
                try:
                    line = await self.transport.read_line(self.poll_s)
                except InstrumentTimeout:
                    if loop.time() - last_rx > run.silence_s:
                        raise InstrumentTimeout(
                            f"{self.resource}: no output from the running {run.kind.upper()} script "
                            f"for {run.silence_s:g} s; check the cable and power (the cell state is "
                            "unknown)"
                        ) from None
                    continue
                last_rx = loop.time()
                if self._on_line(run, line):
                    break
        except InstrumentError as exc:
            run.error = run.error or exc
            self._needs_sync = True
        except Exception as exc:  # a driver bug: report it through the run, never as a lost task error
            log.exception("%s: the output reader failed", self.resource)
            run.error = InstrumentError(f"{self.resource}: internal error while reading output ({exc!r})")
            self._needs_sync = True
        finally:
            self._on_run_end(run)

    def _on_line(self, run: _Run, line: str) -> bool:
        """Handle one output line; True when the run is over."""
        try:
            item = decode_line(line)
        except InstrumentReplyError as exc:
            raise InstrumentReplyError(f"{self.resource}: {exc}") from None
        if isinstance(item, DataPackage):
            self._on_package(run, item)
        elif isinstance(item, ExecuteAck):
            run.acked = True
        elif isinstance(item, LoopStart):
            if item.kind == "measurement" and run.t_start is None:
                run.t_start = self._time()
                run.started.set()
        elif isinstance(item, AbortAck):
            run.abort_acked = True
        elif isinstance(item, ErrorReply):
            if run.aborting and item.command.startswith("Z") and item.code == 0x0006:
                run.abort_acked = run.nothing_running = True
                return True  # the script had already ended; this was the abort's reply
            verb = "refused" if run.t_start is None else "failed"
            raise InstrumentRejectedError(
                f"{self.resource}: the {run.kind.upper()} script {verb}: {item.message}"
            )
        elif isinstance(item, EndOfScript):
            if not run.aborting:
                run.ended_by_itself = True
                return True
            return run.abort_acked  # else the Z reply ("Z!0006") is still to come
        elif isinstance(item, TextLine):
            log.info("%s: script says %r", self.resource, item.text)
        return False

    def _on_package(self, run: _Run, package: DataPackage) -> None:
        values = self._values(run, package)
        run.count += 1
        if run.kind in _STREAMING:
            if run.t_start is None:
                raise InstrumentReplyError(f"{self.resource}: data before the measurement loop started")
            interval = run.script.interval_s or 0.0
            t = run.t_start + run.count * interval
            voltage = values[0]
            current = values[1] if len(values) > 1 else 0.0
            limit_v = run.script.limits.get("voltage_v")
            limit_i = run.script.limits.get("current_a")
            beyond = (limit_v is not None and abs(voltage) > limit_v) or (
                limit_i is not None and abs(current) > limit_i
            )
            reading = Reading(t, voltage, current, in_compliance=beyond)
            run.last_reading = reading
            if self._acquiring and run is self._run and run.kind in ("cp", "ca"):
                self._buffer.append(reading)
        else:
            run.packages.append((self._time(), package))
        run.progress.set()

    def _values(self, run: _Run, package: DataPackage) -> list[float]:
        """The package's values, checked against the script's column layout."""
        columns = run.script.columns
        if len(package.variables) != len(columns):
            raise InstrumentReplyError(
                f"{self.resource}: expected {len(columns)} values per package from the "
                f"{run.kind.upper()} script, got {len(package.variables)}"
            )
        for variable, unit in zip(package.variables, columns, strict=True):
            known = VAR_TYPES.get(variable.type_id)
            if known is not None and known.unit != unit:
                raise InstrumentReplyError(
                    f"{self.resource}: expected a value in {unit}, got {variable.type_id!r} "
                    f"({known.name}) from the {run.kind.upper()} script"
                )
        return [variable.value for variable in package.variables]

    def _on_run_end(self, run: _Run) -> None:
        if run is self._run and run.kind in ("cp", "ca") and run.t_start is not None:
            if run.error is not None:
                self._stream_error = run.error
            elif run.ended_by_itself:
                self._source = None  # on_finished switched the cell off
                last = run.last_reading
                if last is None or not last.in_compliance:
                    self._stream_error = InstrumentStateError(
                        f"{self.resource}: the {run.kind.upper()} script ended by itself after "
                        f"{run.count} samples (maximum run time {self.max_run_s:g} s); the cell is off"
                    )
        run.close()

    async def _catch_up(self, now: float) -> None:
        """Wait (briefly, wall time) for packages due by `now` that are still in flight."""
        run = self._run
        if run is None or run.kind not in ("cp", "ca") or run.t_start is None or run.finished.is_set():
            return
        interval = run.script.interval_s or 0.0
        due = math.floor((now - run.t_start) / interval + 1e-9) if interval > 0 else 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.catch_up_s):
                while run.count < due and not run.finished.is_set():
                    run.progress.clear()
                    await run.progress.wait()
