r"""Zaber ASCII (firmware 6+) linear actuator simulator driving a `StackMechanics` screw rig.

`ZaberSimulator` is the device as its serial port sees it (`handle_bytes` → replies); it is also the
mechanics' `Drive`, so a move takes simulated time at `maxspeed` and the stack force follows. It is
served with the same front-ends as the gauge (`simulators.mark10.CrlfServer`/`CrlfPtyServer`, here
`ZaberServer`/`ZaberPtyServer`): pty or TCP, `Faults`, unplug/replug, drop.

Sources: [src] = INSTRUMENTS.md §3.6 (zaber.com ASCII protocol manual); [mem] = plausible, to check.

* [src] Commands `/[device] [axis] command [args]` end with CR, LF or CRLF; replies
  `@01 1 OK IDLE -- 0\r\n`: device (2 digits), axis (0 = the device), `OK`/`RJ`, `BUSY`/`IDLE`, the
  highest-priority warning flag (`--` = none), data. `/1 1 home`, `move abs`, `move rel`, `get pos`,
  `stop`, `set maxspeed`, `/1 system reset`, `/1` and `/1 1` (status polls); rejected commands
  answer `RJ` with a reason (`BADCOMMAND` [mem for the token], `BADDATA`, `BADAXIS`).
* [mem] Units: one microstep = `microstep_m` (0.1 µm by default, a fine lead screw; the real value
  follows from the device's lead and microstep resolution). `maxspeed` is taken as µsteps/s
  directly; real firmware scales the data by 1.6384 (data = µsteps/s × 1.6384).
* [mem] Power-on: position 0 is unknown, flag `WR` (no reference) until `home` completes; moves are
  rejected while `WR` is set (`RJ IDLE WR BADCOMMAND`). `home` drives to position 0 (retracting,
  away from the stack) at maxspeed. `stop` stops at once (no deceleration ramp), so it answers IDLE.
* [mem] Stall: when closing the screw would push the stack force beyond `thrust_limit_n`, the move
  stops at the position where the force equals the limit and the flag `FS` (stalled, stopped) is
  raised; the next movement command or `warnings clear` clears it. Flag priority: FS > WR > `--`.
* [mem] Commands for another device address get no reply (the device is not on the chain);
  axis 0 is accepted for axis commands on this one-axis device. A line not starting with `/` is
  ignored. Unknown settings for `get`/`set` are `BADCOMMAND`.
"""

from __future__ import annotations

import logging

from simulators.base import TimeSource
from simulators.mark10 import CrlfPtyServer, CrlfServer
from simulators.mechanics import StackMechanics
from simulators.tcp import Faults

log = logging.getLogger(__name__)


