"""The TUI's model on its own: statuses, telemetry and events in; series, results, alarms and versions out."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from labctl.tui.model import SERIES, SERIES_POINTS, LabModel, ccd_from_half_cycles, describe_event

T0 = 1_800_000_000_000_000_000
"""The run's start in UTC ns."""
J = 10.0
"""A step density in A/m² per 1 mA/cm² (1 mA/cm² = 10 A/m²)."""


def ns(seconds: float) -> int:
    return T0 + round(seconds * 1e9)


def status(state: str = "running", run: str = "r1", **more: Any) -> dict[str, Any]:
    return {"station": "s1", "agent": "bench1", "state": state, "run": run, "started_ns": T0, **more}


def telemetry(t_s: float, step: int = 1, **values: float) -> dict[str, Any]:
    return {"t_ns": ns(t_s), "step": step, "kind": "dc", "values": values}


def event(what: str, t_s: float, step: int = -1, **data: Any) -> dict[str, Any]:
    return {"t_ns": ns(t_s), "step": step, "kind": what, "data": data}


def ccd_events() -> list[dict[str, Any]]:
    """A CCD run: 0.05 and 0.1 mA/cm² complete, the cell shorts at 0.15 on plating."""
    events = [event("run_started", 0.0), event("step_started", 0.0, 0, kind="rest", density_a_m2=None)]
    events.append(event("step_ended", 3600.0, 0, reason="time 3600 s reached"))
    step, t = 1, 3600.0
    for density in (0.05, 0.1, 0.15):
        for sign in (1, -1):
            context = {"j": density * J}
            events.append(
                event(
                    "step_started", t, step, kind="current", density_a_m2=sign * density * J, context=context
                )
            )
            t += 100.0
            if density == 0.15 and sign == -1:
                events.append(event("soft_short", t - 50, step, type="short_circuit", message="recovered"))
                events.append(
                    event(
                        "detector",
                        t,
                        step,
                        type="short_circuit",
                        message="short circuit: |V/I| collapsed",
                        density_a_m2=-density * J,
                        action="stop",
                    )
                )
                events.append(event("step_ended", t, step, reason="short circuit: |V/I| collapsed"))
            else:
                events.append(event("step_ended", t, step, reason="charge reached"))
            step += 1
        events.append(
            event("cycle", t, step - 1, cycle=step // 2, charge_c=0.2826, discharge_c=0.2826, efficiency=1.0)
        )
    events.append(event("run_ended", t, step - 1, state="done", reason="short circuit: |V/I| collapsed"))
    return events


def test_the_ccd_is_the_highest_level_whose_half_cycles_all_completed_below_the_short():
    halves = [(0.05, True), (0.05, True), (0.1, True), (0.1, False), (0.15, True), (0.15, None)]
    assert ccd_from_half_cycles(halves, None) == 0.05
    assert ccd_from_half_cycles([(0.05, True), (0.1, True), (0.1, True)], 0.1) == 0.05
    assert ccd_from_half_cycles([(0.05, None)], None) is None
    assert ccd_from_half_cycles([], None) is None


def test_a_status_creates_the_station_and_moves_the_version():
    model = LabModel()
    model.apply_status("s2", status("idle", run=None))
    model.apply_status(
        "s1", status(values={"voltage_v": 0.012, "current_a": None}, steps=["rest", "current"])
    )
    view = model.stations["s1"]
    assert [v.name for v in model.sorted_stations()] == ["s1", "s2"]
    assert list(model.stations) == ["s1", "s2"]
    assert view.state == "running" and view.values == {"voltage_v": 0.012}
    assert view.steps == ["rest", "current"]
    assert model.version == 2
    assert model.stations["s2"].steps == [] and model.stations["s2"].state == "idle"


def test_telemetry_fills_the_series_in_run_time_with_the_density_staircase():
    model = LabModel()
    model.apply_status("s1", status())
    model.apply_event("s1", event("step_started", 0.0, 1, kind="current", density_a_m2=0.5))
    before = model.version
    model.apply_telemetry(
        "s1", telemetry(10.0, voltage_v=0.02, current_a=4e-4, pressure_pa=7e6, temperature_k=298.0)
    )
    model.apply_telemetry("s1", telemetry(20.0, voltage_v=float("nan"), current_a=4e-4))
    view = model.stations["s1"]
    assert model.version == before + 2
    assert list(view.series["voltage_v"]) == [(10.0, 0.02)]  # NaN is not a point
    assert list(view.series["current_a"]) == [(10.0, 4e-4), (20.0, 4e-4)]
    assert list(view.series["current_density_a_m2"]) == [(10.0, 0.5), (20.0, 0.5)]
    assert view.values["pressure_pa"] == 7e6 and view.values["current_a"] == 4e-4
    assert set(view.series) == set(SERIES)


def test_series_are_bounded_and_a_window_is_the_latest_seconds():
    model = LabModel()
    model.apply_status("s1", status())
    for i in range(SERIES_POINTS + 500):
        model.apply_telemetry("s1", telemetry(float(i), voltage_v=float(i)))
    view = model.stations["s1"]
    assert len(view.series["voltage_v"]) == SERIES_POINTS
    assert view.series["voltage_v"][0] == (500.0, 500.0)
    times, values = view.window("voltage_v", 10.0)
    assert len(times) == 11  # both ends inclusive
    assert times[-1] == SERIES_POINTS + 499 and times[0] == SERIES_POINTS + 489 and values == times
    assert len(view.window("voltage_v", None)[0]) == SERIES_POINTS
    assert view.window("temperature_k", 10.0) == ([], [])


def test_a_new_run_clears_the_series_and_results_but_not_the_event_log():
    model = LabModel()
    model.apply_status("s1", status(steps=["a"]))
    model.apply_telemetry("s1", telemetry(1.0, voltage_v=0.1))
    for payload in ccd_events():
        model.apply_event("s1", payload)
    model.apply_status("s1", status("starting", run="r2", started_ns=ns(9000)))
    view = model.stations["s1"]
    assert not view.series["voltage_v"] and view.results == {} and view.steps == []
    assert len(view.events) == len(ccd_events())
    model.apply_telemetry("s1", telemetry(9010.0, voltage_v=0.1))
    assert list(view.series["voltage_v"]) == [(10.0, 0.1)]


def test_results_come_from_a_realistic_ccd_event_sequence():
    model = LabModel()
    model.apply_status("s1", status())
    events = ccd_events()
    for payload in events[:12]:  # up to the end of the 0.1 mA/cm² level
        model.apply_event("s1", payload)
    assert model.stations["s1"].results["ccd_mA_cm2"] == 0.1
    for payload in events[12:]:
        model.apply_event("s1", payload)
    view = model.stations["s1"]
    results = view.results
    assert results["ccd_mA_cm2"] == 0.1
    assert results["short_at_mA_cm2"] == 0.15
    assert results["soft_shorts"] == 1
    assert [c["number"] for c in results["cycles"]] == [1, 2, 3]
    assert results["cycles"][0]["discharge_mah"] == pytest.approx(0.0785)
    assert view.step_context == {"j": 1.5}
    assert view.events[-1]["message"] == "run ended done: short circuit: |V/I| collapsed"
    assert view.events[0]["t"] == 0.0 and view.events[-1]["t"] == 4200.0


def test_a_short_raises_an_alarm_until_acknowledged():
    model = LabModel()
    model.apply_status("s1", status())
    for payload in ccd_events():
        model.apply_event("s1", payload)
    view = model.stations["s1"]
    assert view.alarm is not None and view.alarm.startswith("short detected at 0.15 mA/cm²")
    assert view.needs_attention and model.alarms == [view]
    version = model.version
    model.acknowledge("s1")
    assert not view.needs_attention and view.alarm_acknowledged and model.version == version + 1
    model.acknowledge("s1")  # nothing more to acknowledge
    model.acknowledge("nope")
    assert model.version == version + 1
    model.apply_status("s1", status("done", alarm=None))
    assert view.alarm_acknowledged and view.alarm is not None  # still shown, no longer demanding


@pytest.mark.parametrize(
    ("payload", "alarm"),
    [
        (event("limit", 5.0, 1, message="voltage 1.2 V above 1 V"), "voltage 1.2 V above 1 V"),
        (event("alarm", 5.0, 1, message="capacity fade"), "capacity fade"),
        (
            event("instrument", 5.0, 1, message="potentiostat: link lost"),
            "instrument: potentiostat: link lost",
        ),
        (event("run_ended", 5.0, 1, state="failed", reason="rig lost"), "rig lost"),
    ],
)
def test_safety_limits_instrument_trouble_and_failed_runs_are_alarms(payload, alarm):
    model = LabModel()
    model.apply_status("s1", status())
    model.apply_event("s1", payload)
    assert model.stations["s1"].alarm == alarm and model.stations["s1"].needs_attention


def test_the_same_alarm_repeated_in_the_status_does_not_come_back_after_acknowledgement():
    model = LabModel()
    model.apply_status("s1", status())
    model.apply_event("s1", event("limit", 5.0, 1, message="voltage 1.2 V above 1 V"))
    model.acknowledge("s1")
    model.apply_status("s1", status(alarm="voltage 1.2 V above 1 V"))
    assert not model.stations["s1"].needs_attention
    model.apply_status("s1", status("alarm", alarm="voltage 1.2 V above 1 V (station safe)"))
    assert model.stations["s1"].alarm == "voltage 1.2 V above 1 V (station safe)"
    assert model.stations["s1"].needs_attention


def test_a_failed_status_and_an_agent_gone_offline_are_alarms():
    model = LabModel()
    model.apply_status("s1", status("starting"))
    model.apply_status("s1", status("failed", alarm="no potentiostat at USB0"))
    assert model.stations["s1"].alarm == "run failed: no potentiostat at USB0"

    model.apply_status("s2", {**status(), "station": "s2"})
    model.apply_status("s3", {**status("idle", run=None), "station": "s3", "agent": "bench2"})
    model.apply_agent("bench1", {"agent": "bench1", "state": "offline", "stations": ["s1", "s2"]})
    s2 = model.stations["s2"]
    assert s2.state == "offline" and s2.status["last_state"] == "running"
    assert s2.alarm == "agent bench1 offline (station was running)"
    assert model.stations["s3"].state == "idle" and model.stations["s3"].alarm is None
    # a retained status arriving after the will keeps showing the station offline
    model.apply_status("s2", {**status(), "station": "s2"})
    assert s2.state == "offline"
    model.apply_agent("bench1", {"agent": "bench1", "state": "online", "stations": ["s1", "s2"]})
    assert s2.state == "running" and "last_state" not in s2.status  # back before its status comes again
    model.apply_status("s2", {**status(), "station": "s2"})
    assert s2.state == "running"


def test_a_clean_agent_exit_of_an_idle_station_is_no_alarm():
    model = LabModel()
    model.apply_status("s1", status("idle", run=None))
    model.apply_status("s1", status("offline", run=None))
    assert model.stations["s1"].alarm is None
    model.apply_status("s2", {**status("running"), "station": "s2"})
    model.apply_status("s2", {**status("offline"), "station": "s2"})
    assert model.stations["s2"].needs_attention


def test_eis_telemetry_builds_the_last_spectrum():
    model = LabModel()
    model.apply_status("s1", status())
    model.apply_event("s1", event("eis", 10.0, 1, spectrum=1, points=2, mode="potentiostatic"))
    for spectrum, frequency in ((1, 1e5), (1, 1e4), (2, 1e5)):
        values = {"spectrum": spectrum, "frequency_hz": frequency, "z_real_ohm": 10.0, "z_imag_ohm": -1.0}
        model.apply_telemetry("s1", {"t_ns": ns(10), "step": 1, "kind": "eis", "values": values})
    assert model.stations["s1"].results["last_spectrum"] == {"spectrum": 2, "points": [(1e5, 10.0, -1.0)]}
    assert not model.stations["s1"].series["voltage_v"]


def test_connection_state_changes_move_the_version_once():
    model = LabModel()
    model.set_connection(True, "connected to mqtt://127.0.0.1:1883")
    version = model.version
    model.set_connection(True, "connected to mqtt://127.0.0.1:1883")
    assert model.version == version and model.connected


@pytest.mark.parametrize(
    ("kind", "data", "step", "line"),
    [
        (
            "step_started",
            {"description": "current +0.1 mA/cm² · cycle 1"},
            3,
            "step 3: current +0.1 mA/cm² · cycle 1",
        ),
        ("step_ended", {"reason": "time 60 s reached"}, 3, "step 3 ended: time 60 s reached"),
        (
            "cycle",
            {"cycle": 2, "discharge_c": 0.36, "efficiency": 0.99},
            4,
            "cycle 2, discharge 0.1 mAh, CE 99.00 %",
        ),
        ("mark", {"note": "photo 12", "operator": True}, 4, "mark: photo 12"),
        ("paused", {"message": "paused by the operator"}, 4, "paused: paused by the operator"),
        ("note", {}, 4, "note"),
    ],
)
def test_events_read_as_one_line(kind, data, step, line):
    assert describe_event(kind, data, step) == line


def test_the_package_root_exports_the_model_and_connections_without_textual():
    package = importlib.import_module("labctl.tui")
    assert all(hasattr(package, name) for name in package.__all__)
    assert sorted(package.__all__) == list(package.__all__)
    for module in ("labctl.tui.model", "labctl.tui.connection"):
        source = importlib.import_module(module).__loader__.get_source(module)  # type: ignore[union-attr]
        assert "textual" not in source.lower().replace("no textual", "")
