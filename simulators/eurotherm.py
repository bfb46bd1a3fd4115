"""Eurotherm 3200 heater controller simulator: a pymodbus server (RTU over a pty, and Modbus TCP).

Layers:

* `ThermalPlant` + `Pid`: a first-order hot plate (heater power → temperature, time constant of
  minutes, heat loss to a 25 °C ambient) and the controller's PID, which drives the working output
  toward the working set-point. An optional `cell` gets `cell.temperature_k` whenever the model
  advances; `temperature_c` / `on_temperature` give the same to anything else.
* `Eurotherm3200Simulator`: the register map and its semantics. Its `action` is the pymodbus
  `SimDevice` action hook, called before every request touches the registers: it advances the model
  to `time_source()`, refreshes the registers it answers from, and applies writes.
* `EurothermTcpServer` (`ModbusTcpServer`) and `EurothermRtuPtyServer` (`ModbusSerialServer`, RTU
  framer, on one end of a pair of bridged pseudo-terminals; the client opens the other end's
  `path`, like `socat pty pty`). Built on pymodbus's plain server + `SimDevice`/`SimData` API
  (3.10+); the old `ModbusDeviceContext` datastore is deprecated and logs a warning.

Register map (INSTRUMENTS.md §4.1; holding registers, function 03 read, 06/16 write; 16-bit
signed integers with one decimal, so 24.2 °C reads 242):

| addr | name | scaling | access |
|---|---|---|---|
| 1 | PV | ×10 | read-only |
| 2 | TG.SP target set-point (alias of SP1: SP1 active) | ×10 | EEPROM write, counted |
| 3 | MAN.OP manual output % | ×10 | write |
| 4 | WRK.OP working output % | ×10 | read-only |
| 5 | WKG.SP working set-point | ×10 | read-only |
| 6 / 8 / 9 | PB (°C) / Ti (s) / Td (s) | ×10 / ×1 / ×1 [mem: scaling] | write |
| 24 / 25 | SP1 / SP2 | ×10 | EEPROM write, counted |
| 26 | Rm.SP remote comms set-point | ×10 | write (RAM) |
| 35 | SP rate limit [mem; stored, not applied] | ×10 | write |
| 273 | auto (0) / manual (1) [mem] | ×1 | write |
| 276 | remote SP select: 0 local, 1 remote comms SP [mem] | ×1 | write |

Full-resolution IEEE float32 of each parameter at `0x8000 + 2·addr`, high word first [mem: address
rule from the MATLAB toolbox; word order unconfirmed]. Unmapped addresses → exception 02 (illegal
data address); writes to read-only ones → 02; out-of-range values (set-points outside
`sp_low_c..sp_high_c`) → 03 (illegal data value).

Determinism under a simulated clock. The controller runs on a fixed cycle (`cycle_s`, 0.25 s
[mem]) anchored at the start time: advancing to `now` runs every whole cycle up to `now`, and a
written value takes effect at the next cycle. The state therefore depends only on which cycle a
request falls in, not on wall-clock scheduling; no periodic task exists, so a test that does not
move its clock sees nothing change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import struct
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.base import TimeSource

log = logging.getLogger(__name__)

FLOAT_BASE = 0x8000
"""Full-resolution floats live at FLOAT_BASE + 2·addr [mem]."""

PV, TG_SP, MAN_OP, WRK_OP, WKG_SP, PB, TI, TD = 1, 2, 3, 4, 5, 6, 8, 9
SP1, SP2, RM_SP, SP_RATE, AUTO_MAN, REMOTE_SELECT = 24, 25, 26, 35, 273, 276
SCALE = {PV: 10, TG_SP: 10, MAN_OP: 10, WRK_OP: 10, WKG_SP: 10, PB: 10, TI: 1, TD: 1}
SCALE |= {SP1: 10, SP2: 10, RM_SP: 10, SP_RATE: 10, AUTO_MAN: 1, REMOTE_SELECT: 1}
READ_ONLY = frozenset({PV, WRK_OP, WKG_SP})
EEPROM = frozenset({TG_SP, SP1, SP2})
KELVIN = 273.15


class HeatedLoad(Protocol):
    """A cell model whose temperature can be set (kelvin)."""

    temperature_k: float


@dataclass
class ThermalPlant:
    """A hot plate: tau·dT/dt = (T_amb − T) + gain·u/100, exact per step.

    Attributes:
        temperature_c: plate (and cell) temperature, °C.
        ambient_c: ambient temperature, °C.
        tau_s: thermal time constant (heat capacity × loss resistance), s.
        gain_c: steady-state rise above ambient at 100 % output, °C.
    """

    temperature_c: float = 25.0
    ambient_c: float = 25.0
    tau_s: float = 600.0
    gain_c: float = 500.0

    def advance(self, dt: float, output_percent: float) -> None:
        """Integrate `dt` seconds at a constant heater output (exact for a first-order plant)."""
        steady = self.ambient_c + self.gain_c * output_percent / 100.0
        self.temperature_c = steady + (self.temperature_c - steady) * math.exp(-dt / self.tau_s)


@dataclass
class Pid:
    """The controller's PID in Eurotherm terms: proportional band PB (°C), Ti and Td (s; 0 = off).

    output = 100/PB · (e + (1/Ti)∫e dt − Td·dPV/dt), clamped to 0..100 %, with conditional
    integration (the integral stops while the output is saturated in the direction of the error).
    """

    pb_c: float = 20.0
    ti_s: float = 300.0
    td_s: float = 30.0
    integral: float = 0.0
    last_pv: float | None = None

    def update(self, sp: float, pv: float, dt: float) -> float:
        """One controller cycle; returns the output in %."""
        error = sp - pv
        derivative = 0.0 if self.last_pv is None or dt <= 0 else (pv - self.last_pv) / dt
        self.last_pv = pv
        gain = 100.0 / self.pb_c
        integral = self.integral + (error * dt / self.ti_s if self.ti_s > 0 else 0.0)
        raw = gain * (error + integral - self.td_s * derivative)
        out = min(100.0, max(0.0, raw))
        if out == raw or (raw > 100.0 and error < 0) or (raw < 0.0 and error > 0):
            self.integral = integral
        return out


class Eurotherm3200Simulator:
    """A Eurotherm 3200 as its Modbus registers see it.

    Args:
        time_source: where time comes from.
        device_id: Modbus slave address (1 by default [mem]).
        plant: the heated object; a 10-minute hot plate at 25 °C by default.
        pid: the controller's PID.
        cell: optional cell model; gets `temperature_k` as the plant advances.
        setpoint_c: power-on SP1, °C.
        cycle_s: controller cycle, s.
        sp_low_c / sp_high_c: set-point limits, °C (writes outside → exception 03).
    """

    def __init__(
        self,
        time_source: TimeSource,
        *,
        device_id: int = 1,
        plant: ThermalPlant | None = None,
        pid: Pid | None = None,
        cell: HeatedLoad | None = None,
        setpoint_c: float = 25.0,
        cycle_s: float = 0.25,
        sp_low_c: float = 0.0,
        sp_high_c: float = 500.0,
    ) -> None:
        self._time_source = time_source
        self.device_id = device_id
        self.plant = plant if plant is not None else ThermalPlant()
        self.pid = pid if pid is not None else Pid()
        self.cell = cell
        self.cycle_s = cycle_s
        self.sp_low_c, self.sp_high_c = sp_low_c, sp_high_c
        self.on_temperature: Callable[[float], None] | None = None
        """Called with the plant temperature (K) after each advance."""
        self.t0 = float(time_source())
        self.cycles = 0
        self.values: dict[int, float] = {a: 0.0 for a in SCALE}
        self.values |= {SP1: setpoint_c, TG_SP: setpoint_c, RM_SP: setpoint_c, PB: self.pid.pb_c}
        self.values |= {TI: self.pid.ti_s, TD: self.pid.td_s, PV: self.plant.temperature_c}
        self.eeprom_writes: dict[int, int] = {a: 0 for a in EEPROM}
        """Writes per EEPROM-backed address (2, 24, 25), so a test can prove they are not used."""
        self.writes: list[tuple[int, float]] = []
        """Every accepted write (address, engineering value), oldest first."""

    # ------------------------------------------------------------------ model

    @property
    def temperature_c(self) -> float:
        """Plant temperature now, °C (advances the model first)."""
        self.advance()
        return self.plant.temperature_c

    @property
    def working_setpoint_c(self) -> float:
        """The set-point the PID follows: Rm.SP when remote is selected, else SP1."""
        return self.values[RM_SP] if self.values[REMOTE_SELECT] >= 1 else self.values[SP1]

    def advance(self) -> None:
        """Run every whole controller cycle up to `time_source()`."""
        target = math.floor((float(self._time_source()) - self.t0) / self.cycle_s + 1e-9)
        v = self.values
        self.pid.pb_c, self.pid.ti_s, self.pid.td_s = max(v[PB], 0.1), v[TI], v[TD]
        while self.cycles < target:
            self.cycles += 1
            sp = self.working_setpoint_c
            if v[AUTO_MAN] >= 1:
                out = v[MAN_OP]
            else:
                out = self.pid.update(sp, self.plant.temperature_c, self.cycle_s)
            self.plant.advance(self.cycle_s, out)
            v[WRK_OP] = out
        v[PV] = self.plant.temperature_c
        v[WKG_SP] = self.working_setpoint_c
        v[TG_SP] = v[SP1]
        if self.cell is not None:
            self.cell.temperature_k = self.plant.temperature_c + KELVIN
        if self.on_temperature is not None:
            self.on_temperature(self.plant.temperature_c + KELVIN)

    def write(self, address: int, value: float) -> ExcCodes | None:
        """Apply a write in engineering units; an exception code if refused."""
        if address in READ_ONLY or address not in SCALE:
            return ExcCodes.ILLEGAL_ADDRESS
        if address in (TG_SP, SP1, SP2, RM_SP) and not self.sp_low_c <= value <= self.sp_high_c:
            return ExcCodes.ILLEGAL_VALUE
        if address in (AUTO_MAN, REMOTE_SELECT) and value not in (0, 1):
            return ExcCodes.ILLEGAL_VALUE
        if address == MAN_OP and not 0 <= value <= 100:
            return ExcCodes.ILLEGAL_VALUE
        if address == TG_SP:
            address = SP1  # the target set-point is the active set-point (SP1 here)
            self.eeprom_writes[TG_SP] += 1
        elif address in EEPROM:
            self.eeprom_writes[address] += 1
        self.values[address] = value
        self.writes.append((address, value))
        return None

    # ------------------------------------------------------------------ pymodbus glue

    def sim_device(self) -> SimDevice:
        """A pymodbus `SimDevice` whose registers this simulator drives."""
        simdata = [
            SimData(address=a, values=0, datatype=DataType.REGISTERS, readonly=a in READ_ONLY) for a in SCALE
        ]
        simdata += [
            SimData(address=FLOAT_BASE + 2 * a, count=2, values=0, datatype=DataType.REGISTERS) for a in SCALE
        ]
        return SimDevice(id=self.device_id, simdata=simdata, action=self.action)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """The pymodbus action hook, before a request reads or writes: advance, apply writes, refresh."""
        self.advance()
        if set_values:
            result = self._apply(address, [int(v) for v in set_values])
            if result is not None:
                return result
            self.advance()
        for a, value in self.values.items():
            current_registers[a - start_address] = _to_u16(round(value * SCALE[a]))
            hi, lo = struct.unpack(">HH", struct.pack(">f", value))
            base = FLOAT_BASE + 2 * a - start_address
            current_registers[base], current_registers[base + 1] = hi, lo
        if set_values:  # the written registers are overwritten by pymodbus next: make them the truth
            for i in range(len(set_values)):
                set_values[i] = current_registers[address - start_address + i]  # type: ignore[call-overload]
        return None

    def _apply(self, address: int, words: Sequence[int]) -> ExcCodes | None:
        if address >= FLOAT_BASE:
            if (address - FLOAT_BASE) % 2 or len(words) % 2:
                return ExcCodes.ILLEGAL_ADDRESS
            for i in range(0, len(words), 2):
                (value,) = struct.unpack(">f", struct.pack(">HH", words[i], words[i + 1]))
                if (result := self.write((address - FLOAT_BASE) // 2 + i // 2, value)) is not None:
                    return result
            return None
        for i, word in enumerate(words):
            a = address + i
            if a not in SCALE:
                return ExcCodes.ILLEGAL_ADDRESS
            if (result := self.write(a, _from_u16(word) / SCALE[a])) is not None:
                return result
        return None


def _to_u16(value: int) -> int:
    return max(-32768, min(32767, value)) & 0xFFFF


def _from_u16(word: int) -> int:
    return word - 0x10000 if word >= 0x8000 else word


# ---------------------------------------------------------------------------------- front-ends


class EurothermTcpServer:
    """Modbus TCP front-end on 127.0.0.1 and a free port (`port` after entering)."""

    def __init__(self, simulator: Eurotherm3200Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self.host, self._port = host, port
        self._server: ModbusTcpServer | None = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self._port

    async def __aenter__(self) -> Self:
        self._server = ModbusTcpServer(self.simulator.sim_device(), address=(self.host, self._port))
        await self._server.serve_forever(background=True)
        listener = self._server.transport
        self._port = listener.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None


class EurothermRtuPtyServer:
    """Modbus RTU over a pseudo-terminal pair, like `socat pty,raw pty,raw`.

    The pymodbus serial server opens one pty's slave; the client opens `path`, the other pty's
    slave; the two masters are bridged byte for byte. `unplug()` stops the bridge (the client then
    times out, as with a pulled RS-485 cable), and `garble_next_reply` corrupts one reply byte so the
    client's CRC check fails.

    Args:
        simulator: the register model.
        baudrate: 9600 or 19200 (8N1).
    """

    def __init__(self, simulator: Eurotherm3200Simulator, *, baudrate: int = 19200) -> None:
        self.simulator = simulator
        self.baudrate = baudrate
        self.garble_next_reply = False
        self._fds: list[int] = []
        self._masters: tuple[int, int] | None = None
        self._path = ""
        self._server: ModbusSerialServer | None = None
        self._server_task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        """The slave path a client opens."""
        return self._path

    async def __aenter__(self) -> Self:
        dev_master, dev_slave = os.openpty()
        cli_master, cli_slave = os.openpty()
        for fd in (dev_slave, cli_slave):
            tty.setraw(fd)
        for fd in (dev_master, cli_master):
            os.set_blocking(fd, False)
        self._fds = [dev_master, dev_slave, cli_master, cli_slave]
        self._masters = (dev_master, cli_master)
        self._path = os.ttyname(cli_slave)
        loop = asyncio.get_running_loop()
        loop.add_reader(dev_master, self._pump, dev_master, cli_master, True)
        loop.add_reader(cli_master, self._pump, cli_master, dev_master, False)
        self._server = ModbusSerialServer(
            self.simulator.sim_device(),
            framer=FramerType.RTU,
            port=os.ttyname(dev_slave),
            baudrate=self.baudrate,
            bytesize=8,
            parity="N",
            stopbits=1,
        )
        await self._server.serve_forever(background=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.unplug()
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def unplug(self) -> None:
        """Stop carrying bytes in both directions."""
        if self._masters is None:
            return
        loop = asyncio.get_running_loop()
        for fd in self._masters:
            loop.remove_reader(fd)
        self._masters = None

    def _pump(self, source: int, sink: int, is_reply: bool) -> None:
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, OSError):
            return
        if is_reply and self.garble_next_reply and data:
            self.garble_next_reply = False
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(sink, data)
