"""PalmSens EmStat4 simulator speaking MethodSCRIPT, with a TCP and a pseudo-terminal front-end.

Three layers, as in the Keithley 2450 simulator:

* `Potentiostat` is the hardware: potentiostat modes, setpoints, current and potential ranges, the
  cell switch, and the physics (an `ElectricalLoad`, plus `ImpedanceLoad` for EIS) with seeded
  measurement noise. It implements `simulators.methodscript.Hardware`, so the script interpreter
  drives it.
* `EmStat4Simulator` is the instrument as the serial port sees it: it takes bytes
  (`handle_bytes`), answers the online commands (`t`, `v`, `i`, `e` + script + empty line, `l`,
  `r`, `Z`), runs scripts with `simulators.methodscript.ScriptRun`, and returns the output that is
  due. It knows nothing of sockets or ptys.
* `EmStat4Server` (TCP, usable as pyserial `socket://127.0.0.1:PORT`) and `EmStat4PtyServer` (a
  pseudo-terminal whose slave path, `/dev/pts/N`, a client opens like a USB serial port) move the
  bytes, inject link faults (`simulators.tcp.Faults`) and stream output as simulated time passes.
  `serve_emstat4` runs the TCP one on the wall clock (`labctl sim serve emstat4`).

Time. The model is lazy: nothing happens between calls. Every call (`handle_bytes`, `poll`) first
runs the script's events that are due at `time_source()` (each measurement point at its exact
scheduled time, with the load integrated to that time first, in sub-steps of at most `max_step_s`
at the operating current), and an input is then executed at the time it arrived. The load is
integrated to an input's time, but a `poll` integrates it only as far as the last event, so when
polls happen (wall-clock timers) never changes the results: the same inputs at the same simulated
times give byte-identical output. The model's clock never runs ahead of the time source.

Streaming. A real EmStat writes package lines on its own while a script runs. The front-ends
therefore call `EmStat4Simulator.poll()` every `poll_interval_s` of wall time (10 ms by default)
and after every received chunk, and write what it returns. With a simulated time source this
means: output appears within one poll interval after the clock passes its time, whenever the
client reads. Output produced while no client is connected (TCP) or while unplugged (pty) is lost,
as on a real serial line; the script keeps running.

Sources. [src] = PalmSens' MIT example code (PalmSens/MethodSCRIPT_Examples) or INSTRUMENTS.md §2.5;
[mem] = not confirmed against the manual or hardware, a plausible choice to check.

* [src] Online commands: `t` answers two lines, the first starting `t<device>` (here
  `tes4_hr1300#Mar 14 2025 09:30:00`), the second ending with `*` (here `R*` [mem: third-party
  reading of the protocol document]); `v` → `v<version>`; `i` → `i<serial>`; `e` + script lines
  + empty line: `e` once the script is accepted, then its output, then an empty line; `Z` while a
  script runs: `Z`, then the rest of the output (the measurement loop closes with `*`,
  `on_finished:` runs) and the empty line; `Z` with nothing running: `Z!0006`.
* [src] Potentiostat modes: 3 (high speed, potentiostatic; the CA, OCP and EIS examples) and 6
  (galvanostatic; the CP and GEIS examples). [mem] 0 = off (the power-on mode: scripts must set a
  mode before `cell_on`), 2 = low speed and 4 = max range are potentiostatic too; any other value is
  `!0021`. CA needs 2, 3 or 4; EIS needs 3; CP and GEIS need 6 (`!0023` otherwise); CA, CP, EIS
  and GEIS need the cell on (`!4027`), OCP needs it off (`!4028`) [mem].
* [src] EmStat4 current range indexes (`,2XX` on `ba`, `cc`): 3 = 1 nA, 6 = 10 nA (LR only), 9 =
  100 nA, 12 = 1 µA, … 24 = 10 mA, 27 = 100 mA (HR only); potential ranges (`ab`, `cd`): 2 = 50 mV,
  3 = 100 mV, 4 = 200 mV, 5 = 500 mV, 6 = 1 V. For EIS, Z′ carries the current range and Z″ the
  potential range.
* [mem] A range covers twice its nominal value (so `set_range ba 2m` selects 1 mA, the examples'
  habit of asking for 2u/2m/20m); the "1 V" potential range covers up to the compliance voltage
  (±6 V HR, ±3 V LR; max current ±200 mA HR, ±30 mA LR). `set_range` sets the range in use;
  `set_autoranging <type> <min> <max>` lets readings pick the smallest range in that window that
  covers them (instantly, per reading); without it the range is fixed. Power-on ranges: current
  1 mA, potential 1 V, autoranging off.
* [mem] Variable types: CA gives `da` (the applied potential, no metadata) and `ba`; CP gives `ab`
  and `ba` (the current actually flowing, with the applied-current range; PalmSens' example
  comments call it the set current, which a real unit may send as `db`); OCP gives `ab`; EIS and
  GEIS give `dc`, `cc`, `cd`. Status metadata: OVERLOAD when the source hits a limit or a reading
  exceeds its range, OVERLOAD_WARNING above 90 % of the range, UNDERLOAD (currents only) below 1 %
  of the nominal range.
* [mem] Timing: a CA/CP/OCP loop takes floor(run_time / interval) points, point k (1, 2, …) at
  t_start + k·interval; the setpoint stays applied after the loop. EIS measures the frequencies
  log-spaced from f_start to f_end (n_points, both ends included), each costing
  max(`EIS_MIN_POINT_S`, `EIS_PERIODS_PER_POINT` / f) of simulated time, the package written when
  it is done. EIS frequencies 10 µHz – 200 kHz (`!0011` outside), amplitude ≤ 0.9 V or, for GEIS,
  the applied-current range (`!0012`).
* [mem] Online commands other than `Z` while a script runs answer `<c>!0006`; an unknown online
  command answers `<c>!0003`; only the first character of an online command line counts.

Physics and noise (modelling choices, not claims about the instrument): cell off = no current,
the potential reading is the load's open-circuit voltage. Galvanostatic: the set current, clamped
to the applied-current range; if the load's voltage would exceed the compliance voltage the
current is what the load draws at ±compliance (bisection, as the 2450 simulator does), flagged
OVERLOAD. Potentiostatic: the current at which the load shows the set potential (bisection within
± the largest permitted range), flagged OVERLOAD if it needed more. Noise: 10 µV rms on
potentials, 10 ppm of the range's full scale on currents, and for impedance 0.1 % of |Z| combined
with the current (PEIS) or potential (GEIS) noise relative to the AC signal, independently on Z′
and Z″. A load without `impedance` makes EIS and GEIS fail with `!001B` at the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import tty
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Self

from simulators.base import (
    ElectricalLoad,
    ImpedanceLoad,
    RandlesLoad,
    TimeSource,
    wall_time_source,
)
from simulators.methodscript import (
    TECHNIQUE_CODES,
    ErrorCode,
    MeasurementLoop,
    Script,
    ScriptRun,
    ScriptRuntimeError,
    ScriptSyntaxError,
    Status,
    Var,
    parse_script,
)
from simulators.tcp import Faults, ServerState

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- device data

FULL_SCALE_FACTOR = 2.0
"""A current range measures up to this many times its nominal value [mem]."""
OVERLOAD_WARNING_FRACTION = 0.9
"""Readings above this fraction of full scale carry OVERLOAD_WARNING [mem]."""
UNDERLOAD_FRACTION = 0.01
"""Currents below this fraction of the nominal range carry UNDERLOAD [mem]."""
POTENTIAL_NOISE_V = 10e-6
"""RMS noise of a potential reading, V [mem]."""
CURRENT_NOISE_FRACTION = 10e-6
"""RMS noise of a current reading as a fraction of the range's full scale [mem]."""
EIS_RELATIVE_NOISE = 1e-3
"""RMS noise on each of Z′ and Z″ as a fraction of |Z|, before signal-to-noise terms [mem]."""
EIS_PERIODS_PER_POINT = 3.0
"""Periods of the excitation one EIS point takes (settling + measuring) [mem]."""
EIS_MIN_POINT_S = 0.1
"""Shortest time one EIS point takes, s [mem]."""
EIS_MIN_HZ = 10e-6
EIS_MAX_HZ = 200e3
"""EIS frequency limits, Hz [mem]."""
EIS_MAX_AMPLITUDE_V = 0.9
"""Largest potentiostatic EIS amplitude, V [mem]."""
POTENTIAL_RANGES: tuple[tuple[int, float], ...] = ((2, 0.05), (3, 0.1), (4, 0.2), (5, 0.5), (6, 1.0))
"""EmStat4 potential ranges: (index in metadata, nominal V) [src]."""
PGSTAT_OFF = 0
POTENTIOSTATIC_MODES = frozenset({2, 3, 4})
"""Potentiostatic modes: 2 low speed [mem], 3 high speed [src], 4 max range [mem]."""
EIS_MODE = 3
GALVANOSTATIC_MODE = 6
"""[src: the CP and GEIS examples]."""
METHODSCRIPT_VERSION = "1.8"
"""Reported by `v` [mem: the format of the reply]."""
FIRMWARE_VERSION = "1300"
FIRMWARE_BUILD = "Mar 14 2025 09:30:00"
"""Reported by `t` after the device id [mem]."""


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """What distinguishes the EmStat4 variants."""

    device_id: str
    """The prefix of the firmware string (`t` reply) [src]."""
    model: str
    current_ranges: tuple[tuple[int, float], ...]
    """(index in metadata, nominal A), smallest first [src]."""
    max_current_a: float
    """Largest current the instrument delivers, A [mem]."""
    compliance_v: float
    """Largest potential it applies or measures, V [mem]."""


