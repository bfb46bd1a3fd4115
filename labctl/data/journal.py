"""The SQLite journal: the run's source of truth, written before anything else sees a record.

WAL mode keeps readers (exporters, the forwarders of later issues) from blocking the writer, and
each batch is one transaction, so a crash loses at most the batch in flight — never a committed
sample. sqlite3 is blocking, so writes run in a worker thread (STYLE.md rule 10), one at a time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from labctl.data.records import Event, EventKind, Sample

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY, t_ns INTEGER NOT NULL, step INTEGER NOT NULL, "values" TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'dc');
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, t_ns INTEGER NOT NULL, step INTEGER NOT NULL,
    kind TEXT NOT NULL, data TEXT NOT NULL);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class Journal:
    """Append-only store of one run's samples and events.

    Args:
        path: the SQLite file (created with its tables if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database (all writes are committed already)."""
        self._db.close()

    def set_meta(self, key: str, value: Any) -> None:
        """Store one run-level fact (protocol name, cell, seed …) as JSON."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _dumps(value)))

    def meta(self) -> dict[str, Any]:
        """All run-level facts."""
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    async def append(
        self, samples: list[Sample], events: list[Event], meta: dict[str, Any] | None = None
    ) -> None:
        """Write samples and events in one transaction, off the event loop.

        `meta`: run-level facts written in the same transaction (the runner's checkpoint), so they
        always describe exactly the records committed with them.
        """
        if not samples and not events and not meta:
            return
        async with self._lock:
            # A cancelled to_thread leaves its thread writing: finish it before releasing the lock,
            # or the next batch would begin a transaction inside this one. Then re-raise.
            write = asyncio.ensure_future(asyncio.to_thread(self._append_blocking, samples, events, meta))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await asyncio.wait([write])
                raise

    def _append_blocking(
        self, samples: list[Sample], events: list[Event], meta: dict[str, Any] | None = None
    ) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                'INSERT INTO samples (t_ns, step, "values", kind) VALUES (?, ?, ?, ?)',
                [(s.t_ns, s.step, _dumps(s.values), s.kind) for s in samples],
            )
            self._db.executemany(
                "INSERT INTO events (t_ns, step, kind, data) VALUES (?, ?, ?, ?)",
                [(e.t_ns, e.step, e.kind.value, _dumps(e.data)) for e in events],
            )
            if meta:
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, _dumps(v)) for k, v in meta.items()]
                )

    def samples(self, kind: str | None = "dc") -> Iterator[Sample]:
        """Samples in journal order: time-series ("dc", the default), spectra ("eis"), or all (None)."""
        query = 'SELECT t_ns, step, "values", kind FROM samples'
        rows = (
            self._db.execute(query + " ORDER BY seq")
            if kind is None
            else self._db.execute(query + " WHERE kind = ? ORDER BY seq", (kind,))
        )
        for t_ns, step, values, row_kind in rows:
            yield Sample(t_ns, step, json.loads(values), row_kind)

    def events(self, kinds: Iterable[EventKind] | None = None) -> Iterator[Event]:
        """Every event in journal order, optionally only some kinds."""
        wanted = None if kinds is None else {k.value for k in kinds}
        for t_ns, step, kind, data in self._db.execute(
            "SELECT t_ns, step, kind, data FROM events ORDER BY seq"
        ):
            if wanted is None or kind in wanted:
                yield Event(t_ns, step, EventKind(kind), json.loads(data))

    def count_samples(self) -> int:
        """How many samples are stored."""
        return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
