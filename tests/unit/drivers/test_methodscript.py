"""The MethodSCRIPT codec: INSTRUMENTS.md §2.5's worked examples, every line form, the exact scripts."""

from __future__ import annotations

import math
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import InstrumentReplyError
from drivers.methodscript import (
    AbortAck,
    DataPackage,
    EndOfScript,
    ErrorReply,
    ExecuteAck,
    LoopEnd,
    LoopStart,
    Status,
    TextLine,
    Variable,
    cell_off_script,
    chronoamperometry_script,
    chronopotentiometry_script,
    current_range_for,
    decode_line,
    decode_package,
    decode_variable,
    describe_error,
    encode_variable,
    geis_script,
    ocp_script,
    peis_script,
    points_for,
    si_literal,
)

# --------------------------------------------------------------------------------------------
# INSTRUMENTS.md §2.5 worked examples


@pytest.mark.parametrize(
    ("token", "type_id", "value"),
    [
        ("da7F85F3Fu", "da", -0.499905),  # applied potential, V
        ("dcDF5DFF4u", "dc", 99.999732),  # frequency, Hz
        ("cc896D904m", "cc", 9885.956),  # Z real, Ω
        ("cd82DB1A8u", "cd", 2.9946),  # Z imaginary, Ω
    ],
)
def test_worked_examples_decode_to_the_documented_values(token, type_id, value):
    variable = decode_variable(token)
    assert variable.type_id == type_id
    assert variable.value == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert variable.status is Status.OK and variable.range_index is None


def test_current_with_metadata_decodes_value_underload_status_and_range():
    variable = decode_variable("ba82AB973f,14,284")
    assert variable.value == pytest.approx(2.8e-9, rel=1e-5)  # 2.8 nA
    assert variable.status is Status.UNDERLOAD
    assert variable.range_index == 0x84  # "25 µA high speed" on the Pico
    assert variable.var_type.unit == "A"


def test_package_keeps_the_variables_in_pck_add_order_and_ors_their_status():
    package = decode_package("Pda7F85F3Fu;ba48D503Dp,14,288;ab8000000 ,11")
    assert [v.type_id for v in package.variables] == ["da", "ba", "ab"]
    assert package.variables[1].range_index == 0x88
    assert package.variables[2].value == 0.0
    assert package.status == Status.UNDERLOAD | Status.TIMING_ERROR


def test_nan_is_written_as_spaces_and_nan():
    variable = decode_variable("cc     nan")
    assert variable.type_id == "cc" and math.isnan(variable.value)


def test_undocumented_type_ids_still_decode_as_unknown():
    variable = decode_variable("zz8000001 ")
    assert variable.value == 1.0 and variable.var_type.name == "unknown"


# --------------------------------------------------------------------------------------------
# the other stream lines


@pytest.mark.parametrize(
    ("line", "item"),
    [
        ("", EndOfScript()),
        ("e", ExecuteAck()),
        ("Z", AbortAck()),
        ("M0000", LoopStart("measurement", 0)),
        ("M00A1", LoopStart("measurement", 0xA1)),
        ("L", LoopStart("loop")),
        ("C0002", LoopStart("scan", 2)),
        ("*", LoopEnd("measurement")),
        ("+", LoopEnd("loop")),
        ("-", LoopEnd("scan")),
        ("Thello", TextLine("hello")),
        ("Z!0006", ErrorReply(0x0006, "Z")),
        ("!4027", ErrorReply(0x4027)),
        ("e!0004: Line 18, Col 5", ErrorReply(0x0004, "e", "Line 18, Col 5")),
    ],
)
def test_every_stream_line_form_decodes(line, item):
    assert decode_line(line) == item


def test_data_line_decodes_to_a_package():
    assert decode_line("Pda7F85F3Fu") == DataPackage((Variable("da", decode_variable("da7F85F3Fu").value),))


def test_error_message_names_code_command_meaning_and_details():
    error = decode_line("Z!0006")
    assert isinstance(error, ErrorReply)
    assert error.message == (
        "error 0x0006 after 'Z': the command is not valid in the current state (e.g. an abort with no "
        "script running)"
    )
    assert "manual" in describe_error(0x4027)  # unknown codes point at the manual


@pytest.mark.parametrize(
    "line",
    [
        "Pda7F85F3F",  # variable too short
        "Pda7F85F3Fuu",  # too long
        "PdaXYZ5F3Fu",  # not hex
        "Pda7F85F3Fq",  # unknown SI prefix
        "PDA7F85F3Fu",  # type ids are lower case
        "Pda7F85F3Fu,3",  # unknown metadata
        "Pda7F85F3Fu;",  # empty variable
        "P",
        "M12",  # loop start needs 4 hex digits
        "hello",
        "Z!12",
        "\x00\xff",
    ],
)
def test_malformed_lines_are_reply_errors(line):
    with pytest.raises(InstrumentReplyError):
        decode_line(line)


