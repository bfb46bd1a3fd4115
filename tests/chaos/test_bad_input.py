"""Bad input never crashes labctl (issue 7, item 5): property-based tests with hypothesis.

Protocol files (random and mutated library files) give one clear ProtocolError or a plan; wire
replies (random and mutated) give a driver error (InstrumentError) or a value; MQTT command payloads
give a Command or a refusal Reply. Never another exception, never a hang.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.alicat import parse_frame
from drivers.errors import InstrumentError
from drivers.mark10 import parse_reading
from drivers.methodscript import decode_line
from drivers.zaber import parse_reply
from labctl.data.mqtt import Command, Reply, parse_command
from labctl.errors import ProtocolError
from labctl.protocol import compile_text
from tests.chaos.conftest import FIGURES

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "protocols").glob("*.yaml"))
TEXTS = [p.read_text(encoding="utf-8") for p in LIBRARY]
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _count(name: str) -> None:
    """Count one bad input handled (hypothesis examples cannot take a pytest fixture)."""
    figures = FIGURES["bad input"]
    figures[name] = figures.get(name, 0) + 1


def _compile_or_refuse(text: str) -> None:
    _count("protocol files")
    try:
        compile_text(text)
    except ProtocolError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        assert len(message.splitlines()) <= 60  # a clear list, not a dump


@QUICK
@given(st.text(max_size=400))
@example("=")  # once a yaml ConstructorError escaped the loader
def test_random_text_is_a_protocol_or_one_clear_error(text):
    _compile_or_refuse(text)


@st.composite
def mutated_library_file(draw):
    text = draw(st.sampled_from(TEXTS))
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "duplicate", "garble", "indent", "swap"]))
        if how == "drop":
            del lines[i]
        elif how == "duplicate":
            lines.insert(i, lines[i])
        elif how == "garble":
            cut = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:cut] + draw(st.text(max_size=12)) + lines[i][cut:]
        elif how == "indent":
            lines[i] = draw(st.sampled_from(["  ", "\t", " "])) + lines[i]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


@QUICK
@given(mutated_library_file())
def test_mutated_library_files_are_a_protocol_or_one_clear_error(text):
    _compile_or_refuse(text)


PARSERS = {
    "alicat": (parse_frame, "A +014.70 +015.00"),
    "mark10": (parse_reading, "12.34 N"),
    "zaber": (parse_reply, "@01 0 OK IDLE -- 0"),
    "methodscript": (decode_line, "Pda8000000u;ba0000000p"),
}


@pytest.mark.parametrize("name", PARSERS)
@QUICK
@given(data=st.data())
def test_wire_parsers_answer_garbage_with_a_driver_error(name, data):
    _count("wire replies")
    parse, good = PARSERS[name]
    reply = data.draw(
        st.one_of(
            st.text(max_size=80),
            st.builds(
                lambda cut, junk: good[:cut] + junk + good[cut:],
                st.integers(0, len(good)),
                st.text(max_size=8),
            ),
            st.builds(lambda cut: good[:cut], st.integers(0, len(good))),
        )
    )
    try:
        parse(reply)
    except InstrumentError:
        pass


@QUICK
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: __import__("json").dumps(v)),
    )
)
def test_mqtt_command_payloads_are_a_command_or_a_refusal(payload):
    _count("command payloads")
    result = parse_command(payload)
    assert isinstance(result, Command | Reply)
    if isinstance(result, Reply):
        assert not result.ok and result.message


def test_an_oversized_command_is_refused_without_parsing_it():
    result = parse_command(b'{"id": "x", "action": "start", "protocol": "' + b"a" * 2_000_000 + b'"}')
    assert isinstance(result, Reply) and not result.ok


class _ScriptedTransport:
    """Answers every query with the next scripted reply (a garbled instrument)."""

    resource = "TCPIP0::fake::5025::SOCKET"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)

    async def write(self, command: str) -> None:
        return None

    async def query(self, command: str) -> str:
        return self.replies.pop(0) if self.replies else "0"


_NUMBERISH = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["1", "-2.5e-3", "nan", "inf", "-inf", "1e999", "", " ", "9" * 30, "0x10", "1,2"]),
        max_size=8,
    ).map(",".join),
)


@QUICK
@given(st.lists(_NUMBERISH, min_size=1, max_size=4))
def test_keithley_readings_from_a_garbled_instrument_are_a_driver_error(replies):
    from drivers.keithley2450 import Keithley2450

    _count("wire replies")

    async def poll() -> None:
        smu = Keithley2450(_ScriptedTransport(replies), time_source=lambda: 0.0)
        smu._acquiring, smu._fetched, smu._period_s, smu._t_init = True, 0, 1.0, 0.0
        for call in (smu.read, smu._fetch_new):
            try:
                await call()
            except InstrumentError:
                pass

    asyncio.run(poll())
