"""A fake lab connection with deterministic data, for pilot and snapshot tests of the TUI.

The fake feeds a real `LabModel` through its public `apply_*` methods with the payloads of docs/mqtt.md
(so the app is tested against the model it will really read), records every command sent and answers
with a scripted reply.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from labctl.data.mqtt import Command, Reply
from labctl.tui.model import LabModel

T0_NS = 1_780_000_000_000_000_000
"""The fake runs' start (UTC ns); all data is relative to it, so screenshots never change."""
AREA_M2 = 0.785e-4
CCD_STEPS = [
    "rest 1 min",
    "current ±0.1 mA/cm² 30 min",
    "current ±0.2 mA/cm² 30 min",
    "current ±0.3 mA/cm² 30 min",
    "current ±0.4 mA/cm² 30 min",
    "current ±0.5 mA/cm² 30 min",
]


class FakeConnection:
    """A `LabConnection` without a broker: a model filled by the test, commands recorded.

    Args:
        model: the model (a new one by default).
        reply: reply for each (station, command); default accepts everything.
    """

    description = "fake lab (tests)"

    def __init__(self, model: LabModel | None = None, reply: Callable[[str, Command], Reply] | None = None):
        self.model = model or LabModel()
        self.sent: list[tuple[str, Command]] = []
        self.reply = reply or accept
        self.entered = False

    async def __aenter__(self) -> FakeConnection:
        self.entered = True
        self.model.set_connection(True, "connected to the fake lab")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.entered = False

    async def send(self, station: str, command: Command) -> Reply:
        self.sent.append((station, command))
        return self.reply(station, command)


def accept(station: str, command: Command) -> Reply:
    """The default reply: ok, "<action>: done"."""
    return Reply(id=command.id, ok=True, message=f"{command.action}: done")


def status(station: str, state: str, **fields: object) -> dict[str, object]:
    """A retained status payload."""
    return {"station": station, "lab": "lab", "agent": "bench1", "state": state, **fields}


def ccd_run(model: LabModel, station: str = "cell-1", *, short: bool = True, minutes: int = 150) -> None:
    """A CCD staircase on `station`: 0.1 mA/cm² more every 30 min, V rising with it; a short at 0.5."""
    run = "20260528-120000-ccd"
    model.apply_status(
        station,
        status(station, "running", protocol="ccd", run=run, step=0, started_ns=T0_NS, steps=CCD_STEPS),
    )
    model.apply_event(station, {"t_ns": T0_NS, "step": 0, "kind": "run_started", "data": {}})
    step = -1
    for second in range(0, minutes * 60, 30):
        new_step = min(second // 1800 + 1, 5)
        t_ns = T0_NS + second * 1_000_000_000
        density = 0.1 * new_step * 10  # A/m²: 1 A/m² = 0.1 mA/cm²
        if new_step != step:
            if step >= 1:
                model.apply_event(station, {"t_ns": t_ns, "step": step, "kind": "step_ended", "data": {}})
            step = new_step
            model.apply_event(
                station,
                {
                    "t_ns": t_ns,
                    "step": step,
                    "kind": "step_started",
                    "data": {
                        "kind": "current",
                        "description": CCD_STEPS[step],
                        "density_a_m2": density,
                        "context": {"level": step, "half": 1},
                    },
                },
            )
        sign = 1 if (second // 900) % 2 == 0 else -1
        values = {
            "voltage_v": sign * (0.004 + 0.006 * step + 0.00001 * (second % 900)),
            "current_a": sign * density * AREA_M2,
            "current_density_a_m2": sign * density,
            "pressure_pa": 5.0e6 + 2.0e4 * step,
            "temperature_k": 298.15 + 0.1 * (second % 600) / 600,
        }
        model.apply_telemetry(station, {"t_ns": t_ns, "step": step, "kind": "dc", "values": values})
    elapsed = (minutes * 60 - 30) * 1.0
    model.apply_status(
        station,
        status(
            station,
            "running",
            protocol="ccd",
            run=run,
            step=step,
            step_description=CCD_STEPS[step],
            started_ns=T0_NS,
            elapsed_s=elapsed,
            steps=CCD_STEPS,
        ),
    )
    model.apply_event(
        station,
        {
            "t_ns": T0_NS + 600 * 1_000_000_000,
            "step": 1,
            "kind": "mark",
            "data": {"note": "glovebox O2 spike"},
        },
    )
    if short:
        t_ns = T0_NS + int(elapsed * 1e9)
        model.apply_event(
            station,
            {
                "t_ns": t_ns,
                "step": step,
                "kind": "detector",
                "data": {
                    "type": "short_circuit",
                    "message": "voltage collapsed to 0.1 mV",
                    "density_a_m2": 5.0,
                },
            },
        )


def lab(stations: int = 4) -> LabModel:
    """A lab of `stations` stations: a CCD that shorted, one idle, one paused, one done, the rest idle."""
    model = LabModel()
    model.set_connection(True, "connected to the fake lab")
    ccd_run(model, "cell-1")
    model.apply_status(
        "cell-2", status("cell-2", "idle", values={"temperature_k": 298.15, "pressure_pa": 0.0})
    )
    if stations > 2:
        model.apply_status(
            "cell-3",
            status(
                "cell-3",
                "paused",
                protocol="symmetric_cycling",
                run="20260528-090000-symmetric_cycling",
                step=12,
                step_description="current -1 mA/cm² 1 h",
                elapsed_s=45_296.0,
                remaining_s=7_200.0,
                values={
                    "voltage_v": -0.0224,
                    "current_a": -7.85e-4,
                    "pressure_pa": 7e6,
                    "temperature_k": 333.15,
                },
                message="paused by alice",
            ),
        )
    if stations > 3:
        model.apply_status(
            "sim-1",
            status(
                "sim-1",
                "done",
                protocol="full_cell_cycling",
                run="20260527-180000-full_cell_cycling",
                step=40,
                step_description="rest 10 min",
                elapsed_s=148_030.0,
                values={"voltage_v": 3.612, "current_a": 0.0, "pressure_pa": 1e7, "temperature_k": 298.15},
            ),
        )
        for number, (charge, discharge) in enumerate([(3.6, 3.42), (3.5, 3.45), (3.48, 3.45)], start=1):
            model.apply_event(
                "sim-1",
                {
                    "t_ns": T0_NS + number * 3_600_000_000_000,
                    "step": number * 4,
                    "kind": "cycle",
                    "data": {
                        "cycle": number,
                        "charge_c": charge,
                        "discharge_c": discharge,
                        "efficiency": discharge / charge,
                        "retention": discharge / 3.42,
                    },
                },
            )
    for index in range(5, stations + 1):
        name = f"sim-{index - 3}"
        model.apply_status(name, status(name, "idle"))
    return model


def protocols(root: Path) -> Path:
    """A protocol folder with one valid file and one that does not compile; returns the folder."""
    folder = root / "protocols"
    folder.mkdir()
    source = Path(__file__).resolve().parents[3] / "protocols" / "ccd.yaml"
    (folder / "ccd.yaml").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "broken.yaml").write_text("name: broken\nsteps:\n  - kind: nonsense\n", encoding="utf-8")
    return folder
