"""Line protocol for samples and events: escaping, nanosecond timestamps, SI names, floats only."""

from __future__ import annotations

import pytest
from influxdb_client import Point

from labctl.data import Event, EventKind, Sample
from labctl.data.influx import InfluxSettings, LineFormatter, RunTags
from labctl.errors import ConfigError

TAGS = RunTags(lab="lab 1", station="bench,1", run="2026-ccd=a", cell="symmetric Li6PS5Cl", protocol="ccd")
T_NS = 1_795_000_000_123_456_789


def _point(measurement: str, tags: dict[str, str], fields: dict[str, object], t_ns: int) -> str:
    point = Point(measurement).time(t_ns)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    return point.to_line_protocol()


def test_sample_line_matches_influxdb_clients_point_with_escaped_tags():
    line = LineFormatter(TAGS).sample(Sample(T_NS, 3, {"voltage_v": 0.0125, "current_a": -1e-05}))
    expected = _point("dc", {**vars(TAGS), "step": "3"}, {"voltage_v": 0.0125, "current_a": -1e-05}, T_NS)
    assert line == expected
    assert line == (
        r"dc,cell=symmetric\ Li6PS5Cl,lab=lab\ 1,protocol=ccd,run=2026-ccd\=a,station=bench\,1,step=3 "
        f"current_a=-1e-05,voltage_v=0.0125 {T_NS}"
    )


def test_timestamps_are_exact_nanoseconds():
    line = LineFormatter(TAGS).sample(Sample(T_NS, 0, {"voltage_v": 1.0}))
    assert line is not None and line.endswith(" 1795000000123456789")


def test_integers_are_written_as_floats_so_a_field_never_changes_type():
    line = LineFormatter(TAGS).sample(Sample(T_NS, 0, {"spectrum": 2, "frequency_hz": 1000.0}, kind="eis"))
    assert line is not None and line.startswith("eis,")
    assert " frequency_hz=1000,spectrum=2 " in line  # "2", not "2i": the same type as 2.5


def test_non_finite_values_are_left_out_and_an_empty_sample_is_no_line():
    formatter = LineFormatter(TAGS)
    line = formatter.sample(Sample(T_NS, 0, {"voltage_v": 1.5, "resistance_ohm": float("nan")}))
    assert line is not None and "resistance_ohm" not in line and "voltage_v=1.5" in line
    assert formatter.sample(Sample(T_NS, 0, {"resistance_ohm": float("inf")})) is None


def test_non_numbers_are_skipped_and_reported():
    formatter = LineFormatter(TAGS)
    line = formatter.sample(Sample(T_NS, 0, {"voltage_v": 1.0, "label": "x"}))  # type: ignore[dict-item]
    assert line is not None and "label" not in line
    assert formatter.skipped_fields == {"label"}


def test_field_keys_and_measurement_are_escaped():
    line = LineFormatter(TAGS).sample(Sample(T_NS, 0, {"odd name,=x_v": 1.0}, kind="my kind"))
    assert line == _point("my kind", {**vars(TAGS), "step": "0"}, {"odd name,=x_v": 1.0}, T_NS)
    assert line is not None and line.startswith(r"my\ kind,") and r"odd\ name\,\=x_v=1 " in line


def test_event_line_carries_kind_seq_data_and_numeric_details():
    data = {"message": 'said "hi"\\ and left\nnow', "current_a": 2e-3, "count": 3, "seq": 99, "ok": True}
    line = LineFormatter(TAGS).event(Event(T_NS, 4, EventKind.LIMIT, data), seq=17)
    assert line.startswith(r"event,cell=symmetric\ Li6PS5Cl,kind=limit,lab=lab\ 1,")
    assert ",step=4 " in line and line.endswith(f" {T_NS}")
    fields = line.split(",step=4 ", 1)[1].rsplit(" ", 1)[0]
    # Numeric details as floats (bool as 1); the reserved names seq and data stay ours.
    assert fields.startswith("count=3,current_a=0.002,data=")
    assert fields.endswith(",ok=1,seq=17i")
    # The data field is JSON (newlines escaped by JSON), its quotes and backslashes escaped for Influx.
    message = r'\"message\":\"said \\\"hi\\\"\\\\ and left\\nnow\"'
    assert r'data="{\"count\":3,\"current_a\":0.002,' + message in fields
    assert "\n" not in line


def test_a_trailing_backslash_in_a_tag_value_does_not_escape_the_separator():
    tags = RunTags(lab="lab\\", station="s", run="r", cell="c", protocol="p")
    line = LineFormatter(tags).sample(Sample(T_NS, 0, {"voltage_v": 1.0}))
    assert line == _point("dc", {**vars(tags), "step": "0"}, {"voltage_v": 1.0}, T_NS)


def test_empty_tag_values_are_left_out():
    tags = RunTags(lab="", station="s", run="r", cell="c", protocol="p")
    line = LineFormatter(tags).sample(Sample(T_NS, 0, {"voltage_v": 1.0}))
    assert line is not None and "lab=" not in line


def test_run_tags_from_the_journal_meta():
    cell = {"kind": "symmetric", "material": "LPSCl"}
    meta = {"protocol": "ccd", "station": {"name": "bench-2"}, "cell": cell}
    assert RunTags.from_meta(meta, "run-7", "batterylab") == RunTags(
        lab="batterylab", station="bench-2", run="run-7", cell="symmetric LPSCl", protocol="ccd"
    )
    cell = {"kind": "full", "cathode": "NMC811", "material": "LPSCl", "anode": "Li"}
    full = {"station": "simulated", "cell": cell}
    tags = RunTags.from_meta(full, "r", "l")
    assert (tags.station, tags.cell, tags.protocol) == ("simulated", "NMC811|LPSCl|Li", "unknown")
    assert RunTags.from_meta({"cell": {"id": "C-042", "kind": "full"}}, "r", "l").cell == "C-042"


def test_settings_from_environment_and_options():
    env = {"LABCTL_INFLUX_URL": "http://u:pw@influx:8086", "LABCTL_INFLUX_ORG": "o",
           "LABCTL_INFLUX_BUCKET": "b", "LABCTL_INFLUX_TOKEN": "tok-123"}
    settings = InfluxSettings.from_env(env, bucket="other", lab=None)
    assert (settings.org, settings.bucket, settings.lab) == ("o", "other", "lab")
    assert settings.url == "http://u:pw@influx:8086"
    assert settings.token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(settings) and "tok-123" not in str(settings)
    assert settings.public_url == "http://influx:8086"
    assert "pw" not in settings.sink


def test_missing_settings_name_the_variable_to_set():
    with pytest.raises(ConfigError, match=r"url.*LABCTL_INFLUX_URL"):
        InfluxSettings.from_env({"LABCTL_INFLUX_ORG": "o", "LABCTL_INFLUX_BUCKET": "b"})
