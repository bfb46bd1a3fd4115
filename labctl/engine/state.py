"""The run state machine as a transition table (bluesky's RunEngineStateMachine, STYLE.md rule 13)."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Where a run is."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    """Every step ran, or a `stop` action ended the run normally."""
    ALARM = "alarm"
    """A safety limit or an `alarm` action ended the run; the station was made safe."""
    ABORTED = "aborted"
    """The operator (or a signal) ended the run; the station was made safe."""
    FAILED = "failed"
    """An instrument or link failed; the station was made safe where it could be."""


TRANSITIONS: dict[RunState, set[RunState]] = {
    RunState.IDLE: {RunState.RUNNING, RunState.ABORTED, RunState.FAILED},
    RunState.RUNNING: {RunState.PAUSED, RunState.DONE, RunState.ALARM, RunState.ABORTED, RunState.FAILED},
    RunState.PAUSED: {RunState.RUNNING, RunState.ABORTED, RunState.ALARM, RunState.FAILED},
    RunState.DONE: set(),
    RunState.ALARM: set(),
    RunState.ABORTED: set(),
    RunState.FAILED: set(),
}


class IllegalTransition(RuntimeError):
    """A state change the table does not allow (a bug, not a user error)."""


def check_transition(current: RunState, new: RunState) -> RunState:
    """Return `new` if the table allows it."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"run cannot go from {current} to {new}")
    return new
