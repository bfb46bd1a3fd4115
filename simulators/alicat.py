r"""Alicat PC pressure-controller simulator: CR-framed ASCII, polling and streaming, TCP and pty front-ends.

Layers, as in the EmStat4 simulator:

* `PneumaticCylinder` is the hardware: a valve that drives the gas pressure toward the set-point
  through a first-order lag (time constant `tau_s`) with a slew-rate limit (`max_rate`), integrated
  in closed form so the result does not depend on how often it is advanced. `force_n()` is the
  piston force (gauge pressure × piston area); an optional `cell` gets `cell.pressure_pa` = force /
  cell area each time the model advances, so a cell model feels the stack pressure.
* `AlicatSimulator` is the instrument as its serial port sees it: `handle_bytes` takes received
  bytes and returns the reply bytes; `poll` returns streamed frames that are due. No sockets.
* `AlicatServer` (TCP, usable as pyserial `socket://127.0.0.1:PORT`) and `AlicatPtyServer` (a raw
  pseudo-terminal, `/dev/pts/N`) move bytes, stream, and inject link faults (`simulators.tcp.Faults`:
  `drop_next_command` fires on the next CR, `garble_next_reply` sets the top bit of the next reply's
  bytes, `reply_delay_s` and `fragment_size` as documented there).

Wire protocol (INSTRUMENTS.md §3.5). Commands and replies end with CR (a LF after a CR is ignored);
commands are case-insensitive; the first character is the unit id `A`..`Z` and a command for
another id gets no reply (a multi-drop RS-485 line). Replies:

* `A` → the data frame. Column layout [mem; the §3.5 summary says "pressure and setpoint for PCs";
  check with `A??D*` on a real unit]: `<id> <pressure> <setpoint> [status tokens]`, each number
  signed, 2 decimals, zero padded to 7 characters (`+014.70`), like `alicat/mock.py`'s
  `f"{pressure:+07.2f}"`. Status tokens: `HLD` (valve held), `OVR` (pressure beyond full scale).
* `AS<sp>` → set-point in engineering units (psi or bar, the simulator's `unit`), reply = frame.
  Set-points outside 0..full scale are refused with `?` [mem: a real unit may clamp instead].
* `AHP` / `AHC` → hold the valve where it is / hold it closed (both freeze the pressure in this
  model: a sealed cylinder without leaks) and `AC` → cancel the hold; reply = frame.
* `@@=A` → the streaming unit (`@`) becomes `A` again: streaming stops; no reply [mem].
  `A@=@` → unit `A` becomes `@` and streams a frame with id `@` every `stream_period_s` (50 ms)
  of simulated time; no reply [mem]. While streaming, only commands addressed to `@` are answered.
* `A??D*` → one line per column: `A D00 ID_`, `A D01 PRESS <unit>`, `A D02 SETPT <unit>` [mem:
  the real layout has more fields per line].
* `AVE` → `A <firmware>` [mem: real replies look like `10v07.0-R24 Jan 26 2023`].
* Anything else → `?` [mem: some firmware answers `A ?`].

Why streaming corrupts typed commands (INSTRUMENTS.md §6): in this model, as on a half-duplex
RS-485 line, the instrument drops a partly received command whenever it sends a streamed frame
[mem]. A command written in one burst survives; one typed slowly (or split by a USB adapter) is
lost, and any reply is buried among unsolicited frames. That is why the driver sends `@@=A` in one
write on connect and then discards input until a frame for its own unit id arrives.

Time. The model is lazy: every `handle_bytes`/`poll` first advances to `time_source()`. Streamed
frames are due at exact multiples of the period; a poll emits at most `max_stream_burst` of them
(the most recent ones) when the clock jumps, so a simulated hour does not flood the link. The same
inputs at the same simulated times give byte-identical output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import tty
from collections.abc import Awaitable, Callable
from typing import Protocol, Self

from simulators.base import TimeSource
from simulators.tcp import Faults, ServerState

log = logging.getLogger(__name__)

PA_PER_UNIT = {"psi": 6894.757293168, "bar": 1.0e5, "kpa": 1.0e3}
"""Pascals per engineering unit the simulator can report in."""

FIRMWARE = "10v07.0-R24 SIM"
"""What `AVE` reports [mem: format]."""


class PressureLoad(Protocol):
    """A cell model whose stack pressure can be set (pascals)."""

    pressure_pa: float


class PneumaticCylinder:
    """A pressure-controlled pneumatic cylinder: valve lag, slew limit, hold, piston force.

    dp/dt = clip((sp − p)/tau, −max_rate, +max_rate), or 0 while held. Integrated exactly: the
    rate-limited (linear) stretch lasts until |sp − p| = max_rate·tau, then the exponential tail.

    Args:
        full_scale: full-scale pressure, engineering units (OVR beyond it).
        tau_s: valve/volume time constant, s.
        max_rate: slew-rate limit, engineering units per second.
        pressure: starting pressure (gauge), engineering units.
        piston_area_m2: piston area for `force_n`.
        pa_per_unit: pascals per engineering unit.
    """

    def __init__(
        self,
        *,
        full_scale: float = 100.0,
        tau_s: float = 2.0,
        max_rate: float = 10.0,
        pressure: float = 0.0,
        piston_area_m2: float = 1.0e-3,
        pa_per_unit: float = PA_PER_UNIT["psi"],
    ) -> None:
        if full_scale <= 0 or tau_s <= 0 or max_rate <= 0 or piston_area_m2 <= 0:
            raise ValueError("full_scale, tau_s, max_rate and piston_area_m2 must be positive")
        self.full_scale = full_scale
        self.tau_s = tau_s
        self.max_rate = max_rate
        self.pressure = pressure
        self.setpoint = 0.0
        self.held = False
        self.piston_area_m2 = piston_area_m2
        self.pa_per_unit = pa_per_unit

    def advance(self, dt: float) -> None:
        """Integrate `dt` seconds (≥ 0) in closed form."""
        if dt <= 0 or self.held:
            return
        error = self.setpoint - self.pressure
        band = self.max_rate * self.tau_s  # below this error the lag, not the slew limit, rules
        if abs(error) > band:
            t_linear = (abs(error) - band) / self.max_rate
            step = min(dt, t_linear)
            self.pressure += math.copysign(self.max_rate * step, error)
            dt -= step
            error = self.setpoint - self.pressure
        if dt > 0:
            self.pressure = self.setpoint - error * math.exp(-dt / self.tau_s)

    @property
    def overpressure(self) -> bool:
        """Whether the pressure is beyond full scale (the frame shows `OVR`)."""
        return self.pressure > self.full_scale

    def force_n(self) -> float:
        """Piston force in newtons: gauge pressure × piston area (never negative: a piston cannot pull)."""
        return max(0.0, self.pressure * self.pa_per_unit * self.piston_area_m2)


class AlicatSimulator:
    """An Alicat PC on a serial line: polling/streaming, commands, frames.

    Args:
        time_source: where time comes from (`time.monotonic` standalone, a simulated clock in tests).
        unit_id: the unit id letter, `A`..`Z`.
        unit: engineering unit of the frames, `psi`, `bar` or `kpa`.
        cylinder: the hardware; a 100-unit full-scale cylinder by default.
        cell: optional cell model; its `pressure_pa` follows the piston force / `cell_area_m2`.
        cell_area_m2: the cell's area under the piston, m².
        stream_period_s: streaming period in simulated seconds (50 ms default, `AW91` on a real unit).
        max_stream_burst: most streamed frames one poll emits after a clock jump.
    """

    def __init__(
        self,
        time_source: TimeSource,
        *,
        unit_id: str = "A",
        unit: str = "psi",
        cylinder: PneumaticCylinder | None = None,
        cell: PressureLoad | None = None,
        cell_area_m2: float = 1.0e-4,
        stream_period_s: float = 0.05,
        max_stream_burst: int = 20,
    ) -> None:
        unit_id = unit_id.upper()
        if len(unit_id) != 1 or not "A" <= unit_id <= "Z":
            raise ValueError(f"unit_id must be a letter A..Z, not {unit_id!r}")
        if unit not in PA_PER_UNIT:
            raise ValueError(f"unit must be one of {sorted(PA_PER_UNIT)}, not {unit!r}")
        self.unit = unit
        self.cylinder = cylinder if cylinder is not None else PneumaticCylinder(pa_per_unit=PA_PER_UNIT[unit])
        self.cell = cell
        self.cell_area_m2 = cell_area_m2
        self.stream_period_s = stream_period_s
        self.max_stream_burst = max_stream_burst
        self.polling_id = unit_id
        """The id the unit answers to when not streaming."""
        self.unit_id = unit_id
        """The id the unit answers to now: `@` while streaming."""
        self._time_source = time_source
        self.t = float(time_source())
        self._next_stream: float | None = None
        self._input = bytearray()
        self.commands_lost = 0
        """Partly received commands dropped by streamed frames (see the module docstring)."""

    @property
    def streaming(self) -> bool:
        """Whether the unit streams frames (its id is `@`)."""
        return self.unit_id == "@"

    def force_n(self) -> float:
        """The piston force now, N (advances the model first)."""
        self._advance_to(max(float(self._time_source()), self.t))
        return self.cylinder.force_n()

    def handle_bytes(self, data: bytes) -> bytes:
        """Take received bytes at the present time; return every reply (and streamed frame) now due."""
        out = self.poll()
        self._input += data
        while (end := self._input.find(b"\r")) >= 0:
            raw = bytes(self._input[:end])
            del self._input[: end + 1]
            reply = self.handle_line(raw.decode("ascii", errors="replace").strip("\n "))
            if reply is not None:
                out += reply.encode("ascii", errors="replace") + b"\r"
        return out

    def poll(self) -> bytes:
        """Advance to the present time; return the streamed frames that fell due."""
        now = max(float(self._time_source()), self.t)
        out = bytearray()
        if self.streaming and self._next_stream is not None:
            due = max(0, math.floor((now - self._next_stream) / self.stream_period_s) + 1)
            skip = max(0, due - self.max_stream_burst)
            for k in range(skip, due):
                self._advance_to(self._next_stream + k * self.stream_period_s)
                out += self.frame().encode("ascii") + b"\r"
            if due:
                self._next_stream += due * self.stream_period_s
                if self._input:  # half-duplex: a half-received command is lost [mem]
                    self.commands_lost += 1
                    self._input.clear()
        self._advance_to(now)
        return bytes(out)

    def frame(self) -> str:
        """The data frame now: `<id> <pressure> <setpoint> [HLD] [OVR]`."""
        c = self.cylinder
        tokens = [self.unit_id, f"{c.pressure:+07.2f}", f"{c.setpoint:+07.2f}"]
        if c.held:
            tokens.append("HLD")
        if c.overpressure:
            tokens.append("OVR")
        return " ".join(tokens)

    def handle_line(self, line: str) -> str | None:
        """Execute one command (terminator stripped) at the model's time; return the reply or None."""
        text = line.strip().upper()
        if not text or text[0] != self.unit_id:
            if text.startswith("*"):  # broadcast: executed silently [mem]
                self._execute(text[1:])
            return None
        reply = self._execute(text[1:])
        return reply

    def _execute(self, body: str) -> str | None:
        c = self.cylinder
        if body == "":
            return self.frame()
        if body.startswith("@="):
            new_id = body[2:]
            if new_id == "@" or (len(new_id) == 1 and "A" <= new_id <= "Z"):
                self.unit_id = new_id
                if new_id == "@":
                    self._next_stream = self.t + self.stream_period_s
                else:
                    self.polling_id = new_id
                    self._next_stream = None
                return None
            return "?"
        if body.startswith("S"):
            try:
                value = float(body[1:])
            except ValueError:
                return "?"
            if not 0.0 <= value <= c.full_scale:
                return "?"
            c.setpoint = value
            return self.frame()
        if body in ("HP", "HC"):
            c.held = True
            return self.frame()
        if body == "C":
            c.held = False
            return self.frame()
        if body == "VE":
            return f"{self.unit_id} {FIRMWARE}"
        if body == "??D*":
            u = self.unit.upper()
            return "\r".join(
                [f"{self.unit_id} D00 ID_", f"{self.unit_id} D01 PRESS {u}", f"{self.unit_id} D02 SETPT {u}"]
            )
        return "?"

    def _advance_to(self, t: float) -> None:
        if t > self.t:
            self.cylinder.advance(t - self.t)
            self.t = t
        if self.cell is not None:
            self.cell.pressure_pa = self.cylinder.force_n() / self.cell_area_m2


