"""Store-and-forward of a run's journal to InfluxDB (2.x/3.x, or any server with its v2 write API).

The journal is the truth (DESIGN.md §2); this forwarder is a reader of it with its own durable
cursor, so the run never waits for the network and a server that is down, slow or answering errors
costs nothing but delay: the forwarder retries with capped exponential back-off and catches up in
journal order when the server is back, also after labctl itself was restarted.

Delivery is at least once, and exactly once in the usual case: a batch's cursor is committed only
after the server acknowledged it, so the only duplicate possible is a batch that the server stored
but whose acknowledgement was lost (a timeout, or labctl killed between the answer and the cursor
commit). InfluxDB overwrites such a point with itself (same measurement, tags and timestamp); for
VictoriaMetrics see docs/influx.md.

Schema (docs/influx.md has the full description):

- measurement = the record kind: "dc" and "eis" for samples, "event" for events;
- tags: lab, station, run, cell, protocol, step (+ kind for events);
- fields: the sample's SI values under their unit-carrying names, always floats (a field that is
  sometimes an integer would be a type conflict in InfluxDB); events carry `seq` (the journal's
  sequence number, integer), `data` (the details as JSON) and each numeric detail as a float;
- timestamps: UTC nanoseconds from the journal.

Errors: a bad configuration raises `labctl.errors.ConfigError`; everything the server or the
network does is logged (never silent) and retried, never raised to the run.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
import os
import random
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from labctl.data.records import Event, EventKind, Sample
from labctl.data.rundir import JOURNAL
from labctl.errors import ConfigError, RunDirError

log = logging.getLogger(__name__)

CURSOR_FILE = "forward.sqlite"
"""The forwarders' cursors, beside the journal: the journal itself stays written by the run alone."""

ENV_PREFIX = "LABCTL_INFLUX_"


class InfluxSettings(BaseModel):
    """Where and how to forward. From a config file, or `from_env()` (LABCTL_INFLUX_URL/ORG/BUCKET/TOKEN).

    For VictoriaMetrics, org and bucket may be any names and the token may be empty.
    """

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="base URL, e.g. http://influx.lab:8086 (the client adds /api/v2/write)")
    org: str = Field(min_length=1, description="InfluxDB organization (name or ID)")
    bucket: str = Field(min_length=1, description="InfluxDB bucket the run's points go to")
    token: SecretStr = SecretStr("")
    """API token with write access to the bucket; never logged, never in an error message."""
    lab: str = Field(default="lab", description="value of the `lab` tag on every point")
    batch_lines: int = Field(default=5000, ge=1, le=100_000)
    """Most records read from the journal and written per request (the memory bound)."""
    timeout_s: float = Field(default=10.0, gt=0)
    """A write not answered within this time counts as failed and is retried."""
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    """How often `run()` looks for new journal rows once caught up."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> InfluxSettings:
        """Settings from LABCTL_INFLUX_URL, _ORG, _BUCKET, _TOKEN (and _LAB); overrides not None win."""
        environ = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        for key in ("url", "org", "bucket", "token", "lab"):
            value = environ.get(ENV_PREFIX + key.upper())
            if value:
                data[key] = value
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "?"
            hint = f" (set {ENV_PREFIX}{name.upper()} or pass --{name})" if first["type"] == "missing" else ""
            raise ConfigError(f"InfluxDB settings: {name}: {first['msg']}{hint}") from None

    @property
    def public_url(self) -> str:
        """The URL without any user:password part, for logs and messages."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=host))

    @property
    def sink(self) -> str:
        """The destination as the cursor is keyed by (a token change keeps the cursor)."""
        return f"influx {self.public_url} org={self.org} bucket={self.bucket}"


# --- line protocol -------------------------------------------------------------------------------
# Our own formatter rather than influxdb_client.Point: the run's tags are escaped once per step
# instead of once per point, and values are always written as floats (Point writes a JSON integer
# as `5i`, a type conflict with the same field's floats). The escaping tables are Point's, and
# tests/unit/data/test_influx_lines.py checks our lines against Point's for the same data.

_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})
_RESERVED_EVENT_FIELDS = frozenset({"seq", "data"})


def _tag_value(value: str) -> str:
    escaped = value.translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped  # a trailing \ would escape the separator


def _float(value: Any) -> str | None:
    """A value as a line-protocol float, or None if it is not a finite number (NaN has no encoding)."""
    if not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    text = repr(number)
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class RunTags:
    """The tags every point of one run carries (besides `step`, and `kind` on events)."""

    lab: str
    station: str
    run: str
    cell: str
    protocol: str

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], run: str, lab: str) -> RunTags:
        """Tags from a journal's meta table (written by session.open_run) and the run directory's name."""
        station = meta.get("station")
        if isinstance(station, Mapping):
            station = station.get("name")
        return cls(
            lab=lab,
            station=str(station or "unknown"),
            run=run,
            cell=_cell_tag(meta.get("cell")),
            protocol=str(meta.get("protocol") or "unknown"),
        )


