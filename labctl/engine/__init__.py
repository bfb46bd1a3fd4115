"""The engine: runs a compiled plan on a station with limits, watches and a journal."""

from labctl.engine.runner import Runner, RunOutcome
from labctl.engine.state import RunState
from labctl.engine.station import Station

__all__ = ["RunOutcome", "RunState", "Runner", "Station"]
