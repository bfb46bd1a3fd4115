"""Station configuration (TOML): which instrument plays which role, and how to reach it.

Example `bench.toml`::

    name = "bench-1"

    [potentiostat]
    driver = "keithley2450"
    resource = "TCPIP0::192.168.1.50::5025::SOCKET"
    timeout = "5 s"
    nplc = 1
    four_wire = true

or an EmStat4 (MethodSCRIPT over USB serial)::

    [potentiostat]
    driver = "emstat4"
    resource = "/dev/serial/by-id/usb-PalmSens_EmStat4-if00"

and, optionally, a screw rig and a heater::

    [rig]
    gauge = "/dev/serial/by-id/usb-Mark-10_gauge-if00"
    actuator = "/dev/serial/by-id/usb-Zaber_X-LSM-if00"
    max_force = "1500 N"

    [heater]
    resource = "/dev/ttyUSB0"
    device_id = 1
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labctl import units
from labctl.clock import Clock
from labctl.engine.station import Station
from labctl.errors import ConfigError
from labctl.protocol.model import _quantity


class PotentiostatConfig(BaseModel):
    """How to reach the potentiostat."""

    model_config = ConfigDict(extra="forbid")
    driver: Literal["keithley2450", "emstat4"] = "keithley2450"
    resource: str = Field(
        description="keithley2450: a VISA resource (TCPIP0::192.168.1.50::5025::SOCKET); "
        "emstat4: a serial port (/dev/serial/by-id/…, /dev/ttyACM0) or socket://host:port"
    )
    timeout: Annotated[float, _quantity("time")] = 5.0
    nplc: float = Field(default=1.0, ge=0.01, le=10)
    four_wire: bool = True
    baudrate: int = 921600


class RigConfig(BaseModel):
    """A screw stack-pressure rig: a Mark-10 gauge and a Zaber actuator, the loop in labctl."""

    model_config = ConfigDict(extra="forbid")
    gauge: str = Field(description="the Mark-10 gauge's serial port or socket://host:port")
    actuator: str = Field(description="the Zaber actuator's serial port or socket://host:port")
    max_force: Annotated[float, _quantity("force")] = 2500.0


class HeaterConfig(BaseModel):
    """A Eurotherm 3200 heater controller on Modbus RTU (serial) or TCP (tcp://host:port)."""

    model_config = ConfigDict(extra="forbid")
    resource: str
    device_id: int = 1


class StationConfig(BaseModel):
    """One bench."""

    model_config = ConfigDict(extra="forbid")
    name: str = "bench"
    potentiostat: PotentiostatConfig
    rig: RigConfig | None = None
    heater: HeaterConfig | None = None


def load_station_config(path: Path) -> StationConfig:
    """Read and validate a station file; errors name the field and say what to write."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such station file; see docs/operations.md for an example") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return StationConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg'].removeprefix('Value error, ')}") from None


@asynccontextmanager
async def connect_station(config: StationConfig, clock: Clock, area_m2: float) -> AsyncIterator[Station]:
    """Open every instrument of a configured station; each is left safe and closed on exit.

    The rig is not homed or moved here: with a cell in the fixture, only the protocol's `set`
    steps move the screw (a Zaber that was never homed refuses moves and says so).
    """
    async with contextlib.AsyncExitStack() as stack:
        potentiostat = await stack.enter_async_context(_potentiostat(config.potentiostat, clock.monotonic))
        station = Station(config.name, potentiostat)
        if config.rig is not None:
            from drivers.mark10 import Mark10Gauge
            from drivers.zaber import ZaberActuator
            from labctl.engine.pressure import PressureLoopSettings, StackPressureController

            gauge = await stack.enter_async_context(Mark10Gauge(Mark10Gauge.transport_for(config.rig.gauge)))
            actuator = await stack.enter_async_context(
                ZaberActuator(ZaberActuator.transport_for(config.rig.actuator))
            )
            settings = PressureLoopSettings(max_force_n=config.rig.max_force)
            station.pressure = StackPressureController(gauge, actuator, area_m2, clock, settings)
        if config.heater is not None:
            from drivers.eurotherm import Eurotherm3200

            station.thermostat = await stack.enter_async_context(
                Eurotherm3200(config.heater.resource, device_id=config.heater.device_id)
            )
        yield station


def _potentiostat(pot: PotentiostatConfig, time_source: Callable[[], float]) -> Any:
    if pot.driver == "emstat4":
        from drivers.emstat import EmStat4
        from drivers.transports.serial import SerialTransport

        serial = SerialTransport(pot.resource, baudrate=pot.baudrate, timeout_s=pot.timeout)
        return EmStat4(serial, time_source=time_source, timeout_s=pot.timeout)
    from drivers.keithley2450 import Keithley2450
    from drivers.transports.visa import VisaTransport

    transport = VisaTransport(pot.resource, timeout_s=pot.timeout)
    return Keithley2450(transport, time_source=time_source, nplc=pot.nplc, four_wire=pot.four_wire)


__all__ = ["StationConfig", "connect_station", "load_station_config", "units"]