_HR_RANGES = ((9, 100e-9), (12, 1e-6), (15, 10e-6), (18, 100e-6), (21, 1e-3), (24, 10e-3), (27, 100e-3))
_LR_RANGES = (
    (3, 1e-9),
    (6, 10e-9),
    (9, 100e-9),
    (12, 1e-6),
    (15, 10e-6),
    (18, 100e-6),
    (21, 1e-3),
    (24, 10e-3),
)

DEVICES: dict[str, DeviceSpec] = {
    "es4_hr": DeviceSpec("es4_hr", "EmStat4 HR", _HR_RANGES, 0.2, 6.0),
    "es4_lr": DeviceSpec("es4_lr", "EmStat4 LR", _LR_RANGES, 0.03, 3.0),
}
"""Simulated devices by firmware id."""


class Ranging:
    """A range table with the range in use and an optional autoranging window.

    Args:
        table: (metadata index, full scale) pairs, smallest first.
        start: full-scale value whose range is in use at power-on.
    """

    def __init__(self, table: Sequence[tuple[int, float]], start: float) -> None:
        self.table = tuple(table)
        self.fixed = self.position_for(start)
        self.window: tuple[int, int] | None = None

    def position_for(self, value: float) -> int:
        """The smallest range whose full scale covers |value|, or the largest."""
        magnitude = abs(value) * (1 - 1e-9)
        for position, (_, full_scale) in enumerate(self.table):
            if magnitude <= full_scale:
                return position
        return len(self.table) - 1

    def set_range(self, value: float) -> None:
        """`set_range`: use the range that covers `value`."""
        self.fixed = self.position_for(value)

    def set_autoranging(self, low: float, high: float) -> None:
        """`set_autoranging`: readings may use the ranges from the one covering `low` to `high`'s."""
        self.window = (self.position_for(low), self.position_for(high))

    def allowed(self) -> range:
        """Positions a reading may use."""
        if self.window is None:
            return range(self.fixed, self.fixed + 1)
        return range(self.window[0], self.window[1] + 1)

    def select(self, magnitude: float) -> int:
        """The range a reading of `magnitude` uses: the smallest permitted one that covers it."""
        allowed = self.allowed()
        for position in allowed:
            if abs(magnitude) <= self.table[position][1]:
                return position
        return allowed[-1]

    def limit(self) -> float:
        """Full scale of the largest permitted range."""
        return self.table[self.allowed()[-1]][1]

    def full_scale(self, position: int) -> float:
        """Full scale of the range at `position`."""
        return self.table[position][1]

    def index(self, position: int) -> int:
        """Metadata index of the range at `position`."""
        return self.table[position][0]


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where the cell sits at one instant."""

    current_a: float
    """Current into the working electrode, A."""
    voltage_v: float
    """Working-electrode potential, V."""
    limited: bool
    """The source could not reach its setpoint (range limit or compliance)."""


# ---------------------------------------------------------------------------------- hardware


class Potentiostat:
    """The EmStat4's analog side driving a load; implements `methodscript.Hardware`.

    Args:
        spec: the device variant.
        load: the cell.
        rng: noise source (seeded by the simulator).
        t0: the model time at power-on.
        max_step_s: longest single load integration step, s.
    """

    def __init__(
        self, spec: DeviceSpec, load: ElectricalLoad, rng: random.Random, t0: float, max_step_s: float
    ) -> None:
        self.spec = spec
        self.load = load
        self.rng = rng
        self.t = t0
        self.max_step_s = max_step_s
        self.reset()

    def reset(self) -> None:
        """Power-on settings [mem]: mode off, cell off, 0 V / 0 A setpoints, fixed 1 mA and 1 V ranges."""
        current_table = [(index, nominal * FULL_SCALE_FACTOR) for index, nominal in self.spec.current_ranges]
        potential_table = [(index, nominal) for index, nominal in POTENTIAL_RANGES[:-1]]
        potential_table.append((POTENTIAL_RANGES[-1][0], self.spec.compliance_v))
        self.mode = PGSTAT_OFF
        self.cell_on = False
        self.e_set = 0.0
        self.i_set = 0.0
        self.bandwidth_hz = 0.0
        self.ba = Ranging(current_table, 2e-3)
        self.db = Ranging(current_table, 2e-3)
        self.ab = Ranging(potential_table, self.spec.compliance_v)
        self.potential_window = (-self.spec.compliance_v, self.spec.compliance_v)

    # ------------------------------------------------------------------ Hardware protocol

    def now(self) -> float:
        """The model's time (time-source seconds)."""
        return self.t

    def command(self, name: str, args: Sequence[str | float]) -> None:
        """Execute a settings command; see `methodscript.HARDWARE_COMMANDS`."""
        handler = getattr(self, "_cmd_" + name)
        handler(*args)

    def read(self, var_type: str) -> Var:
        """One reading for `meas`: `ab` (potential) or `ba` (current)."""
        op = self.operating_point()
        if var_type == "ab":
            return self._potential_reading(op)
        if var_type == "ba":
            return self._current_reading(op)
        raise ScriptRuntimeError(ErrorCode.WRONG_VARIABLE_TYPE, f"cannot measure {var_type}")

    def start_loop(self, name: str, params: Sequence[float]) -> MeasurementLoop:
        """Check the mode and cell state for technique `name`, apply its DC setpoint, return its loop."""
        code = TECHNIQUE_CODES[name]
        if name == "meas_loop_ca":
            self._require(POTENTIOSTATIC_MODES, cell=True)
            e_dc, interval, run_time = params
            self._cmd_set_e(e_dc)
            return _TimedLoop(self, code, interval, run_time, self._ca_point)
        if name == "meas_loop_cp":
            self._require({GALVANOSTATIC_MODE}, cell=True)
            i_dc, interval, run_time = params
            self._cmd_set_i(i_dc)
            return _TimedLoop(self, code, interval, run_time, self._cp_point)
        if name == "meas_loop_ocp":
            if self.cell_on:
                raise ScriptRuntimeError(ErrorCode.CELL_OFF_REQUIRED, "OCP with the cell on")
            interval, run_time = params
            return _TimedLoop(self, code, interval, run_time, self._ocp_point)
        galvanostatic = name == "meas_loop_geis"
        self._require({GALVANOSTATIC_MODE} if galvanostatic else {EIS_MODE}, cell=True)
        if not isinstance(self.load, ImpedanceLoad):
            raise ScriptRuntimeError(ErrorCode.NOT_SUPPORTED, "the load has no impedance model")
        amplitude, f_start, f_end, n_points, dc = params
        for frequency in (f_start, f_end):
            if not EIS_MIN_HZ <= frequency <= EIS_MAX_HZ:
                raise ScriptRuntimeError(ErrorCode.INVALID_FREQUENCY, f"{frequency} Hz")
        max_amplitude = self.db.limit() if galvanostatic else EIS_MAX_AMPLITUDE_V
        if not 0 < amplitude <= max_amplitude:
            raise ScriptRuntimeError(ErrorCode.INVALID_AMPLITUDE, f"{amplitude}")
        n = round(n_points)
        if n < 1:
            raise ScriptRuntimeError(ErrorCode.MUST_BE_POSITIVE, "n_points")
        if galvanostatic:
            self._cmd_set_i(dc)
        else:
            self._cmd_set_e(dc)
        return _EisLoop(self, code, galvanostatic, amplitude, f_start, f_end, n)

    # ------------------------------------------------------------------ settings commands

    def _cmd_set_pgstat_chan(self, channel: float) -> None:
        if channel != 0:
            raise ScriptRuntimeError(ErrorCode.OUT_OF_RANGE, "only channel 0 is simulated")

    def _cmd_set_pgstat_mode(self, mode: float) -> None:
        if mode not in POTENTIOSTATIC_MODES | {PGSTAT_OFF, GALVANOSTATIC_MODE}:
            raise ScriptRuntimeError(ErrorCode.PGSTAT_MODE_NOT_SUPPORTED, f"mode {mode}")
        self.mode = int(mode)
        if self.mode == PGSTAT_OFF:
            self.cell_on = False

    def _cmd_set_max_bandwidth(self, bandwidth: float) -> None:
        if bandwidth <= 0:
            raise ScriptRuntimeError(ErrorCode.MUST_BE_POSITIVE, "bandwidth")
        self.bandwidth_hz = bandwidth

    def _ranging(self, var_type: str) -> Ranging | None:
        return {"ba": self.ba, "db": self.db, "ab": self.ab}.get(var_type)

    def _cmd_set_range(self, var_type: str, value: float) -> None:
        ranging = self._ranging(var_type)
        if ranging is not None:
            ranging.set_range(value)
        elif var_type != "da":
            raise ScriptRuntimeError(ErrorCode.WRONG_VARIABLE_TYPE, f"no range for {var_type}")

    def _cmd_set_range_minmax(self, var_type: str, low: float, high: float) -> None:
        if var_type not in ("da", "ab", "ba", "db"):
            raise ScriptRuntimeError(ErrorCode.WRONG_VARIABLE_TYPE, f"no range for {var_type}")
        if low > high:
            raise ScriptRuntimeError(ErrorCode.OUT_OF_RANGE, "min > max")
        if var_type == "da":
            self.potential_window = (low, high)

    def _cmd_set_autoranging(self, var_type: str, low: float, high: float) -> None:
        ranging = self._ranging(var_type)
        if ranging is None:
            raise ScriptRuntimeError(ErrorCode.WRONG_VARIABLE_TYPE, f"no autoranging for {var_type}")
        if abs(low) > abs(high):
            raise ScriptRuntimeError(ErrorCode.OUT_OF_RANGE, "min > max")
        ranging.set_autoranging(low, high)

    def _cmd_set_e(self, potential: float) -> None:
        if abs(potential) > self.spec.compliance_v:
            raise ScriptRuntimeError(ErrorCode.OUT_OF_RANGE, f"{potential} V")
        self.e_set = potential

    def _cmd_set_i(self, current: float) -> None:
        if abs(current) > self.spec.max_current_a:
            raise ScriptRuntimeError(ErrorCode.OUT_OF_RANGE, f"{current} A")
        self.i_set = current

    def _cmd_cell_on(self) -> None:
        if self.mode == PGSTAT_OFF:
            raise ScriptRuntimeError(ErrorCode.WRONG_PGSTAT_MODE, "cell_on in mode 0")
        self.cell_on = True

    def _cmd_cell_off(self) -> None:
        self.cell_on = False

    def _cmd_set_acquisition_frac_autoadjust(self, _value: float) -> None:
        """Accepted; the simulated acquisition has no mains filter to adjust."""

    def _require(self, modes: set[int] | frozenset[int], *, cell: bool) -> None:
        if self.mode not in modes:
            raise ScriptRuntimeError(ErrorCode.WRONG_PGSTAT_MODE, f"mode {self.mode}")
        if cell and not self.cell_on:
            raise ScriptRuntimeError(ErrorCode.CELL_ON_REQUIRED, "cell is off")

    # ------------------------------------------------------------------ physics

    def integrate_to(self, t: float) -> None:
        """Advance the load to time t in sub-steps of at most `max_step_s` at the operating current."""
        while self.t < t:
            t_next = min(self.t + self.max_step_s, t)
            self.load.advance(t_next - self.t, self.operating_point().current_a)
            self.t = t_next

    def operating_point(self) -> OperatingPoint:
        """The cell now, without noise."""
        load = self.load
        if not self.cell_on:
            return OperatingPoint(0.0, load.voltage(0.0), False)
        v_max = self.spec.compliance_v
        if self.mode == GALVANOSTATIC_MODE:
            limit = min(self.db.limit(), self.spec.max_current_a)
            current = max(-limit, min(limit, self.i_set))
            limited = current != self.i_set
            voltage = load.voltage(current)
            if abs(voltage) > v_max:
                low, high = sorted((0.0, current))
                current, _ = self._solve_current(math.copysign(v_max, voltage), low, high)
                voltage, limited = load.voltage(current), True
            return OperatingPoint(current, voltage, limited)
        limit = min(self.ba.limit(), self.spec.max_current_a)
        current, clamped = self._solve_current(self.e_set, -limit, limit)
        return OperatingPoint(current, load.voltage(current) if clamped else self.e_set, clamped)

    def _solve_current(self, target_v: float, low: float, high: float) -> tuple[float, bool]:
        """Current in [low, high] at which the load shows target_v; (bound, True) if outside.

        Bisection assumes `load.voltage` increases with current (true of cells and resistors).
        """
        voltage = self.load.voltage
        if target_v <= voltage(low):
            return low, target_v < voltage(low)
        if target_v >= voltage(high):
            return high, target_v > voltage(high)
        for _ in range(200):
            mid = 0.5 * (low + high)
            if mid in (low, high):
                break
            if voltage(mid) < target_v:
                low = mid
            else:
                high = mid
        return 0.5 * (low + high), False

    # ------------------------------------------------------------------ readings

    def _status(self, magnitude: float, full_scale: float, *, limited: bool, underload: bool) -> int:
        status = Status.OK
        if limited or magnitude > full_scale:
            status |= Status.OVERLOAD
        elif magnitude > OVERLOAD_WARNING_FRACTION * full_scale:
            status |= Status.OVERLOAD_WARNING
        if underload and magnitude < UNDERLOAD_FRACTION * full_scale / FULL_SCALE_FACTOR:
            status |= Status.UNDERLOAD
        return int(status)

    def _potential_reading(self, op: OperatingPoint) -> Var:
        value = op.voltage_v + self.rng.gauss(0.0, POTENTIAL_NOISE_V)
        position = self.ab.select(abs(value))
        full_scale = self.ab.full_scale(position)
        limited = op.limited and self.mode == GALVANOSTATIC_MODE
        status = self._status(abs(value), full_scale, limited=limited, underload=False)
        return Var("ab", value, status=status, range=self.ab.index(position))

    def _current_ranging(self) -> Ranging:
        return self.db if self.mode == GALVANOSTATIC_MODE and self.cell_on else self.ba

    def _current_reading(self, op: OperatingPoint) -> Var:
        ranging = self._current_ranging()
        position = ranging.select(abs(op.current_a))
        full_scale = ranging.full_scale(position)
        value = op.current_a + self.rng.gauss(0.0, CURRENT_NOISE_FRACTION * full_scale)
        status = self._status(abs(op.current_a), full_scale, limited=op.limited, underload=True)
        return Var("ba", value, status=status, range=ranging.index(position))

    def _ca_point(self) -> list[Var]:
        op = self.operating_point()
        return [Var("da", self.e_set), self._current_reading(op)]

    def _cp_point(self) -> list[Var]:
        op = self.operating_point()
        return [self._potential_reading(op), self._current_reading(op)]

    def _ocp_point(self) -> list[Var]:
        return [self._potential_reading(self.operating_point())]

    def eis_point(self, frequency: float, amplitude: float, galvanostatic: bool) -> list[Var]:
        """One impedance point at `frequency` around the present DC operating point."""
        assert isinstance(self.load, ImpedanceLoad)
        op = self.operating_point()
        z = self.load.impedance(frequency, op.current_a)
        magnitude = abs(z)
        peak = math.sqrt(2.0) * amplitude
        if galvanostatic:
            current_peak, potential_peak = peak, peak * magnitude
            current_ranging = self.db
        else:
            current_peak = peak / magnitude if magnitude > 0 else math.inf
            potential_peak = peak
            current_ranging = self.ba
        i_total = abs(op.current_a) + current_peak
        e_total = abs(op.voltage_v) + potential_peak
        i_position = current_ranging.select(i_total)
        e_position = self.ab.select(e_total)
        i_full_scale = current_ranging.full_scale(i_position)
        e_full_scale = self.ab.full_scale(e_position)
        if galvanostatic:
            snr_noise = POTENTIAL_NOISE_V / (amplitude * magnitude) if magnitude > 0 else math.inf
        else:
            snr_noise = CURRENT_NOISE_FRACTION * i_full_scale / (amplitude / magnitude)
        sigma = magnitude * math.hypot(EIS_RELATIVE_NOISE, snr_noise)
        z_real = z.real + self.rng.gauss(0.0, sigma)
        z_imag = z.imag + self.rng.gauss(0.0, sigma)
        i_status = self._status(i_total, i_full_scale, limited=op.limited, underload=False)
        e_status = self._status(e_total, e_full_scale, limited=False, underload=False)
        return [
            Var("dc", frequency),
            Var("cc", z_real, status=i_status, range=current_ranging.index(i_position)),
            Var("cd", z_imag, status=e_status, range=self.ab.index(e_position)),
        ]


