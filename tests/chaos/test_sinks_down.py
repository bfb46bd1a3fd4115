"""Sinks down (issue 7, item 3): the time-series server down for 10 simulated minutes and the broker
restarted during a run lose no sample — the journal is the truth and the forwarder catches up.

The run is paced (PacedClock, 60 simulated seconds per second) so that "10 simulated minutes" is a
window the test can open and close while the run goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from labctl.clock import PacedClock
from labctl.data import Bus
from labctl.data.influx import InfluxForwarder, InfluxSettings
from labctl.data.mqtt import MqttLink, MqttSettings
from labctl.protocol import compile_text
from labctl.session import run_protocol

SPEED = 60.0
START_NS = time.time_ns() - 3 * 86_400 * 10**9  # the recent past: inside VictoriaMetrics' retention
PROTOCOL = """\
labctl: 1
name: sinks-down
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
conditions: {pressure: 7 MPa, temperature: 25 degC}
safety: {voltage: {min: -1 V, max: 1 V}}
record: {sample: 1 s, every: 5 s, dv: 1 mV, poll: 10 s}
steps:
  - rest: {until: {time: 2 min}}
  - repeat:
      times: 4
      steps:
        - current: {density: 0.5 mA/cm^2, until: {time: 3 min}}
        - current: {density: -0.5 mA/cm^2, until: {time: 3 min}}
"""


async def _sim_minutes(clock: PacedClock, minutes: float) -> None:
    """Until the run's simulated clock reads `minutes`."""
    await asyncio.sleep(max(0.0, minutes * 60.0 - clock.monotonic()) / clock.speed)


async def test_a_time_series_outage_and_a_broker_restart_lose_no_sample(
    victoria_metrics, mosquitto_broker, tmp_path: Path, chaos_figures
):
    plan, text = compile_text(PROTOCOL), PROTOCOL
    clock = PacedClock(SPEED, start_ns=START_NS)
    bus = Bus()
    started: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
    mqtt = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port, lab="chaos")
    async with MqttLink(mqtt, client_id="chaos-agent", stations=["s1"]) as link:
        bus.subscribe(link.publisher("s1"))
        run = asyncio.create_task(
            run_protocol(
                plan,
                text,
                simulate=True,
                station_config=None,
                seed=3,
                out=tmp_path / "run",
                bus=bus,
                clock=clock,
                on_start=started.set_result,
            )
        )
        run_dir = await started
        settings = InfluxSettings(
            url=victoria_metrics.url,
            org="lab",
            bucket="runs",
            backoff_initial_s=0.05,
            backoff_max_s=0.5,
            poll_interval_s=0.05,
            timeout_s=2.0,
        )
        stop = asyncio.Event()
        async with InfluxForwarder(run_dir / "journal.sqlite", settings) as forwarder:
            follower = asyncio.create_task(forwarder.run(stop))
            await _sim_minutes(clock, 5)
            await asyncio.to_thread(victoria_metrics.stop)  # down for 10 simulated minutes
            await _sim_minutes(clock, 15)
            failed = forwarder.failed_attempts
            await asyncio.to_thread(victoria_metrics.start)
            await asyncio.to_thread(mosquitto_broker.stop)  # and the broker restarts
            await asyncio.sleep(1.0)
            await asyncio.to_thread(mosquitto_broker.start)
            report = await run
            stop.set()
            await follower
            await asyncio.wait_for(forwarder.forward_until_caught_up(), 30)
        await asyncio.wait_for(link.wait_connected(), 30)  # the link came back by itself
    assert failed >= 1, "the forwarder should have met the outage"
    assert report.outcome.state.value == "done"
    journaled = _count_dc(run_dir / "journal.sqlite")
    in_server = victoria_metrics.counts()["dc_voltage_v"]
    chaos_figures(
        "sinks down",
        samples_journaled=journaled,
        samples_in_server=in_server,
        samples_lost=journaled - in_server,
        outage_simulated_min=10,
        broker_restarts=1,
    )
    assert journaled == in_server > 100


def _count_dc(journal: Path) -> int:
    import sqlite3

    with sqlite3.connect(journal) as db:
        return Counter(kind for (kind,) in db.execute("SELECT kind FROM samples"))["dc"]
