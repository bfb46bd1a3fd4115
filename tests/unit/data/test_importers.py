"""Importers of EC-Lab .mpt and Gamry .DTA files: formats, units and the sign of Im(Z)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from drivers.base import EisPoint
from labctl.data.importers import (
    DataFileError,
    SeriesPoint,
    read_dta_impedance,
    read_dta_series,
    read_impedance,
    read_mpt_impedance,
    read_mpt_series,
    read_series,
)
from labctl.errors import LabctlError

DATA = Path(__file__).resolve().parents[2] / "data"
PEIS_MPT = DATA / "peis_li_llzo.mpt"
GCPL_MPT = DATA / "gcpl_nmc_lpscl.mpt"
EIS_DTA = DATA / "eis_li_llzo.DTA"
CYCLING_DTA = DATA / "cycling_nmc.DTA"

# Both sample spectra are the same R0 + (Rct ‖ C) circuit: 10 Ω + (100 Ω ‖ 10 µF), 100 kHz … 1 Hz.
FREQUENCIES = [1e5, 1e4, 1e3, 100.0, 10.0, 1.0]


def model_z(frequency_hz: float) -> complex:
    omega = 2 * math.pi * frequency_hz
    return 10.0 + 100.0 / (1 + 1j * omega * 100.0 * 10e-6)


def test_the_sample_mpt_is_latin1_with_a_micro_sign_in_a_column_name():
    raw = PEIS_MPT.read_bytes()
    assert "Cs/µF".encode("latin-1") in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_mpt_spectrum_flips_minus_im_z_into_the_math_sign():
    points = read_mpt_impedance(PEIS_MPT)
    assert [p.frequency_hz for p in points] == FREQUENCIES
    for point in points:
        expected = model_z(point.frequency_hz)
        assert point.z_real_ohm == pytest.approx(expected.real, rel=1e-6)
        assert point.z_imag_ohm == pytest.approx(expected.imag, rel=1e-6)
        assert point.z_imag_ohm < 0  # a capacitive arc: negative in the canonical convention
        assert point.z_phase_deg < 0
    first = points[0]
    assert first.time_s == 12.0
    assert first.e_dc_v == pytest.approx(2.31e-4)
    assert first.i_dc_a == pytest.approx(1.2e-7)  # <I>/mA → A


def test_mpt_phase_column_agrees_with_the_canonical_phase():
    lines = PEIS_MPT.read_text(encoding="latin-1").splitlines()
    header = lines[38].split("\t")
    phase_column = header.index("Phase(Z)/deg")
    file_phases = [float(line.split("\t")[phase_column]) for line in lines[39:]]
    assert [p.z_phase_deg for p in read_mpt_impedance(PEIS_MPT)] == pytest.approx(file_phases, rel=1e-6)


def test_dta_spectrum_keeps_zimag_as_it_is_and_skips_the_ocv_table():
    points = read_dta_impedance(EIS_DTA)
    assert [p.frequency_hz for p in points] == FREQUENCIES
    for point in points:
        expected = model_z(point.frequency_hz)
        assert point.z_imag_ohm == pytest.approx(expected.imag, rel=1e-6)
        assert point.z_imag_ohm < 0
    assert points[0].time_s == 2.0 and points[0].e_dc_v == pytest.approx(2.3e-4)
    assert points[0].i_dc_a == pytest.approx(1.2e-7)


def test_both_vendors_give_the_same_canonical_spectrum():
    from_mpt = read_impedance(PEIS_MPT)
    from_dta = read_impedance(EIS_DTA)
    assert [p.z_imag_ohm for p in from_mpt] == pytest.approx([p.z_imag_ohm for p in from_dta], rel=1e-6)
    assert [p.z_real_ohm for p in from_mpt] == pytest.approx([p.z_real_ohm for p in from_dta], rel=1e-6)
    assert all(isinstance(p, EisPoint) for p in from_mpt + from_dta)


def test_mpt_cycling_series_in_si_units_with_cycles_and_charge():
    series = read_series(GCPL_MPT)
    assert len(series) == 9
    assert series[0] == SeriesPoint(time_s=0.0, voltage_v=3.612, current_a=1e-4, cycle=0, charge_c=0.0)
    end_of_charge = series[3]
    assert end_of_charge.current_a == pytest.approx(1e-4)
    assert end_of_charge.charge_c == pytest.approx(1e-4 * 1080.0)  # 0.1 mA for 1080 s, in C
    discharge = series[5]
    assert discharge.current_a == pytest.approx(-1e-4) and discharge.cycle == 0
    assert series[-1].cycle == 1


def test_dta_cycling_series_numbers_curves_as_cycles():
    series = read_dta_series(CYCLING_DTA)
    assert [p.cycle for p in series] == [1, 1, 1, 2, 2]
    assert [p.time_s for p in series] == [1, 2, 3, 4, 5]
    assert series[3].voltage_v == pytest.approx(3.58) and series[3].current_a == pytest.approx(-1e-4)


def test_a_decimal_comma_export_is_read(tmp_path):
    path = tmp_path / "comma.mpt"
    text = "EC-Lab ASCII FILE\r\nNb header lines : 4\r\n\r\ntime/s\tEwe/V\tI/mA\t\r\n0,5\t3,70\t0,100\t\r\n"
    path.write_bytes(text.encode("latin-1"))
    (point,) = read_mpt_series(path)
    assert (point.time_s, point.voltage_v, point.current_a) == (0.5, 3.7, pytest.approx(1e-4))
    assert point.cycle is None and math.isnan(point.charge_c)


def test_an_ocv_mpt_without_current_reads_as_zero_current(tmp_path):
    path = tmp_path / "ocv.mpt"
    path.write_text("EC-Lab ASCII FILE\nNb header lines : 4\n\ntime/s\tEwe/V\n1\t2.5\n", encoding="latin-1")
    assert read_series(path) == [SeriesPoint(1.0, 2.5, 0.0)]


# --------------------------------------------------------------------------------------------
# malformed files: clear errors that name the file and line


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="latin-1")
    return path


@pytest.mark.parametrize(
    ("name", "text", "reader", "message"),
    [
        ("a.mpt", "BioLogic something\n", read_mpt_series, r"a\.mpt:1: not an EC-Lab ASCII file"),
        ("b.mpt", "EC-Lab ASCII FILE\nfreq/Hz\n", read_mpt_impedance, r"b\.mpt:2: missing 'Nb header lines"),
        ("c.mpt", "EC-Lab ASCII FILE\nNb header lines : 40\n", read_mpt_series, r"c\.mpt:2: .*truncated"),
        (
            "d.mpt",
            "EC-Lab ASCII FILE\nNb header lines : 4\n\ntime/s\tEwe/V\tI/mA\n1\t3.6\t0.1\n2\tover\t0.1\n",
            read_mpt_series,
            r"d\.mpt:6: Ewe 'over' is not a number",
        ),
        (
            "e.mpt",
            "EC-Lab ASCII FILE\nNb header lines : 4\n\nfreq/Hz\tRe(Z)/Ohm\n1\t2\n",
            read_mpt_impedance,
            r"e\.mpt: the EC-Lab table has no Im\(Z\) column",
        ),
        (
            "f.mpt",
            "EC-Lab ASCII FILE\nNb header lines : 4\n\ntime/s\tEwe/V\tI/mA\n1\t3.6\n",
            read_mpt_series,
            r"f\.mpt:5: the row has 2 cells.*truncated",
        ),
        ("g.DTA", "EXPLAIN\nTAG\tEISPOT\n", read_dta_impedance, r"g\.DTA: no ZCURVE table"),
        ("h.DTA", "hello\n", read_dta_series, r"h\.DTA:1: not a Gamry EXPLAIN file"),
        (
            "i.DTA",
            "EXPLAIN\nZCURVE\tTABLE\n\tPt\tFreq\tZreal\tZimag\n\t#\tHz\tohm\tohm\n\t0\t100\t5\n",
            read_dta_impedance,
            r"i\.DTA:5: the row has 4 cells, but Zimag is column 5",
        ),
        (
            "j.DTA",
            "EXPLAIN\nZCURVE\tTABLE\n",
            read_dta_impedance,
            r"j\.DTA:3: table ZCURVE has no column-name",
        ),
        ("k.DTA", "EXPLAIN\nZCURVE\tTABLE\n\tPt\tFreq\n\t#\tHz\n", read_impedance, r"k\.DTA: .*no Zreal"),
        ("l.csv", "a,b\n", read_impedance, r"l\.csv: unknown impedance file type '\.csv'"),
    ],
)
def test_malformed_files_raise_errors_that_name_file_and_line(tmp_path, name, text, reader, message):
    with pytest.raises(DataFileError, match=message) as caught:
        reader(write(tmp_path, name, text))
    assert isinstance(caught.value, LabctlError)  # the CLI prints it as one line


def test_a_missing_file_is_a_data_file_error(tmp_path):
    with pytest.raises(DataFileError, match="cannot read"):
        read_series(tmp_path / "nowhere.mpt")
