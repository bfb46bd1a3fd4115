"""Errors raised by drivers, translated from the transport libraries at the boundary.

Tree:

- InstrumentError: anything an instrument or its link did wrong; the message says what to do
  - LinkError: the link could not be opened or broke (refused, unplugged, port in use)
    - InstrumentTimeout: no (complete) reply within the timeout
  - InstrumentStateError: the instrument is in a state the driver cannot use (e.g. wrong *LANG)
  - InstrumentReplyError: the instrument answered, but not with what the protocol says
  - InstrumentRejectedError: the instrument reported an error in its error queue

pyvisa, pyserial and socket exceptions never travel above a driver (STYLE.md rule 12).
"""

from __future__ import annotations


class InstrumentError(Exception):
    """Base of every driver error; `str()` is a one-line message for an operator."""


class LinkError(InstrumentError):
    """The link to the instrument cannot be opened or was lost."""


class InstrumentTimeout(LinkError):
    """The instrument did not answer in time."""


class InstrumentStateError(InstrumentError):
    """The instrument is configured in a way the driver cannot work with."""


class InstrumentReplyError(InstrumentError):
    """A reply did not parse as the protocol documents it."""


class InstrumentRejectedError(InstrumentError):
    """The instrument's error queue reported one or more errors after a command batch."""