class _TimedLoop:
    """CA, CP and OCP: a point every `interval` for `run_time`."""

    def __init__(
        self,
        hardware: Potentiostat,
        code: int,
        interval: float,
        run_time: float,
        take: Callable[[], list[Var]],
    ) -> None:
        if interval <= 0 or run_time <= 0:
            raise ScriptRuntimeError(ErrorCode.MUST_BE_POSITIVE, "interval and run time")
        self.code = code
        self.count = math.floor(run_time / interval + 1e-9)
        if self.count < 1:
            raise ScriptRuntimeError(ErrorCode.NO_POINTS, "run time shorter than the interval")
        self.t0 = hardware.now()
        self.interval = interval
        self.done = 0
        self._take = take

    def next_time(self) -> float | None:
        """Point k (1-based) is due at t0 + k·interval."""
        return None if self.done >= self.count else self.t0 + (self.done + 1) * self.interval

    def measure(self) -> list[Var]:
        """Take the due point."""
        self.done += 1
        return self._take()

    def close(self) -> None:
        """The setpoint stays applied [mem]."""


class _EisLoop:
    """EIS and GEIS: log-spaced frequencies, each taking a few periods of simulated time."""

    def __init__(
        self,
        hardware: Potentiostat,
        code: int,
        galvanostatic: bool,
        amplitude: float,
        f_start: float,
        f_end: float,
        n_points: int,
    ) -> None:
        self.code = code
        self.hardware = hardware
        self.galvanostatic = galvanostatic
        self.amplitude = amplitude
        if n_points == 1:
            self.frequencies = [f_start]
        else:
            ratio = math.log(f_end / f_start)
            self.frequencies = [f_start * math.exp(ratio * k / (n_points - 1)) for k in range(n_points)]
        self.done = 0
        self.t_last = hardware.now()

    @staticmethod
    def point_duration(frequency: float) -> float:
        """Simulated time one point at `frequency` takes, s."""
        return max(EIS_MIN_POINT_S, EIS_PERIODS_PER_POINT / frequency)

    def next_time(self) -> float | None:
        """When the next frequency's measurement is done."""
        if self.done >= len(self.frequencies):
            return None
        return self.t_last + self.point_duration(self.frequencies[self.done])

    def measure(self) -> list[Var]:
        """The due frequency's impedance."""
        due = self.next_time()
        assert due is not None
        frequency = self.frequencies[self.done]
        self.done += 1
        self.t_last = due
        return self.hardware.eis_point(frequency, self.amplitude, self.galvanostatic)

    def close(self) -> None:
        """The DC setpoint stays applied [mem]."""