# --------------------------------------------------------------------------------------------
# property tests: random and mutated lines never raise anything but InstrumentReplyError

VALID_LINES = [
    "Pda7F85F3Fu;ba48D503Dp,10,288",
    "Pdc8A1B2C3m;cc896D904m,12,20A;cd82DB1A8u",
    "M0000",
    "*",
    "e",
    "Z!0006",
    "",
]


@given(st.text(max_size=80))
def test_random_text_decodes_or_is_a_reply_error(line):
    try:
        decode_line(line)
    except InstrumentReplyError:
        pass


@given(
    st.sampled_from(VALID_LINES),
    st.lists(st.tuples(st.integers(0, 80), st.characters()), max_size=6),
    st.integers(0, 3),
)
def test_mutated_valid_lines_decode_or_are_reply_errors(line, edits, chop):
    chars = list(line)
    for position, char in edits:
        if chars and position % 2:
            chars[position % len(chars)] = char
        else:
            chars.insert(position % (len(chars) + 1), char)
    mutated = "".join(chars)
    mutated = mutated[: len(mutated) - chop] if chop < len(mutated) else mutated
    try:
        decode_line(mutated)
    except InstrumentReplyError:
        pass


@given(
    st.sampled_from(["ab", "ba", "cc", "cd", "dc", "eb"]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.one_of(st.none(), st.integers(0, 15)),
    st.one_of(st.none(), st.integers(0, 255)),
)
def test_encoded_variables_decode_to_the_same_value(type_id, value, status, range_index):
    variable = decode_variable(encode_variable(type_id, value, status=status, range_index=range_index))
    assert variable.type_id == type_id
    # 28 signed bits per SI prefix: just past a prefix boundary only ~1.3e5 steps remain (rel 4e-6)
    assert variable.value == pytest.approx(value, rel=4e-6, abs=1e-18)
    assert variable.status == (status or 0)
    assert variable.range_index == range_index


# --------------------------------------------------------------------------------------------
# script literals and builders


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (100e3, "100k"),
        (0.2, "200m"),
        (7.85e-5, "78500n"),
        (-0.5, "-500m"),
        (2, "2"),
        (1e6, "1M"),
        (0.0, "0"),
        (1.23456789e-3, "1234568n"),  # rounded at the finest prefix that fits 28 bits
    ],
)
def test_si_literals_are_integers_with_a_suffix(value, literal):
    assert si_literal(value) == literal


def test_integer_literals_and_bad_values():
    assert si_literal(11, integer=True) == "11i"
    with pytest.raises(ValueError):
        si_literal(1.5, integer=True)
    with pytest.raises(ValueError):
        si_literal(math.nan)


def test_points_per_decade_to_points_includes_both_ends():
    assert points_for(1e5, 1, 10) == 51
    assert points_for(1, 1e5, 10) == 51  # either order
    assert points_for(1e3, 10, 1) == 3
    assert points_for(10, 10, 5) == 1
    with pytest.raises(ValueError):
        points_for(0, 10, 5)


def test_current_range_is_the_smallest_decade_that_holds_the_current():
    assert current_range_for(1e-3) == 1e-3
    assert current_range_for(1.5e-3) == 1e-2
    assert current_range_for(-7.85e-5) == 1e-4
    assert current_range_for(1e-12, lowest_a=1e-7) == 1e-7
    assert current_range_for(0.5, highest_a=0.1) == 0.1


