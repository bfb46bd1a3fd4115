"""The serial transport against a real pseudo-terminal (and a TCP server for socket:// URLs)."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from drivers.errors import InstrumentTimeout, LinkError
from drivers.transports.serial import LineFramer, SerialTransport, TransportState


@pytest.fixture
def pty():
    """A pty pair: the test plays the instrument on the master; the transport opens the slave."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    state = {"master": master}
    yield state, os.ttyname(slave)
    if state["master"] is not None:
        os.close(state["master"])
    os.close(slave)


async def read_master(master: int, size: int, timeout_s: float = 2.0) -> bytes:
    """Everything the transport wrote, once at least `size` bytes arrived."""
    loop = asyncio.get_running_loop()
    received = b""
    ready = asyncio.Event()
    loop.add_reader(master, ready.set)
    try:
        async with asyncio.timeout(timeout_s):
            while len(received) < size:
                await ready.wait()
                ready.clear()
                with contextlib.suppress(BlockingIOError):
                    received += os.read(master, 4096)
    finally:
        loop.remove_reader(master)
    return received


async def test_partial_frames_accumulate_until_the_terminator(pty):
    state, name = pty
    async with SerialTransport(name, timeout_s=1.0, poll_s=0.01) as port:
        os.write(state["master"], b"Pda7F8")
        with pytest.raises(InstrumentTimeout, match=r"partial frame b'Pda7F8' is buffered"):
            await port.read_line(0.05)
        os.write(state["master"], b"5F3Fu\nM00")
        assert await port.read_line() == "Pda7F85F3Fu"
        os.write(state["master"], b"00\n\n")
        assert await port.read_line() == "M0000"
        assert await port.read_line() == ""  # an empty frame (end of a script) is a frame


async def test_a_configurable_terminator_frames_crlf_replies(pty):
    state, name = pty
    async with SerialTransport(name, eol="\r\n", poll_s=0.01) as port:
        os.write(state["master"], b"12.5 N\r\n\r\n7\r")
        assert await port.read_line() == "12.5 N"
        assert await port.read_line() == ""
        with pytest.raises(InstrumentTimeout):
            await port.read_line(0.03)  # "7\r" is not a frame yet


async def test_query_writes_the_line_and_returns_the_reply(pty):
    state, name = pty
    async with SerialTransport(name, poll_s=0.01) as port:
        reply = asyncio.create_task(port.query("t"))
        assert await read_master(state["master"], 2) == b"t\n"
        os.write(state["master"], b"tes4_lr1.3*\n")
        assert await reply == "tes4_lr1.3*"


async def test_a_waiting_reader_never_delays_a_write(pty):
    state, name = pty
    async with SerialTransport(name, poll_s=0.01) as port:
        reader = asyncio.create_task(port.read_line(5.0))
        await asyncio.sleep(0.02)
        await port.write("Z\n")  # the abort must go out while the stream is being read
        assert await read_master(state["master"], 2, timeout_s=0.5) == b"Z\n"
        os.write(state["master"], b"Z\n")
        assert await reader == "Z"


async def test_a_timeout_says_what_to_check(pty):
    _, name = pty
    async with SerialTransport(name, timeout_s=0.05, poll_s=0.01) as port:
        with pytest.raises(InstrumentTimeout, match=r"no complete reply within 0\.05 s; check the cable"):
            await port.read_line()


async def test_closing_the_master_is_a_link_error_that_says_the_device_vanished(pty):
    state, name = pty
    async with SerialTransport(name, poll_s=0.01) as port:
        reader = asyncio.create_task(port.read_line(5.0))
        await asyncio.sleep(0.02)
        os.close(state["master"])  # the "USB cable" is pulled: the slave reads EIO
        state["master"] = None
        with pytest.raises(LinkError, match="device vanished"):
            await reader
        with pytest.raises(LinkError, match="link lost"):
            await port.write("Z\n")
        with pytest.raises(LinkError):
            await port.read_line(0.1)
    assert port.state is TransportState.CLOSED


async def test_a_second_open_of_the_same_port_is_refused_as_in_use(pty):
    _, name = pty
    async with SerialTransport(name) as first:
        second = SerialTransport(name)
        with pytest.raises(LinkError, match="port in use by another program"):
            await second.open()
        await second.aclose()
        assert first.state is TransportState.OPEN
    async with SerialTransport(name):  # released on close: it opens again at once
        pass


async def test_a_missing_port_says_to_check_the_name():
    port = SerialTransport("/dev/labctl-no-such-port")
    with pytest.raises(LinkError, match="no such port"):
        await port.open()
    await port.aclose()


async def test_a_closed_transport_is_not_reopened(pty):
    _, name = pty
    port = SerialTransport(name)
    await port.open()
    await port.aclose()
    await port.aclose()  # twice is fine
    with pytest.raises(LinkError, match="make a new one"):
        await port.open()
    with pytest.raises(LinkError, match="not connected"):
        await port.write("t\n")


async def test_socket_urls_carry_the_same_framing_and_report_a_closed_peer():
    served: list[asyncio.StreamWriter] = []
    replied = asyncio.Event()

    async def instrument(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"v\n"
        writer.write(b"v1.8\nP")  # a reply, then the start of a frame that never completes
        await writer.drain()
        served.append(writer)
        replied.set()

    server = await asyncio.start_server(instrument, "127.0.0.1", 0)
    port_number = server.sockets[0].getsockname()[1]
    try:
        async with SerialTransport(f"socket://127.0.0.1:{port_number}", poll_s=0.01) as port:
            assert await port.query("v") == "v1.8"
            await replied.wait()
            served[0].close()
            await served[0].wait_closed()
            with pytest.raises(LinkError, match="closed the connection"):
                await port.read_line(2.0)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refused_socket_connection_is_a_link_error():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port_number = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    port = SerialTransport(f"socket://127.0.0.1:{port_number}")
    with pytest.raises(LinkError, match="connection refused"):
        await port.open()


def test_the_framer_splits_keeps_partials_and_refuses_endless_garbage():
    framer = LineFramer(b"\n", max_frame=16)
    framer.feed(b"a\nbc")
    assert framer.next_frame() == "a"
    assert framer.next_frame() is None and framer.pending == b"bc"
    framer.feed(b"\xff\n")
    assert framer.next_frame() == "bc\ufffd"  # undecodable bytes reach the protocol layer as text
    framer.feed(b"x" * 17)
    with pytest.raises(LinkError, match="without a b'\\\\n' terminator; check the baud rate"):
        framer.next_frame()
    with pytest.raises(ValueError):
        LineFramer(b"")