# ---------------------------------------------------------------------------------- instrument


class EmStat4Simulator:
    """An EmStat4 on a serial line: online commands, scripts, and the output they stream.

    Args:
        load: the cell on the terminals (`ImpedanceLoad` too, for EIS and GEIS).
        time_source: where time comes from (`time.monotonic` standalone, a simulated clock in tests
            and `--sim` runs).
        seed: seeds the measurement noise.
        device: `es4_hr` or `es4_lr` (sets the `t` reply, ranges and limits).
        serial_number: reported by `i`.
        max_step_s: longest single load integration step, s.
        max_steps_per_call: most script steps one call executes, so a script looping without
            consuming time cannot hang the event loop; the rest runs on the next call.

    Example:
        simulator = EmStat4Simulator(RandlesLoad(100, 1000, 1e-6), clock)
        output = simulator.handle_bytes(b"t" + bytes([10]))  # `tes4_hr1300#…` and `R*` lines
    """

    def __init__(
        self,
        load: ElectricalLoad,
        time_source: TimeSource,
        seed: int = 0,
        device: str = "es4_hr",
        *,
        serial_number: str = "ES4SIM00001",
        max_step_s: float = 1.0,
        max_steps_per_call: int = 100_000,
    ) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {sorted(DEVICES)}, not {device!r}")
        if max_step_s <= 0:
            raise ValueError("max_step_s must be positive")
        self.spec = DEVICES[device]
        self.load = load
        self.seed = seed
        self.serial_number = serial_number
        self.max_steps_per_call = max_steps_per_call
        self._time_source = time_source
        self.hardware = Potentiostat(self.spec, load, random.Random(seed), float(time_source()), max_step_s)
        self._output = bytearray()
        self._input = bytearray()
        self._receiving: str | None = None
        """`e` or `l` while script lines are being received, else None."""
        self._script_lines: list[str] = []
        self._loaded: Script | None = None
        self._run: ScriptRun | None = None
        self._wake: float | None = None

    # ------------------------------------------------------------------ public API

    @property
    def time(self) -> float:
        """The model's clock (time-source seconds); never ahead of the time source."""
        return self.hardware.t

    @property
    def running(self) -> bool:
        """Whether a script is running."""
        return self._run is not None

    def handle_bytes(self, data: bytes) -> bytes:
        """Take received bytes at the present time; return every output byte now due.

        Complete lines (LF-terminated; a CR before the LF is dropped) are executed in order; a
        partial line waits for the rest, as in the instrument's command buffer.
        """
        now = self._catch_up()
        if self._wake is None or self._wake > now:  # no backlog: the input happens now
            self.hardware.integrate_to(now)
        self._input += data
        while (end := self._input.find(b"\n")) >= 0:
            raw = bytes(self._input[:end]).removesuffix(b"\r")
            del self._input[: end + 1]
            self._handle_line(raw.decode("ascii", errors="replace"))
        return self.take_output()

    def poll(self) -> bytes:
        """Run what is due at the present time; return the output produced (front-ends call this often)."""
        self._catch_up()
        return self.take_output()

    def take_output(self) -> bytes:
        """Output produced and not yet taken."""
        data = bytes(self._output)
        self._output.clear()
        return data

    def next_event_time(self) -> float | None:
        """When the running script next needs the model (time-source seconds), or None."""
        return self._wake if self._run is not None else None

    def power_cycle(self) -> None:
        """Switch off and on: a running script stops silently, settings return to power-on values.

        The load is a separate device: it is integrated up to now first and keeps its state.
        """
        now = self._catch_up()
        self.hardware.integrate_to(now)
        self._run = None
        self._wake = None
        self._input.clear()
        self._output.clear()
        self._receiving = None
        self._script_lines = []
        self._loaded = None
        self.hardware.reset()

    # ------------------------------------------------------------------ time

    def _catch_up(self) -> float:
        """Run the script's steps due by now; return now (never before the model's time)."""
        now = max(float(self._time_source()), self.hardware.t)
        steps = 0
        while self._run is not None and self._wake is not None and self._wake <= now:
            if steps >= self.max_steps_per_call:
                log.warning("script step budget exhausted at t=%.6f; continuing on the next call", now)
                break
            steps += 1
            self.hardware.integrate_to(self._wake)
            try:
                self._wake = next(self._run.steps())
            except StopIteration:
                self._run, self._wake = None, None
        return now

    # ------------------------------------------------------------------ online commands

    def _emit(self, line: str) -> None:
        self._output += line.encode("ascii", errors="replace") + b"\n"

    def _handle_line(self, line: str) -> None:
        if self._receiving is not None:
            if line:
                self._script_lines.append(line)
            else:
                self._end_of_script()
            return
        if not line:
            return  # a bare LF flushes a half-received command: nothing to answer
        command = line[0]
        if self._run is not None:
            if command == "Z":
                self._abort()
            else:
                self._emit(f"{command}!{ErrorCode.NOT_NOW:04X}")
            return
        if command == "t":
            self._emit(f"t{self.spec.device_id}{FIRMWARE_VERSION}#{FIRMWARE_BUILD}")
            self._emit("R*")
        elif command == "v":
            self._emit(f"v{METHODSCRIPT_VERSION}")
        elif command == "i":
            self._emit(f"i{self.serial_number}")
        elif command in ("e", "l"):
            self._receiving = command
            self._script_lines = []
        elif command == "r":
            if self._loaded is None:
                self._emit(f"r!{ErrorCode.NO_SCRIPT_LOADED:04X}")
            else:
                self._emit("r")
                self._start(self._loaded)
        elif command == "Z":
            self._emit(f"Z!{ErrorCode.NOT_NOW:04X}")
        else:
            self._emit(f"{command}!{ErrorCode.UNKNOWN_COMMAND:04X}")

    def _end_of_script(self) -> None:
        command, lines = self._receiving, self._script_lines
        self._receiving, self._script_lines = None, []
        try:
            script = parse_script(lines)
        except ScriptSyntaxError as error:
            log.info("script refused: %s", error)
            self._emit(error.reply(command or "e"))
            return
        if command == "l":
            self._loaded = script
            self._emit("l")
            return
        self._emit("e")
        self._start(script)

    def _start(self, script: Script) -> None:
        self._run = ScriptRun(script, self.hardware, self._emit)
        self._wake = self.hardware.t
        self._catch_up()

    def _abort(self) -> None:
        run = self._run
        assert run is not None
        self._emit("Z")
        if run.finishing:
            return  # on_finished: already runs; it completes by itself
        self._wake = run.abort()
        if self._wake is None:
            self._run = None
        else:
            self._catch_up()