def _cell_tag(cell: Any) -> str:
    """A cell's identity when it has one, else what it is: "symmetric Li6PS5Cl", "NMC811|Li6PS5Cl|Li"."""
    if not isinstance(cell, Mapping):
        return str(cell or "unknown")
    for key in ("id", "name"):
        if cell.get(key):
            return str(cell[key])
    if cell.get("kind") == "full":
        return f"{cell.get('cathode')}|{cell.get('material')}|{cell.get('anode')}"
    return f"{cell.get('kind', 'cell')} {cell.get('material', '')}".strip()


class LineFormatter:
    """Turns one run's samples and events into InfluxDB line protocol (nanosecond timestamps)."""

    def __init__(self, tags: RunTags) -> None:
        self._tags = {k: v for k, v in vars(tags).items() if v}  # an empty tag value is not allowed
        self._prefixes: dict[tuple[str, str | None, int], str] = {}
        self.skipped_fields: set[str] = set()
        """Names of sample values that were not numbers (kept in the journal, not forwarded)."""

    def _prefix(self, measurement: str, kind: str | None, step: int) -> str:
        key = (measurement, kind, step)
        prefix = self._prefixes.get(key)
        if prefix is None:
            tags = dict(self._tags, step=str(step))
            if kind is not None:
                tags["kind"] = kind
            parts = [measurement.translate(_ESCAPE_MEASUREMENT)]
            parts += [f"{k.translate(_ESCAPE_KEY)}={_tag_value(v)}" for k, v in sorted(tags.items())]
            prefix = self._prefixes[key] = ",".join(parts) + " "
        return prefix

    def sample(self, sample: Sample) -> str | None:
        """One sample as a line in measurement `sample.kind`; None if it has no finite value."""
        fields = []
        for name, value in sorted(sample.values.items()):
            text = _float(value)
            if text is not None:
                fields.append(f"{name.translate(_ESCAPE_KEY)}={text}")
            elif not isinstance(value, int | float):
                self.skipped_fields.add(name)
        if not fields:
            return None
        return f"{self._prefix(sample.kind, None, sample.step)}{','.join(fields)} {int(sample.t_ns)}"

    def event(self, event: Event, seq: int) -> str:
        """One event as a line in measurement "event": seq, data (JSON) and its numeric details."""
        data = json.dumps(event.data, separators=(",", ":"), sort_keys=True, default=str)
        fields = {"data": f'"{data.translate(_ESCAPE_STRING)}"', "seq": f"{int(seq)}i"}
        for name, value in event.data.items():
            text = _float(value) if name not in _RESERVED_EVENT_FIELDS else None
            if text is not None:
                fields[str(name)] = text
        body = ",".join(f"{k.translate(_ESCAPE_KEY)}={v}" for k, v in sorted(fields.items()))
        return f"{self._prefix('event', str(event.kind), event.step)}{body} {int(event.t_ns)}"


# --- the cursor ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """The last journal rows a sink acknowledged: samples.seq and events.seq (0: nothing yet)."""

    samples_seq: int = 0
    events_seq: int = 0


