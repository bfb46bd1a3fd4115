"""The Grafana dashboard asks only for what the InfluxDB forwarder writes (docs/influx.md)."""

import json
import re
from pathlib import Path

from labctl.data import Sample
from labctl.data.influx import LineFormatter, RunTags

DASHBOARD = Path(__file__).resolve().parents[3] / "dashboards" / "labctl-influxdb.json"


def _queries(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["query"]] if isinstance(node.get("query"), str) and "from(" in node["query"] else []
        return found + [q for value in node.values() for q in _queries(value)]
    if isinstance(node, list):
        return [q for item in node for q in _queries(item)]
    return []


def test_every_dashboard_query_names_written_measurements_fields_and_tags():
    queries = _queries(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    assert len(queries) >= 6  # four time series, the alarm table, the annotations
    sample = Sample(1_700_000_000_000_000_000, 3, {"voltage_v": 0.01, "current_a": 1e-4,
                                                   "pressure_pa": 5e6, "temperature_k": 298.15})
    line = LineFormatter(RunTags(lab="lab", station="s1", run="r", cell="c", protocol="p")).sample(sample)
    written = set(re.findall(r"(\w+)=", line))
    for query in queries:
        for field in re.findall(r'r\._field == "(\w+)"', query):
            assert field in written | {"data"}, (field, query)
        for measurement in re.findall(r'r\._measurement == "(\w+)"', query):
            assert measurement in {"dc", "eis", "event"}
        for tag in re.findall(r"r\.(\w+) (?:==|=~)", query):
            assert tag in written | {"_measurement", "_field", "kind"}, (tag, query)