# ---------------------------------------------------------------------------------- link plumbing


def _garble_first_line(data: bytes) -> bytes:
    """Corrupt the first line of a chunk: top bit set on each byte, its LF kept."""
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    return bytes(byte | 0x80 for byte in data[:end]) + data[end:]


class _OutputWriter:
    """Writes one client's output in order, applying the link faults; owns one task.

    Args:
        write: writes bytes to the client (raises OSError/ConnectionError when the link is gone).
        faults: the front-end's shared fault settings.
        max_buffer_bytes: output queued beyond this (a client not reading) is dropped.
    """

    def __init__(
        self, write: Callable[[bytes], Awaitable[None]], faults: Faults, max_buffer_bytes: int = 1 << 20
    ) -> None:
        self._write = write
        self._faults = faults
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued = 0
        self.max_buffer_bytes = max_buffer_bytes
        self.task = asyncio.create_task(self._run(), name="emstat4 output")

    def send(self, data: bytes) -> None:
        """Queue output for the client."""
        if self._queued + len(data) > self.max_buffer_bytes:
            log.warning("client is not reading: dropping %d bytes of output", len(data))
            return
        self._queued += len(data)
        self._queue.put_nowait(data)

    async def aclose(self) -> None:
        """Stop writing (queued output is dropped)."""
        self.task.cancel()
        await asyncio.wait([self.task])

    async def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await self._queue.get()
                self._queued -= len(data)
                faults = self._faults
                if faults.garble_next_reply:
                    faults.garble_next_reply = False
                    data = _garble_first_line(data)
                if faults.reply_delay_s > 0:
                    await asyncio.sleep(faults.reply_delay_s)
                size = faults.fragment_size
                if size <= 0:
                    await self._write(data)
                    continue
                for start in range(0, len(data), size):
                    await self._write(data[start : start + size])
                    if start + size < len(data):
                        await asyncio.sleep(faults.fragment_gap_s)


