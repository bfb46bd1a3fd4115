"""The lifetime every driver shares: open the transport, connect, and on the way out make safe, then close.

Constructors do no I/O; `async with driver:` opens the transport and runs the driver's connect
sequence (closing the transport again if that fails), and on exit puts the instrument in its safe
state before closing (STYLE.md rule 7). A failure to reach the safe state on exit is logged, not
raised: the engine's Station.make_safe has already tried it and told the operator, and raising here
would hide the run's own outcome.
"""

from __future__ import annotations

import logging
from typing import Any, Self

from drivers.errors import InstrumentError

log = logging.getLogger(__name__)


class DriverLifetime:
    """Mixin for drivers with a `transport`: subclasses give `_connect` and `_leave_safe`."""

    transport: Any
    SAFE_STATE = "safe state"
    """What `_leave_safe` achieves, for the log line when it cannot."""

    async def __aenter__(self) -> Self:
        opener = getattr(self.transport, "open", None)
        if opener is not None:
            await opener()
        try:
            await self._connect()
        except BaseException:
            await self._close_transport()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._leave_safe()
        except InstrumentError as exc:
            log.error("%s: %s not confirmed on close: %s", self.transport.resource, self.SAFE_STATE, exc)
        finally:
            await self._close_transport()

    async def _connect(self) -> None:
        """Check and configure the instrument after the transport opened."""

    async def _leave_safe(self) -> None:
        """Put the instrument in its safe state before the link closes (default: nothing to do)."""

    async def _close_transport(self) -> None:
        closer = getattr(self.transport, "aclose", None)
        if closer is not None:
            await closer()
