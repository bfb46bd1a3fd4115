"""`labctl tui`: the terminal UI, and the data it shows.

This package's root exports the UI-free parts — the model (`LabModel`, `StationView`) and the
connections that feed it (`MqttConnection` for a whole lab on the broker, `LocalConnection` for a
bench file's agent in this process) — so they import without Textual. The Textual app is
`labctl.tui.app`.
"""

from labctl.tui.connection import (
    LabConnection,
    LocalConnection,
    ModelLink,
    MqttConnection,
    new_command,
    protocol_files,
    validate_protocol,
)
from labctl.tui.model import LabModel, StationView, ccd_from_half_cycles, describe_event

__all__ = [
    "LabConnection",
    "LabModel",
    "LocalConnection",
    "ModelLink",
    "MqttConnection",
    "StationView",
    "ccd_from_half_cycles",
    "describe_event",
    "new_command",
    "protocol_files",
    "validate_protocol",
]