class _StreamingFrontEnd:
    """What both front-ends share: the simulator, the faults and the poll task that streams output."""

    def __init__(self, simulator: EmStat4Simulator, faults: Faults | None, poll_interval_s: float, name: str):
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self.simulator = simulator
        self.faults = faults if faults is not None else Faults()
        self.poll_interval_s = poll_interval_s
        self.name = name
        self.state = ServerState.UNSTARTED
        self._writers: list[_OutputWriter] = []
        self._poll_task: asyncio.Task[None] | None = None

    def _deliver(self, data: bytes) -> None:
        """Hand output to every connected client; with none connected it is lost, as on a serial line."""
        if data:
            for writer in self._writers:
                writer.send(data)

    def _received(self, data: bytes) -> None:
        self._deliver(self.simulator.handle_bytes(data))

    def _start_polling(self) -> None:
        self._poll_task = asyncio.create_task(self._poll(), name=f"{self.name} poll")

    async def _stop_polling(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            await asyncio.wait([self._poll_task])
            self._poll_task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            self._deliver(self.simulator.poll())


# ---------------------------------------------------------------------------------- TCP front-end


@dataclass(slots=True)
class _TcpClient:
    writer: asyncio.StreamWriter
    worker: asyncio.Task[None]
    output: _OutputWriter


class EmStat4Server(_StreamingFrontEnd):
    """Serves an `EmStat4Simulator` over TCP as a raw byte stream (a serial-over-LAN bridge).

    Clients may connect with asyncio streams or pyserial (`serial_for_url("socket://127.0.0.1:PORT")`).
    Every client's input goes to the one instrument and every client gets all of its output.

    Args:
        simulator: the instrument model.
        faults: link faults (`drop_next_command` closes the connection that sends the next LF,
            without executing that chunk; `reply_delay_s`, `garble_next_reply` (the next output
            line), `fragment_size` apply to output).
        poll_interval_s: wall-time period of the poll that streams output, s.

    Example:
        async with EmStat4Server(simulator) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    """

    def __init__(
        self,
        simulator: EmStat4Simulator,
        *,
        faults: Faults | None = None,
        poll_interval_s: float = 0.01,
        name: str = "emstat4",
    ) -> None:
        super().__init__(simulator, faults, poll_interval_s, name)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._clients: dict[asyncio.Task[None], _TcpClient] = {}

    async def __aenter__(self) -> Self:
        if self.state is ServerState.UNSTARTED:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before `start`)."""
        return self._port

    @property
    def connection_count(self) -> int:
        """Clients connected now."""
        return len(self._clients)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 = a free port) and return the bound port once listening.

        Raises:
            RuntimeError: if the server was already started or closed.
        """
        if self.state is not ServerState.UNSTARTED:
            raise RuntimeError(f"{self.name}: already {self.state.value}; make a new server")
        self._server = await asyncio.start_server(self._serve_client, host, port)
        self._port = self._server.sockets[0].getsockname()[1]
        self.state = ServerState.SERVING
        self._start_polling()
        log.info("%s listening on %s:%d", self.name, host, self._port)
        return self._port

    async def drop_connections(self) -> None:
        """Close every client connection now (a pulled cable); the server keeps listening."""
        tasks = list(self._clients)
        for client in self._clients.values():
            client.writer.transport.abort()
            client.worker.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def aclose(self) -> None:
        """Stop polling and listening, close every connection, wait for every task."""
        if self.state is ServerState.CLOSED:
            return
        self.state = ServerState.CLOSED
        await self._stop_polling()
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("%s on port %d closed", self.name, self._port)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio owns this task and calls task.exception() on it (streams.py), so the work runs in
        # a worker this server owns and may cancel, and this task always ends normally (as tcp.py).
        task = asyncio.current_task()
        assert task is not None
        if self.state is not ServerState.SERVING:
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # fragments must leave as separate segments
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        output = _OutputWriter(write, self.faults)
        worker = asyncio.create_task(self._serve_input(reader, writer), name=f"{self.name} input")
        self._clients[task] = _TcpClient(writer, worker, output)
        self._writers.append(output)
        try:
            await asyncio.wait([worker])
        finally:
            if not worker.done():
                worker.cancel()
                await asyncio.wait([worker])
            self._writers.remove(output)
            await output.aclose()
            self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_input(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                data = await reader.read(4096)
            except ConnectionError:
                return
            if not data:
                return
            if self.faults.drop_next_command and b"\n" in data:
                self.faults.drop_next_command = False
                log.info("%s: fault: dropping the connection", self.name)
                writer.transport.abort()
                return
            self._received(data)


# ---------------------------------------------------------------------------------- pty front-end


class EmStat4PtyServer(_StreamingFrontEnd):
    """Serves an `EmStat4Simulator` on a pseudo-terminal, as a USB virtual COM port appears.

    The server owns the master side; a client opens `path` (`/dev/pts/N`) with pyserial or
    `os.open`. The terminal is raw (no echo, no line editing, no CR/LF translation). The server
    also keeps the slave open, so clients may close and reopen the port, like a device that stays
    plugged in. `unplug()` closes both ends: a client's next read fails (EIO or end of file), as
    after a USB unplug; `replug()` makes a new pty, at a new path, as re-enumeration does.

    Args:
        simulator: the instrument model.
        faults: link faults (`drop_next_command` unplugs when the next LF arrives; the others
            apply to output as in `EmStat4Server`).
        poll_interval_s: wall-time period of the poll that streams output, s.

    Example:
        async with EmStat4PtyServer(simulator) as pty:
            port = serial.Serial(pty.path, 921600, timeout=0.5)
    """

    def __init__(
        self,
        simulator: EmStat4Simulator,
        *,
        faults: Faults | None = None,
        poll_interval_s: float = 0.01,
        name: str = "emstat4 pty",
    ) -> None:
        super().__init__(simulator, faults, poll_interval_s, name)
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._output: _OutputWriter | None = None
        self._closing: list[_OutputWriter] = []

    async def __aenter__(self) -> Self:
        if self.state is ServerState.UNSTARTED:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def path(self) -> str:
        """The slave device path clients open (the latest one after `replug`)."""
        if self._path is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._path

    @property
    def plugged(self) -> bool:
        """Whether the pty exists (False after `unplug`)."""
        return self._master is not None

    async def start(self) -> str:
        """Create the pty and start serving; return the slave path.

        Raises:
            RuntimeError: if the server was already started or closed.
        """
        if self.state is not ServerState.UNSTARTED:
            raise RuntimeError(f"{self.name}: already {self.state.value}; make a new server")
        self._plug()
        self.state = ServerState.SERVING
        self._start_polling()
        log.info("%s on %s", self.name, self._path)
        return self.path

    def unplug(self) -> None:
        """Close the pty (USB unplug); the instrument keeps running and its output is lost."""
        master, slave = self._master, self._slave
        if master is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(master)
        loop.remove_writer(master)
        self._master = self._slave = None
        if self._output is not None:
            self._writers.remove(self._output)
            self._output.task.cancel()
            self._closing.append(self._output)
            self._output = None
        os.close(master)
        if slave is not None:
            os.close(slave)
        log.info("%s: unplugged %s", self.name, self._path)

    async def replug(self) -> str:
        """Plug in again on a new pty; return its path.

        Raises:
            RuntimeError: if the server is not serving or is still plugged in.
        """
        if self.state is not ServerState.SERVING or self.plugged:
            raise RuntimeError(f"{self.name}: replug needs a serving, unplugged server")
        await self._reap()
        self._plug()
        return self.path

    async def aclose(self) -> None:
        """Unplug, stop polling and wait for every task."""
        if self.state is ServerState.CLOSED:
            return
        self.state = ServerState.CLOSED
        await self._stop_polling()
        if self._master is not None:
            self.unplug()
        await self._reap()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # the terminal's settings: raw, no echo (the master shares them)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._path = os.ttyname(slave)
        self._output = _OutputWriter(self._write, self.faults)
        self._writers.append(self._output)
        asyncio.get_running_loop().add_reader(master, self._readable)

    async def _reap(self) -> None:
        closing, self._closing = self._closing, []
        for output in closing:
            await output.aclose()

    def _readable(self) -> None:
        master = self._master
        if master is None:
            return
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError as error:  # EIO: the slave end is gone (not expected: we hold it open)
            log.warning("%s: read failed (%s): unplugging", self.name, error)
            self.unplug()
            return
        if not data:
            return
        if self.faults.drop_next_command and b"\n" in data:
            self.faults.drop_next_command = False
            log.info("%s: fault: unplugging", self.name)
            self.unplug()
            return
        self._received(data)

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            master = self._master
            if master is None:
                raise OSError("unplugged")
            try:
                written = os.write(master, view)
            except BlockingIOError:
                await self._writable(master)
                continue
            view = view[written:]

    async def _writable(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(master, wake)
        try:
            await ready
        finally:
            if self._master == master:
                loop.remove_writer(master)


# ---------------------------------------------------------------------------------- standalone


def _default_load() -> ElectricalLoad:
    """A symmetric Li|SE|Li cell if `simulators.cell` is available, else an RC test load."""
    try:
        from simulators.cell import CellParameters, SymmetricCell
    except ImportError:
        log.warning("simulators.cell is not available: serving 100 ohm + (1 kohm || 1 uF)")
        return RandlesLoad(100.0, 1000.0, 1e-6)
    return SymmetricCell(CellParameters())


async def serve_emstat4(
    port: int,
    host: str = "127.0.0.1",
    load: ElectricalLoad | None = None,
    seed: int = 0,
    device: str = "es4_hr",
) -> None:
    """Serve a simulated EmStat4 over TCP on the wall clock until cancelled.

    This is what `labctl sim serve emstat4 --port N` runs; clients use pyserial
    `socket://HOST:PORT`.

    Args:
        port: TCP port (0 picks a free one; it is logged).
        host: interface to listen on.
        load: the cell; by default a symmetric cell (`simulators.cell`, no impedance model, so EIS
            answers `!001B`) or, if that module is missing, 100 Ω + (1 kΩ ∥ 1 µF).
        seed: measurement-noise seed.
        device: `es4_hr` or `es4_lr`.
    """
    simulator = EmStat4Simulator(
        load if load is not None else _default_load(), wall_time_source(), seed=seed, device=device
    )
    server = EmStat4Server(simulator)
    bound = await server.start(host, port)
    log.info("simulated EmStat4 at socket://%s:%d", host, bound)
    async with server:
        await asyncio.get_running_loop().create_future()  # until cancelled
