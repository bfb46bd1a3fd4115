"""A run directory: journal, the protocol as run, resolved settings and results, side by side.

Everything needed to resume, re-analyse or export a run without InfluxDB lives here.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labctl.errors import RunDirError

JOURNAL = "journal.sqlite"
PROTOCOL = "protocol.yaml"
SETTINGS = "settings.json"
RESULT = "result.json"


def new_run_dir(protocol_name: str, out: Path | None, root: Path = Path("runs")) -> Path:
    """Create the directory for a new run; refuse one that already holds a run.

    Directories are private to the user (0700): journals can hold unpublished data.
    """
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", protocol_name)
        out = root / f"{stamp}-{safe}"
        suffix = 1
        while out.exists():
            suffix += 1
            out = root / f"{stamp}-{safe}-{suffix}"
    if (out / JOURNAL).exists():
        raise RunDirError(f"{out} already holds a run; choose another --out or move that one away")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RunDirError(
            f"cannot create the run directory {out} ({exc.strerror}); choose another --out"
        ) from None
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_plain) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """Numpy scalars (from fits) as plain numbers; anything else is a bug worth seeing."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