class ZaberSimulator:
    """A one-axis Zaber device with a lead screw closing on a stack.

    Args:
        mechanics: the rig; the simulator attaches itself as its drive (None = a free axis).
        time_source: monotonic seconds.
        device: the device address on the chain (1..99).
        microstep_m: travel per microstep, m.
        max_position: travel limit, µsteps (default 25 mm at 0.1 µm).
        maxspeed: power-on speed, µsteps/s.
        thrust_limit_n: force beyond which the motor stalls, N.
        start_position: power-on position, µsteps (unknown to the device: `WR` until homed).
    """

    def __init__(
        self,
        mechanics: StackMechanics | None,
        time_source: TimeSource,
        *,
        device: int = 1,
        microstep_m: float = 0.1e-6,
        max_position: int = 250_000,
        maxspeed: int = 20_000,
        thrust_limit_n: float = 2000.0,
        start_position: int = 5_000,
    ) -> None:
        self.mechanics = mechanics
        self.time_source = time_source
        self.device = device
        self.microstep_m = microstep_m
        self.max_position = max_position
        self.power_on_maxspeed = maxspeed
        self.thrust_limit_n = thrust_limit_n
        self.start_position = start_position
        self._input = bytearray()
        self.commands: list[str] = []
        """Every line received, in order (for tests)."""
        self.t = time_source()
        if mechanics is not None:
            mechanics.t = max(mechanics.t, self.t)
            mechanics.drive = self
        self.reset()

    def reset(self) -> None:
        """Power-on state: not homed (`WR`), idle, power-on speed; the screw stays where it is."""
        self.position = float(getattr(self, "position", self.start_position))
        self.target: float | None = None
        self.homing = False
        self.homed = False
        self.stalled = False
        self.maxspeed = self.power_on_maxspeed
        self._sync_mechanics()

    def _sync_mechanics(self) -> None:
        if self.mechanics is not None:
            self.mechanics.position_m = self.position * self.microstep_m

    # ------------------------------------------------------------------------------ Drive protocol

    @property
    def moving(self) -> bool:
        """Whether a move or a homing is under way."""
        return self.target is not None

    def step(self, t: float, mechanics: StackMechanics) -> float:
        """Move to time `t` at maxspeed, stalling where the force would exceed the thrust limit."""
        dt = max(0.0, t - self.t)
        self.t = max(self.t, t)
        if self.target is not None:
            travel = self.maxspeed * dt
            delta = self.target - self.position
            new = self.target if abs(delta) <= travel else self.position + travel * (1 if delta > 0 else -1)
            if new > self.position:
                stall_at = mechanics.position_for_force(self.thrust_limit_n) / self.microstep_m
                if new > stall_at:
                    new = max(self.position, stall_at)
                    self.target = None
                    self.homing = False
                    self.stalled = True
                    log.info("zaber: stalled at %.0f µsteps (force limit %g N)", new, self.thrust_limit_n)
            self.position = new
            if self.target is not None and self.position == self.target:
                self.target = None
                if self.homing:
                    self.homing = False
                    self.homed = True
        return self.position * self.microstep_m

    def _advance(self) -> None:
        now = self.time_source()
        if self.mechanics is not None:
            self.mechanics.advance_to(now)
            return
        if now > self.t:
            self.step(now, StackMechanics(x_contact_m=float("inf")))

    # ------------------------------------------------------------------------------ byte interface

    def handle_bytes(self, data: bytes) -> bytes:
        """Take received bytes; return the replies to every line they complete (CR, LF or CRLF)."""
        self._input += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[str] = []
        while (end := self._input.find(b"\n")) >= 0:
            raw = bytes(self._input[:end]).decode("ascii", errors="replace")
            del self._input[: end + 1]
            reply = self.handle_line(raw)
            if reply is not None:
                out.append(reply + "\r\n")
        return "".join(out).encode("ascii")

    def poll(self) -> bytes:
        """No spontaneous alerts (they are off by default)."""
        return b""

    def handle_line(self, line: str) -> str | None:
        """One command line → its reply, or None (another device's command, or noise)."""
        line = line.strip()
        if not line.startswith("/"):
            return None
        self.commands.append(line)
        words = line[1:].split()
        device = 0
        if words and words[0].isdigit():
            device = int(words.pop(0))
        if device not in (0, self.device):
            return None
        axis = 0
        if words and words[0].isdigit():
            axis = int(words.pop(0))
        self._advance()
        if axis not in (0, 1):
            return self._reply(axis, "RJ", "BADAXIS")
        ok, data = self._execute(axis, words)
        return self._reply(axis, "OK" if ok else "RJ", data)

    def _flag(self) -> str:
        if self.stalled:
            return "FS"
        if not self.homed:
            return "WR"
        return "--"

    def _reply(self, axis: int, status: str, data: str) -> str:
        busy = "BUSY" if self.moving else "IDLE"
        return f"@{self.device:02d} {axis} {status} {busy} {self._flag()} {data}"

    def _execute(self, axis: int, words: list[str]) -> tuple[bool, str]:
        if not words:
            return True, "0"
        match words:
            case ["system", "reset"]:
                self.reset()
                return True, "0"
            case ["home"]:
                self.stalled = False
                self.homing = True
                self.target = 0.0
                return True, "0"
            case ["stop"]:
                self.target = None
                self.homing = False
                return True, "0"
            case ["move", ("abs" | "rel") as kind, value]:
                return self._move(kind, value)
            case ["get", "pos"]:
                return True, str(round(self.position))
            case ["get", "maxspeed"]:
                return True, str(self.maxspeed)
            case ["set", "maxspeed", value]:
                speed = _integer(value)
                if speed is None or not 0 < speed <= 10_000_000:
                    return False, "BADDATA"
                self.maxspeed = speed
                return True, "0"
            case ["warnings", "clear"]:
                self.stalled = False
                return True, "0"
            case ["move", *_] | ["set", "maxspeed", *_]:
                return False, "BADDATA"
        return False, "BADCOMMAND"

    def _move(self, kind: str, value: str) -> tuple[bool, str]:
        steps = _integer(value)
        if steps is None:
            return False, "BADDATA"
        if not self.homed:
            return False, "BADCOMMAND"
        target = steps if kind == "abs" else round(self.position) + steps
        if not 0 <= target <= self.max_position:
            return False, "BADDATA"
        self.stalled = False
        self.homing = False
        self.target = float(target)
        return True, "0"


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class ZaberServer(CrlfServer):
    """A `ZaberSimulator` on TCP: `async with ZaberServer(sim) as s:` → `socket://127.0.0.1:{s.port}`."""

    def __init__(
        self, simulator: ZaberSimulator, *, faults: Faults | None = None, name: str = "zaber"
    ) -> None:
        super().__init__(simulator, faults=faults, name=name)


class ZaberPtyServer(CrlfPtyServer):
    """A `ZaberSimulator` on a pty: `async with ZaberPtyServer(sim) as p:` → open `p.path`."""

    def __init__(
        self, simulator: ZaberSimulator, *, faults: Faults | None = None, name: str = "zaber pty"
    ) -> None:
        super().__init__(simulator, faults=faults, name=name)
