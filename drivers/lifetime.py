"""The lifetime every driver shares: open the transport, connect, and on the way out make safe, then close.

Constructors do no I/O; `async with driver:` opens the transport and runs the driver's connect
sequence (closing the transport again if that fails), and on exit puts the instrument in its safe
state before closing (STYLE.md rule 7). A failure to reach the safe state on exit is logged, not
raised: the engine's Station.make_safe has already tried it and told the operator, and raising here
would hide the run's own outcome.

`reconnect()` is the same lifetime again after a lost or doubtful link: close what is left of
the transport, open it afresh with capped exponential back-off (slept on the caller's clock, so a
simulated run stays in simulated time), then the driver's `_resync` checks the instrument and
reports what it found, so the caller can restore its set-points.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

from drivers.errors import InstrumentError, InstrumentReplyError, LinkError

log = logging.getLogger(__name__)

RECONNECT_FIRST_DELAY_S = 0.25
"""Back-off before the second attempt (the first is immediate); doubles after each failure."""
RECONNECT_MAX_DELAY_S = 8.0
"""Longest back-off between two attempts."""


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

    async def reconnect(
        self,
        *,
        retry_for_s: float,
        sleep: Callable[[float], Awaitable[None]],
        time_source: Callable[[], float] = time.monotonic,
    ) -> Any:
        """Reopen the link and resync, retrying with capped exponential back-off for `retry_for_s`.

        Args:
            retry_for_s: give up when the next attempt would start later than this after the first.
            sleep: how to wait between attempts (labctl passes its clock's sleep).
            time_source: the clock `retry_for_s` is measured on (labctl passes its monotonic).

        Returns:
            What `_resync` reports (the instrument's state as found, before it was made safe).

        Raises:
            LinkError: the instrument did not come back in time (the last failure is chained).
            InstrumentStateError: something answered that is not this instrument, or not usable.
        """
        start, delay, attempt = time_source(), 0.0, 0
        while True:
            attempt += 1
            self.reconnect_attempts = attempt
            try:
                reopen = getattr(self.transport, "reopen", None)
                if reopen is None:
                    raise LinkError(f"{self.transport.resource}: this transport cannot reopen")
                await reopen()
                return await self._resync()
            except (LinkError, InstrumentReplyError) as exc:  # a reply in doubt: the link again
                delay = RECONNECT_FIRST_DELAY_S if delay == 0.0 else min(2 * delay, RECONNECT_MAX_DELAY_S)
                waited = time_source() - start
                if waited + delay > retry_for_s:
                    raise LinkError(
                        f"{self.transport.resource}: not back after {attempt} attempts in {waited:.3g} s "
                        f"({exc}); check the cable, the network and that the instrument is on"
                    ) from exc
                log.warning("%s: reconnect attempt %d failed: %s", self.transport.resource, attempt, exc)
                await sleep(delay)

    reconnect_attempts = 0
    """Attempts the last `reconnect()` made."""

    async def _resync(self) -> Any:
        """Bring a freshly reopened link and the instrument back in step (default: `_connect`)."""
        await self._connect()
        return None

    async def _connect(self) -> None:
        """Check and configure the instrument after the transport opened."""

    async def _leave_safe(self) -> None:
        """Put the instrument in its safe state before the link closes (default: nothing to do)."""

    async def _close_transport(self) -> None:
        closer = getattr(self.transport, "aclose", None)
        if closer is not None:
            await closer()