def script(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n") + "\n"


def test_chronopotentiometry_script_is_exact():
    built = chronopotentiometry_script(
        current_a=1e-3, interval_s=0.5, run_time_s=1e6, potential_range_v=2.5, voltage_limit_v=2.5
    )
    assert built.text == script(
        """
        e
        var p
        var i
        var i_dc
        var dt
        var t_run
        store_var i_dc 1m ja
        store_var dt 500m ja
        store_var t_run 1M ja
        set_pgstat_chan 0
        set_pgstat_mode 6
        set_max_bandwidth 60
        set_range ab 2500m
        set_autoranging ab 100m 2500m
        set_range db 1m
        set_autoranging db 1m 1m
        set_i 0
        cell_on
        meas_loop_cp p i i_dc dt t_run
            pck_start
                pck_add p
                pck_add i
            pck_end
            if p > 2500m
                breakloop
            endif
            if p < -2500m
                breakloop
            endif
        endloop
        on_finished:
            cell_off
        """
    )
    assert built.columns == ("V", "A") and built.interval_s == 0.5
    assert built.limits == {"voltage_v": 2.5}


def test_chronoamperometry_script_is_exact():
    built = chronoamperometry_script(
        potential_v=0.1,
        interval_s=0.1,
        run_time_s=2,
        current_range_a=1e-3,
        lowest_current_range_a=1e-9,
        current_limit_a=1e-3,
    )
    assert built.text == script(
        """
        e
        var p
        var i
        var e_dc
        var dt
        var t_run
        store_var e_dc 100m ja
        store_var dt 100m ja
        store_var t_run 2 ja
        set_e e_dc
        set_pgstat_chan 0
        set_pgstat_mode 3
        set_max_bandwidth 60
        set_range_minmax da e_dc e_dc
        set_range ba 1m
        set_autoranging ba 1n 1m
        cell_on
        meas_loop_ca p i e_dc dt t_run
            pck_start
                pck_add p
                pck_add i
            pck_end
            if i > 1m
                breakloop
            endif
            if i < -1m
                breakloop
            endif
        endloop
        on_finished:
            cell_off
        """
    )


def test_ocp_script_is_exact():
    assert ocp_script(interval_s=0.1, run_time_s=0.2).text == script(
        """
        e
        var p
        var dt
        var t_run
        store_var dt 100m ja
        store_var t_run 200m ja
        set_pgstat_chan 0
        set_pgstat_mode 3
        set_max_bandwidth 60
        set_range ab 1
        set_autoranging ab 10m 1
        cell_off
        meas_loop_ocp p dt t_run
            pck_start
                pck_add p
            pck_end
        endloop
        on_finished:
            cell_off
        """
    )


def test_peis_script_is_exact():
    built = peis_script(amplitude_v=0.01, f_start_hz=1e5, f_end_hz=100, n_points=11, e_dc_v=0.2)
    assert built.text == script(
        """
        e
        var f
        var z_re
        var z_im
        var e_ac
        var f_start
        var f_end
        var n_f
        var e_dc
        store_var e_ac 10m ja
        store_var f_start 100k ja
        store_var f_end 100 ja
        store_var n_f 11i ja
        store_var e_dc 200m ja
        set_e e_dc
        set_pgstat_chan 0
        set_pgstat_mode 3
        set_max_bandwidth 1M
        set_range_minmax da e_dc e_dc
        set_range ba 1m
        set_autoranging ba 100n 1m
        set_range ab 4
        set_autoranging ab 4 4
        cell_on
        meas_loop_eis f z_re z_im e_ac f_start f_end n_f e_dc
            pck_start
                pck_add f
                pck_add z_re
                pck_add z_im
            pck_end
        endloop
        on_finished:
            cell_off
        """
    )
    assert built.columns == ("Hz", "Ohm", "Ohm")


def test_geis_script_is_exact():
    built = geis_script(amplitude_a=5e-3, f_start_hz=1e5, f_end_hz=100, n_points=11, i_dc_a=10e-3)
    assert built.text == script(
        """
        e
        var f
        var z_re
        var z_im
        var i_ac
        var f_start
        var f_end
        var n_f
        var i_dc
        store_var i_ac 5m ja
        store_var f_start 100k ja
        store_var f_end 100 ja
        store_var n_f 11i ja
        store_var i_dc 10m ja
        set_i 0
        set_pgstat_chan 0
        set_pgstat_mode 6
        set_max_bandwidth 1M
        set_range ab 2
        set_autoranging ab 100m 2
        set_range db 100m
        set_autoranging db 100m 100m
        cell_on
        meas_loop_geis f z_re z_im i_ac f_start f_end n_f i_dc
            pck_start
                pck_add f
                pck_add z_re
                pck_add z_im
            pck_end
        endloop
        on_finished:
            cell_off
        """
    )


def test_cell_off_script_is_one_command():
    assert cell_off_script().text == "e\ncell_off\n\n"


@pytest.mark.parametrize(
    "call",
    [
        lambda: chronopotentiometry_script(current_a=1e-3, interval_s=0, run_time_s=1, potential_range_v=1),
        lambda: chronopotentiometry_script(current_a=1e-3, interval_s=2, run_time_s=1, potential_range_v=1),
        lambda: peis_script(amplitude_v=0, f_start_hz=1e3, f_end_hz=1, n_points=5, e_dc_v=0),
        lambda: geis_script(amplitude_a=1e-3, f_start_hz=-1, f_end_hz=1, n_points=5, i_dc_a=0),
        lambda: peis_script(amplitude_v=0.01, f_start_hz=1e3, f_end_hz=1, n_points=0, e_dc_v=0),
    ],
)
def test_builders_refuse_impossible_parameters(call):
    with pytest.raises(ValueError):
        call()
