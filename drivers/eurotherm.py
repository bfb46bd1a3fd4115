"""Eurotherm 3200 PID controller over Modbus (RTU on a serial port or pty, or Modbus TCP) as a `Thermostat`.

Why it works this way (INSTRUMENTS.md §4.1, §6):

- **Never ramp the EEPROM set-point.** TG.SP (2) and SP1 (24) live in EEPROM, good for about 100 000
  writes. `set_temperature` selects the remote comms set-point once (address 276 = 1 [mem]) and then
  writes only Rm.SP (26), which is RAM. A test counts the simulator's EEPROM writes to prove it.
- **Scaled integers.** Registers hold 16-bit signed integers with the display's decimals
  (`decimals`, 1 by default: 24.2 °C reads 242). Temperatures are °C on the device [mem: a unit set
  to °F or K would need `device_unit`]; the driver speaks kelvin.
- **Errors at the boundary.** A Modbus exception reply → `InstrumentRejectedError` naming the code;
  no reply (after pymodbus's own retries) → `InstrumentTimeout`; a port that will not open →
  `LinkError`. pymodbus exceptions never leave this module.
- **Safe state** holds the present set-point: the working set-point (5) is copied into Rm.SP, so the
  heater keeps the cell where it is (switching it off mid-test would cool the cell).
"""

from __future__ import annotations

import logging
from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers.errors import (
    InstrumentError,
    InstrumentRejectedError,
    InstrumentReplyError,
    InstrumentTimeout,
    LinkError,
)

log = logging.getLogger(__name__)

KELVIN = 273.15
PV, WRK_OP, WKG_SP, RM_SP, REMOTE_SELECT = 1, 4, 5, 26, 276
"""Holding-register addresses (§4.1; 276 is [mem])."""

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
}


class Eurotherm3200:
    """A Eurotherm 3200 on Modbus; temperatures in kelvin.

    Args:
        url: a serial device path (`/dev/ttyUSB0`, a pty `/dev/pts/N`) for RTU, or
            `tcp://host:port` for Modbus TCP (or a serial-to-Ethernet gateway in TCP mode).
        device_id: Modbus slave address (1 by default on the 3200 [mem]).
        baudrate: 9600 or 19200 (8N1) for RTU.
        timeout_s: per-request timeout, s.
        retries: pymodbus retries per request before a timeout is reported.
        decimals: decimals of the scaled registers (the display resolution).
    """

    def __init__(
        self,
        url: str,
        *,
        device_id: int = 1,
        baudrate: int = 19200,
        timeout_s: float = 1.0,
        retries: int = 1,
        decimals: int = 1,
    ) -> None:
        self.url = url
        self.device_id = device_id
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self.scale = 10**decimals
        self.identity = f"Eurotherm 3200 @ {url} (id {device_id})"
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._remote_selected = False

    async def __aenter__(self) -> Eurotherm3200:
        if self.url.startswith("tcp://"):
            host, _, port = self.url.removeprefix("tcp://").rpartition(":")
            client: Any = AsyncModbusTcpClient(
                host, port=int(port), timeout=self.timeout_s, retries=self.retries, reconnect_delay=0
            )
        else:
            client = AsyncModbusSerialClient(
                self.url,
                framer=FramerType.RTU,
                baudrate=self.baudrate,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=self.timeout_s,
                retries=self.retries,
                reconnect_delay=0,
            )
        self._client = client
        try:
            if not await client.connect():
                raise LinkError(
                    f"{self.url}: cannot open the Modbus link; check the port name (or host:port), that "
                    "no other program holds it, and that the controller is on"
                )
            await self.read_temperature()  # proves the controller answers at this address
        except BaseException:
            client.close()
            self._client = None
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.safe_state()
        except InstrumentError as exc:
            log.error("%s: set-point hold not confirmed on close: %s", self.url, exc)
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------------ register I/O

    async def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
            raise LinkError(f"{self.url}: not connected; use `async with Eurotherm3200(...)`")
        try:
            reply = await getattr(self._client, method)(*args, device_id=self.device_id, **kwargs)
        except ModbusException as exc:
            raise InstrumentTimeout(
                f"{self.url}: no valid reply while {what} ({exc}); check the cable, baud rate "
                f"({self.baudrate} 8N1), slave address {self.device_id} and that the controller is on"
            ) from exc
        if reply.isError():
            code = getattr(reply, "exception_code", 0)
            raise InstrumentRejectedError(
                f"{self.url}: controller refused {what}: Modbus exception {code} "
                f"({EXCEPTION_NAMES.get(code, 'unknown')}); check the address map of this model and the "
                "value's range"
            )
        return reply

    async def read_register(self, address: int, *, scaled: bool = True) -> float:
        """Get one register as an engineering value (signed; `decimals` decimals if `scaled`)."""
        reply = await self._call(f"reading register {address}", "read_holding_registers", address, count=1)
        if len(reply.registers) != 1:
            raise InstrumentReplyError(f"{self.url}: register {address}: {len(reply.registers)} words, not 1")
        word = reply.registers[0]
        return (word - 0x10000 if word >= 0x8000 else word) / (self.scale if scaled else 1)

    async def write_register(self, address: int, value: float, *, scaled: bool = True) -> None:
        """Set one register from an engineering value (`decimals` decimals if `scaled`)."""
        word = round(value * (self.scale if scaled else 1))
        if not -32768 <= word <= 32767:
            raise ValueError(f"{value:g} does not fit register {address} at {self.scale}x scaling")
        await self._call(f"writing {value:g} to register {address}", "write_register", address, word & 0xFFFF)

    # ------------------------------------------------------------------ Thermostat

    async def read_temperature(self) -> float:
        """Measure the process value (1), in kelvin."""
        return await self.read_register(PV) + KELVIN

    async def set_temperature(self, temperature_k: float) -> None:
        """Set the remote comms set-point (26) in kelvin; selects remote (276 = 1) first if needed."""
        if not self._remote_selected:
            if await self.read_register(REMOTE_SELECT, scaled=False) != 1:
                await self.write_register(REMOTE_SELECT, 1, scaled=False)
            self._remote_selected = True
        await self.write_register(RM_SP, temperature_k - KELVIN)

    async def working_setpoint(self) -> float:
        """Get the working set-point (5) the PID follows, in kelvin."""
        return await self.read_register(WKG_SP) + KELVIN

    async def output_percent(self) -> float:
        """Measure the working output (4), 0..100 %."""
        return await self.read_register(WRK_OP)

    async def safe_state(self) -> None:
        """Hold the present set-point: copy the working set-point into Rm.SP (no EEPROM write)."""
        working = await self.read_register(WKG_SP)
        if self._remote_selected:
            await self.write_register(RM_SP, working)
