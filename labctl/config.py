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
"""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labctl import units
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


class StationConfig(BaseModel):
    """One bench."""

    model_config = ConfigDict(extra="forbid")
    name: str = "bench"
    potentiostat: PotentiostatConfig


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
async def connect_station(config: StationConfig, time_source: Callable[[], float]) -> AsyncIterator[Station]:
    """Open every instrument of a configured station; closes them (safe state first) on exit."""
    pot = config.potentiostat
    if pot.driver == "emstat4":
        from drivers.emstat import EmStat4
        from drivers.transports.serial import SerialTransport

        serial = SerialTransport(pot.resource, baudrate=pot.baudrate, timeout_s=pot.timeout)
        async with EmStat4(serial, time_source=time_source, timeout_s=pot.timeout) as emstat:
            yield Station(config.name, emstat)
        return
    from drivers.keithley2450 import Keithley2450
    from drivers.transports.visa import VisaTransport

    transport = VisaTransport(pot.resource, timeout_s=pot.timeout)
    async with Keithley2450(
        transport, time_source=time_source, nplc=pot.nplc, four_wire=pot.four_wire
    ) as smu:
        yield Station(config.name, smu)


__all__ = ["StationConfig", "connect_station", "load_station_config", "units"]
