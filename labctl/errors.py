"""The errors a user can meet, each carrying a message that says what to do.

Tree:

- LabctlError: anything the CLI prints as one line (never a traceback)
  - ProtocolError: a protocol file is wrong (names file:line and field)
  - ConfigError: a station configuration or command-line option is wrong
  - UnitError: a quantity is malformed or has the wrong dimension
  - RunDirError: the run directory cannot be created or already holds a run

Driver errors (drivers.errors.InstrumentError and its children) are a separate tree because drivers
know nothing of labctl; the CLI prints them the same way.
"""

from __future__ import annotations


class LabctlError(Exception):
    """Base of every error the CLI reports as a single line."""


class ProtocolError(LabctlError):
    """A protocol file cannot be loaded or validated."""


class ConfigError(LabctlError):
    """A station configuration or option is invalid."""


class UnitError(LabctlError):
    """A quantity string is malformed or has the wrong dimension."""


class RunDirError(LabctlError):
    """The run directory is unusable."""
