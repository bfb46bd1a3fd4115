"""Checkpoints: where a run was, so `labctl resume` can continue it after a crash.

The runner writes one checkpoint with every journal batch, in the same SQLite transaction (the
journal's meta table, key `checkpoint`, replaced each time): it always describes exactly the
records committed with it, so a `kill -9` between two batches loses no more than the batch in
flight, and the resumed run never duplicates or skips a committed sample.

What it holds: the step the run is in (or goes to next), that step's elapsed time and charge so
far, its phase (CC-CV), the recent voltage window the step ends judge on, the loop/cycle tracker,
the watches' state (the short detector's healthy reference …), the pressure and temperature
targets in force, and the run's seed. Engine objects (detectors, cycle tracker) are pickled; the
rest is plain JSON so an operator can read it with `sqlite3`.
"""

from __future__ import annotations

import base64
import pickle
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

CHECKPOINT_KEY = "checkpoint"
"""The journal meta key that holds the latest checkpoint."""


@dataclass
class StepCheckpoint:
    """A source step cut in the middle: enough to continue it for what is left.

    Times are relative to the checkpoint (seconds before it), so they hold on a clock whose origin
    changed (a real station's monotonic clock after a reboot).
    """

    elapsed_s: float
    charge_c: float
    phase: str = "cc"
    last_ago_s: float | None = None
    last_current_a: float = 0.0
    kept_ago_s: float | None = None
    kept_v: float = 0.0
    kept_i: float = 0.0
    window: list[tuple[float, float]] = field(default_factory=list)
    """(seconds ago, voltage) of the recent readings the voltage and dV/dt ends look at."""
    hold_ago_s: dict[int, float] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)


@dataclass
class Checkpoint:
    """The run's position and state as of one committed journal batch."""

    number: int
    clock_s: float
    t_ns: int
    step: int
    """The step in progress (`started`) or the next to run."""
    started: bool
    seed: int | None = None
    end: dict[str, Any] | None = None
    """Set when the plan decided to end the run (stop, alarm): state, reason, last_step."""
    progress: StepCheckpoint | None = None
    previous_step: int = -1
    spectra: int = 0
    temperature_k: float | None = None
    temperature_target_k: float | None = None
    pressure_target_pa: float | None = None
    fired_since_check: list[str] = field(default_factory=list)
    engine: str = ""
    """Detectors and cycle tracker, pickled, compressed, base64."""

    def to_json(self) -> dict[str, Any]:
        """The meta row's value."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        """Read a meta row back."""
        data = dict(data)
        progress = data.pop("progress", None)
        if progress is not None:
            progress = StepCheckpoint(
                **{
                    **progress,
                    "window": [tuple(p) for p in progress.get("window", [])],
                    "hold_ago_s": {int(k): v for k, v in progress.get("hold_ago_s", {}).items()},
                }
            )
        return cls(**data, progress=progress)


def pack_engine(objects: Any) -> str:
    """Engine objects as text for the checkpoint (pickle: they are plain Python objects)."""
    packed = zlib.compress(pickle.dumps(objects, protocol=pickle.HIGHEST_PROTOCOL), 1)
    return base64.b64encode(packed).decode()


def unpack_engine(text: str) -> Any:
    """The engine objects of `pack_engine`.

    The journal is this run's own file (0700 run directory), written by labctl; it is trusted
    as the protocol file is.
    """
    return pickle.loads(zlib.decompress(base64.b64decode(text)))