# ---------------------------------------------------------------------------------- front-ends


def _garble(data: bytes) -> bytes:
    """Top bit set on every byte of the first CR-terminated line; the CR kept."""
    end = data.find(b"\r")
    end = len(data) if end < 0 else end
    return bytes(b | 0x80 for b in data[:end]) + data[end:]


class _ByteFrontEnd:
    """Shared plumbing: one simulator, output writers per client, a wall-clock poll for streaming."""

    def __init__(self, simulator: AlicatSimulator, faults: Faults | None, poll_interval_s: float, name: str):
        self.simulator = simulator
        self.faults = faults if faults is not None else Faults()
        self.poll_interval_s = poll_interval_s
        self.name = name
        self.state = ServerState.UNSTARTED
        self._sinks: list[Callable[[bytes], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._poll_task: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    def _received(self, data: bytes) -> bool:
        """Feed input; False if the drop fault fired (the caller closes the link)."""
        if self.faults.drop_next_command and b"\r" in data:
            self.faults.drop_next_command = False
            log.info("%s: fault: dropping the link", self.name)
            return False
        self._deliver(self.simulator.handle_bytes(data))
        return True

    def _deliver(self, data: bytes) -> None:
        if not data or not self._sinks:
            return
        task = asyncio.create_task(self._send(data), name=f"{self.name} output")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:  # keeps output in order across tasks
            faults = self.faults
            if faults.garble_next_reply:
                faults.garble_next_reply = False
                data = _garble(data)
            if faults.reply_delay_s > 0:
                await asyncio.sleep(faults.reply_delay_s)
            size = faults.fragment_size if faults.fragment_size > 0 else len(data)
            for start in range(0, len(data), size):
                for sink in list(self._sinks):
                    with contextlib.suppress(OSError, ConnectionError):
                        await sink(data[start : start + size])
                if start + size < len(data):
                    await asyncio.sleep(faults.fragment_gap_s)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            self._deliver(self.simulator.poll())

    def _start_polling(self) -> None:
        self._poll_task = asyncio.create_task(self._poll(), name=f"{self.name} poll")

    async def _stop_tasks(self) -> None:
        tasks = [t for t in (self._poll_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._poll_task = None


class AlicatServer(_ByteFrontEnd):
    """Serves an `AlicatSimulator` over TCP as a raw byte stream (pyserial `socket://127.0.0.1:PORT`).

    Args:
        simulator: the instrument model.
        faults: link faults (see the module docstring).
        poll_interval_s: wall-time period of the poll that streams frames, s.
    """

    def __init__(
        self,
        simulator: AlicatSimulator,
        *,
        faults: Faults | None = None,
        poll_interval_s: float = 0.01,
        name: str = "alicat",
    ) -> None:
        super().__init__(simulator, faults, poll_interval_s, name)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def __aenter__(self) -> Self:
        if self.state is ServerState.UNSTARTED:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before `start`)."""
        return self._port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (port 0 = a free port) and return the bound port once listening."""
        if self.state is not ServerState.UNSTARTED:
            raise RuntimeError(f"{self.name}: already {self.state.value}; make a new server")
        self._server = await asyncio.start_server(self._accept, host, port)
        self._port = self._server.sockets[0].getsockname()[1]
        self.state = ServerState.SERVING
        self._start_polling()
        return self._port

    async def drop_connections(self) -> None:
        """Close every client connection now (a pulled cable)."""
        workers = list(self._clients.values())
        for writer, worker in self._clients.items():
            writer.transport.abort()
            worker.cancel()
        if workers:
            await asyncio.wait(workers)

    async def aclose(self) -> None:
        """Stop listening, close every connection, wait for every task."""
        if self.state is ServerState.CLOSED:
            return
        self.state = ServerState.CLOSED
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        await self._stop_tasks()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state is not ServerState.SERVING:
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def sink(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        # The work runs in a task this server owns and may cancel; this asyncio-owned task ends normally.
        worker = asyncio.create_task(self._serve(reader, writer), name=f"{self.name} client")
        self._clients[writer] = worker
        self._sinks.append(sink)
        try:
            await asyncio.wait([worker])
        finally:
            self._sinks.remove(sink)
            self._clients.pop(writer, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                data = await reader.read(4096)
            except ConnectionError:
                return
            if not data:
                return
            if not self._received(data):
                writer.transport.abort()
                return


class AlicatPtyServer(_ByteFrontEnd):
    """Serves an `AlicatSimulator` on a raw pseudo-terminal; a client opens `path` like a USB serial port.

    `unplug()` closes the pty (the client's next read fails, as after a USB unplug).

    Args:
        simulator: the instrument model.
        faults: link faults (`drop_next_command` unplugs at the next CR).
        poll_interval_s: wall-time period of the poll that streams frames, s.
    """

    def __init__(
        self,
        simulator: AlicatSimulator,
        *,
        faults: Faults | None = None,
        poll_interval_s: float = 0.01,
        name: str = "alicat pty",
    ) -> None:
        super().__init__(simulator, faults, poll_interval_s, name)
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None

    async def __aenter__(self) -> Self:
        if self.state is ServerState.UNSTARTED:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def path(self) -> str:
        """The slave device path clients open."""
        if self._path is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._path

    async def start(self) -> str:
        """Create the pty and start serving; return the slave path."""
        if self.state is not ServerState.UNSTARTED:
            raise RuntimeError(f"{self.name}: already {self.state.value}; make a new server")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave, self._path = master, slave, os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._readable)
        self._sinks.append(self._write)
        self.state = ServerState.SERVING
        self._start_polling()
        return self._path

    def unplug(self) -> None:
        """Close both ends of the pty (USB unplug)."""
        master, slave = self._master, self._slave
        if master is None:
            return
        asyncio.get_running_loop().remove_reader(master)
        self._master = self._slave = None
        if self._write in self._sinks:
            self._sinks.remove(self._write)
        os.close(master)
        if slave is not None:
            os.close(slave)

    async def aclose(self) -> None:
        """Unplug and wait for every task."""
        if self.state is ServerState.CLOSED:
            return
        self.state = ServerState.CLOSED
        await self._stop_tasks()
        self.unplug()

    def _readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            self.unplug()
            return
        if data and not self._received(data):
            self.unplug()

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._master is None:
                raise OSError("unplugged")
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                await asyncio.sleep(0.001)
