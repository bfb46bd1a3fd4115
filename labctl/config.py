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

and, optionally, a stack-pressure rig and a heater. A screw rig (the loop runs in labctl)::

    [rig]
    type = "screw"                  # the default
    gauge = "/dev/serial/by-id/usb-Mark-10_gauge-if00"
    actuator = "/dev/serial/by-id/usb-Zaber_X-LSM-if00"
    max_force = "1500 N"

or a pneumatic cylinder under an Alicat pressure controller (the loop runs in the device)::

    [rig]
    type = "pneumatic"
    controller = "/dev/serial/by-id/usb-FTDI_Alicat-if00-port0"   # or socket://host:port
    piston_area = "50 cm^2"
    gauge = "/dev/serial/by-id/usb-Mark-10_gauge-if00"            # optional: measures the stack force
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

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from labctl import units
from labctl.clock import Clock
from labctl.engine.pressure import StackPressureLoop
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


class ScrewRigConfig(BaseModel):
    """A screw stack-pressure rig: a Mark-10 gauge and a Zaber actuator, the loop in labctl."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["screw"] = "screw"
    gauge: str = Field(description="the Mark-10 gauge's serial port or socket://host:port")
    actuator: str = Field(description="the Zaber actuator's serial port or socket://host:port")
    max_force: Annotated[float, _quantity("force")] = 2500.0


class PneumaticRigConfig(BaseModel):
    """A pneumatic cylinder under an Alicat pressure controller, the loop in the device."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["pneumatic"]
    controller: str = Field(description="the Alicat controller's serial port or socket://host:port")
    piston_area: Annotated[float, _quantity("area"), Field(gt=0)] = Field(
        description="the cylinder's piston area, e.g. '50 cm^2'; force = gas pressure × piston area"
    )
    gauge: str | None = Field(
        default=None, description="optional Mark-10 gauge under the stack (serial port or socket://host:port)"
    )
    max_force: Annotated[float, _quantity("force")] = 2500.0
    unit_id: str = Field(default="A", pattern="^[A-Z]$", description="the controller's unit id, A..Z")
    pressure_unit: Literal["psi", "bar", "kpa"] = Field(
        default="psi", description="the controller's engineering unit, as set on its front panel"
    )
    baudrate: int = 19200


def _rig_type(value: Any) -> str | None:
    """`type` selects the rig; without it, a screw rig (the keys stations had before)."""
    kind = value.get("type", "screw") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("screw", "pneumatic") else None


RigConfig = Annotated[
    Annotated[ScrewRigConfig, Tag("screw")] | Annotated[PneumaticRigConfig, Tag("pneumatic")],
    Discriminator(
        _rig_type,
        custom_error_type="rig_type",
        custom_error_message='type must be "screw" (gauge + actuator) or "pneumatic" (controller + '
        'piston_area), e.g. type = "pneumatic"',
    ),
]
"""A stack-pressure rig, `[rig]` in a station file: `type = "screw"` (default) or `"pneumatic"`."""


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
        loc = list(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if loc[:1] == ["rig"] and loc[1:2] in (["screw"], ["pneumatic"]):
            loc, message = _rig_hint(str(loc.pop(1)), data.get("rig"), first["type"], loc, message)
        where = ".".join(str(p) for p in loc)
        raise ConfigError(f"{path}: {where}: {message}") from None


def _rig_hint(kind: str, rig: Any, error: str, loc: list[Any], message: str) -> tuple[list[Any], str]:
    """Say what to write in [rig]: the `type` line, the missing key, or the keys this rig type takes."""
    model = PneumaticRigConfig if kind == "pneumatic" else ScrewRigConfig
    untyped = isinstance(rig, dict) and "type" not in rig
    if kind == "screw" and untyped and {"controller", "piston_area"} & set(rig):
        return ["rig", "type"], 'missing: a pneumatic rig needs type = "pneumatic" (the default is "screw")'
    key = str(loc[-1])
    if error == "missing" and key in model.model_fields:
        return loc, f"missing: a {kind} rig needs {key} = … ({model.model_fields[key].description})"
    if error == "extra_forbidden":
        keys = ", ".join(name for name in model.model_fields if name != "type")
        return loc, f"not a key of a {kind} rig (it takes {keys})"
    return loc, message


@asynccontextmanager
async def connect_station(config: StationConfig, clock: Clock, area_m2: float) -> AsyncIterator[Station]:
    """Open every instrument of a configured station; each is left safe and closed on exit.

    The rig is not homed or moved here: with a cell in the fixture, only the protocol's `set`
    steps move the screw (a Zaber that was never homed refuses moves and says so) or send a gas
    set-point (an Alicat is left as it was found, then held on exit).
    """
    async with contextlib.AsyncExitStack() as stack:
        potentiostat = await stack.enter_async_context(_potentiostat(config.potentiostat, clock.monotonic))
        station = Station(config.name, potentiostat)
        if config.rig is not None:
            station.pressure = await _rig(config.rig, stack, clock, area_m2)
        if config.heater is not None:
            from drivers.eurotherm import Eurotherm3200

            station.thermostat = await stack.enter_async_context(
                Eurotherm3200(config.heater.resource, device_id=config.heater.device_id)
            )
        yield station


async def _rig(
    rig: ScrewRigConfig | PneumaticRigConfig, stack: contextlib.AsyncExitStack, clock: Clock, area_m2: float
) -> StackPressureLoop:
    """Open the rig's instruments on `stack` and build its loop (nothing moves here)."""
    from drivers.mark10 import Mark10Gauge

    if isinstance(rig, PneumaticRigConfig):
        from drivers.alicat import AlicatPressureController
        from drivers.transports.serial import SerialTransport
        from labctl.engine.pneumatic import PneumaticLoopSettings, PneumaticPressureLoop

        transport = SerialTransport(rig.controller, baudrate=rig.baudrate, eol=b"\r", timeout_s=1.0)
        controller = await stack.enter_async_context(
            AlicatPressureController(
                transport, unit=rig.unit_id, piston_area_m2=rig.piston_area, pressure_unit=rig.pressure_unit
            )
        )
        gauge = None
        if rig.gauge is not None:
            gauge = await stack.enter_async_context(Mark10Gauge(Mark10Gauge.transport_for(rig.gauge)))
        limits = PneumaticLoopSettings(max_force_n=rig.max_force)
        return PneumaticPressureLoop(controller, rig.piston_area, area_m2, clock, limits, gauge=gauge)
    from drivers.zaber import ZaberActuator
    from labctl.engine.pressure import PressureLoopSettings, StackPressureController

    gauge = await stack.enter_async_context(Mark10Gauge(Mark10Gauge.transport_for(rig.gauge)))
    actuator = await stack.enter_async_context(ZaberActuator(ZaberActuator.transport_for(rig.actuator)))
    settings = PressureLoopSettings(max_force_n=rig.max_force)
    return StackPressureController(gauge, actuator, area_m2, clock, settings)


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


__all__ = [
    "PneumaticRigConfig",
    "RigConfig",
    "ScrewRigConfig",
    "StationConfig",
    "connect_station",
    "load_station_config",
    "units",
]
