"""Records, the in-process bus and the SQLite journal."""

from labctl.data.bus import Bus, Status
from labctl.data.journal import Journal
from labctl.data.records import Event, EventKind, Sample

__all__ = ["Bus", "Event", "EventKind", "Journal", "Sample", "Status"]