class _CursorStore:
    """Cursors per sink in a small SQLite file beside the journal, committed with a full fsync."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, samples_seq INTEGER NOT NULL, "
            "events_seq INTEGER NOT NULL, lines INTEGER NOT NULL, updated_ns INTEGER NOT NULL)"
        )

    def load(self, sink: str) -> tuple[Cursor, int]:
        row = self._db.execute(
            "SELECT samples_seq, events_seq, lines FROM cursors WHERE sink = ?", (sink,)
        ).fetchone()
        return (Cursor(row[0], row[1]), row[2]) if row else (Cursor(), 0)

    def save(self, sink: str, cursor: Cursor, lines: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?, ?)",
            (sink, cursor.samples_seq, cursor.events_seq, lines, time.time_ns()),
        )

    def close(self) -> None:
        self._db.close()


# --- the forwarder -------------------------------------------------------------------------------


@dataclass
class _Batch:
    lines: list[str]
    body: bytes
    cursor: Cursor
    records: int


class InfluxForwarder:
    """Forwards one run's journal to InfluxDB from a durable cursor; start it as a task beside the run.

    Memory is bounded by the batch, not the run: at most `2 × batch_lines` journal rows are read at a
    time (`batch_lines` from each table, merged by time; the rest are read again next batch) and one
    request body of at most `batch_lines` lines (≈ 1.5 MB at the default 5000) is held until the
    server acknowledges it. The journal and cursor are read and written in a worker thread (sqlite3
    blocks), and the lines are formatted there too, so the run's event loop only sends bytes.

    Use::

        async with InfluxForwarder(run_dir / "journal.sqlite", InfluxSettings.from_env()) as forwarder:
            await forwarder.run(stop)             # until stop is set; or
            await forwarder.forward_until_caught_up()

    Args:
        journal: the run's journal (it must exist; the forwarder never creates or writes it).
        settings: server, credentials, batch size and back-off.
        tags: the run's tags; by default from the journal's meta table and the directory's name.
        cursor_path: where cursors are kept (default: forward.sqlite beside the journal).
    """

    def __init__(
        self,
        journal: Path,
        settings: InfluxSettings,
        *,
        tags: RunTags | None = None,
        cursor_path: Path | None = None,
    ) -> None:
        self.journal_path = Path(journal)
        self.settings = settings
        self._tags = tags
        self._cursor_path = cursor_path or self.journal_path.with_name(CURSOR_FILE)
        self._db: sqlite3.Connection | None = None
        self._cursors: _CursorStore | None = None
        self._formatter: LineFormatter | None = None
        self._client: Any = None
        self._write_api: Any = None
        self.cursor = Cursor()
        """The last acknowledged journal rows (durable)."""
        self.forwarded_lines = 0
        """Lines acknowledged by the server for this run, over all forwarder instances."""
        self.failed_attempts = 0
        """Consecutive failed writes of the batch in hand (0 when the server is keeping up)."""
        self.last_error: str | None = None
        """Why the last write failed (the token is never in it)."""

    async def __aenter__(self) -> InfluxForwarder:
        if not self.journal_path.is_file():
            raise RunDirError(f"{self.journal_path}: no journal here; give a run directory of labctl run")
        await asyncio.to_thread(self._open_blocking)
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        token = self.settings.token.get_secret_value() or None
        self._client = InfluxDBClientAsync(
            url=self.settings.url,
            token=token,
            org=self.settings.org,
            timeout=int(self.settings.timeout_s * 1000),
        )
        self._write_api = self._client.write_api()
        return self

    def _open_blocking(self) -> None:
        # mode=rw: a wrong path must fail, not create an empty journal.
        self._db = sqlite3.connect(
            f"file:{self.journal_path}?mode=rw", uri=True, check_same_thread=False, isolation_level=None
        )
        self._cursors = _CursorStore(self._cursor_path)
        self.cursor, self.forwarded_lines = self._cursors.load(self.settings.sink)
        if self._tags is None:
            meta = {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
            self._tags = RunTags.from_meta(meta, self.journal_path.parent.name, self.settings.lab)
        self._formatter = LineFormatter(self._tags)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = self._write_api = None
        for resource in (self._db, self._cursors):
            if resource is not None:
                resource.close()
        self._db = self._cursors = None

    async def forward_until_caught_up(self) -> int:
        """Forward batches until the journal has nothing newer; retry failures forever (wrap in a timeout).

        Returns:
            the number of lines this call forwarded.
        """
        before = self.forwarded_lines
        while not await self._forward_batch(None):
            pass
        return self.forwarded_lines - before

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the journal until `stop` is set, polling every `poll_interval_s` once caught up.

        On stop it returns at once if waiting, or after the write in flight; what is left stays in the
        journal for the next forwarder (`forward_until_caught_up()` under a timeout drains it now).
        """
        while not stop.is_set():
            if await self._forward_batch(stop):
                await _wait(stop, self.settings.poll_interval_s)

    async def _forward_batch(self, stop: asyncio.Event | None) -> bool:
        """Read, write (retrying) and commit one batch; True if the journal had no more rows."""
        self._require_open()
        batch = await asyncio.to_thread(self._read_batch_blocking, self.cursor)
        if batch.records == 0:
            return True
        if batch.lines and not await self._write_with_retries(batch, stop):
            return True  # stopped while the server was failing: the cursor stays, nothing lost
        await asyncio.to_thread(self._commit_blocking, batch)
        return batch.records < self.settings.batch_lines

    def _require_open(self) -> None:
        if self._write_api is None:
            raise RuntimeError("InfluxForwarder is not open: use `async with InfluxForwarder(...)`")

    def _read_batch_blocking(self, cursor: Cursor) -> _Batch:
        assert self._db is not None and self._formatter is not None
        limit = self.settings.batch_lines
        samples = self._db.execute(
            'SELECT seq, t_ns, step, "values", kind FROM samples WHERE seq > ? ORDER BY seq LIMIT ?',
            (cursor.samples_seq, limit),
        ).fetchall()
        events = self._db.execute(
            "SELECT seq, t_ns, step, kind, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (cursor.events_seq, limit),
        ).fetchall()
        # Merged by time, each table in seq order: the batch is a prefix of both tables.
        merged = heapq.merge(
            ((row[1], 0, row) for row in samples), ((row[1], 1, row) for row in events), key=lambda r: r[:2]
        )
        lines: list[str] = []
        samples_seq, events_seq, records = cursor.samples_seq, cursor.events_seq, 0
        for _, table, row in merged:
            if records == limit:
                break
            records += 1
            line: str | None
            if table == 0:
                samples_seq, t_ns, step, values, kind = row
                line = self._formatter.sample(Sample(t_ns, step, json.loads(values), kind))
            else:
                events_seq, t_ns, step, kind, data = row
                event_kind = EventKind(kind) if kind in EventKind._value2member_map_ else kind
                line = self._formatter.event(Event(t_ns, step, event_kind, json.loads(data)), events_seq)
            if line is not None:
                lines.append(line)
        return _Batch(lines, "\n".join(lines).encode(), Cursor(samples_seq, events_seq), records)

    def _commit_blocking(self, batch: _Batch) -> None:
        assert self._cursors is not None
        self._cursors.save(self.settings.sink, batch.cursor, self.forwarded_lines + len(batch.lines))
        self.cursor = batch.cursor
        self.forwarded_lines += len(batch.lines)
        if self._formatter is not None and self._formatter.skipped_fields:
            log.warning(
                "not forwarded to InfluxDB (not numbers; kept in the journal): %s",
                ", ".join(sorted(self._formatter.skipped_fields)),
            )
            self._formatter.skipped_fields.clear()

    async def _write_with_retries(self, batch: _Batch, stop: asyncio.Event | None) -> bool:
        """Write until acknowledged (True), or until `stop` is set while waiting to retry (False)."""
        while True:
            try:
                await self._write(batch.body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed_attempts += 1
                self.last_error = self._describe(exc)
                backoff = self.settings.backoff_initial_s * 2 ** min(self.failed_attempts - 1, 30)
                # Jitter: benches that lost the server together do not retry in step.
                delay = min(self.settings.backoff_max_s, backoff) * random.uniform(0.8, 1.0)
                log.warning(
                    "InfluxDB write to %s (bucket %s) failed, attempt %d: %s; %d lines wait in the journal, "
                    "retrying in %.1f s",
                    self.settings.public_url,
                    self.settings.bucket,
                    self.failed_attempts,
                    self.last_error,
                    len(batch.lines),
                    delay,
                )
                if stop is None:
                    await asyncio.sleep(delay)
                elif await _wait(stop, delay):
                    return False
                continue
            if self.failed_attempts:
                log.warning(
                    "InfluxDB write to %s succeeded after %d failed attempts; catching up",
                    self.settings.public_url,
                    self.failed_attempts,
                )
            self.failed_attempts = 0
            self.last_error = None
            return True

    async def _write(self, body: bytes) -> None:
        from influxdb_client import WritePrecision

        # The client's own timeout covers the HTTP exchange; this one also covers connecting.
        async with asyncio.timeout(self.settings.timeout_s + 1.0):
            await self._write_api.write(
                bucket=self.settings.bucket,
                org=self.settings.org,
                record=body,
                write_precision=WritePrecision.NS,
            )

    def _describe(self, exc: BaseException) -> str:
        """One line saying why a write failed, with the token scrubbed from anything the server said."""
        status = getattr(exc, "status", None)
        if isinstance(exc, TimeoutError):
            text = f"no answer within {self.settings.timeout_s:g} s"
        elif status is not None and hasattr(exc, "body"):
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            text = f"HTTP {status} {getattr(exc, 'reason', '') or ''}".rstrip() + (
                f": {' '.join(body.split())[:300]}" if body else ""
            )
        else:
            text = f"{type(exc).__name__}: {exc}"
        token = self.settings.token.get_secret_value()
        return text.replace(token, "***") if token else text


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def forward_run_dir(run_dir: Path, settings: InfluxSettings) -> int:
    """Forward what a run directory's journal holds beyond its cursor; the number of lines sent."""
    journal = Path(run_dir) / JOURNAL
    if not journal.is_file():
        raise RunDirError(f"{run_dir}: no {JOURNAL} here; give a run directory made by labctl run")
    async with InfluxForwarder(journal, settings) as forwarder:
        return await forwarder.forward_until_caught_up()
