import pytest

from labctl import units
from labctl.errors import UnitError


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("0.1 mA/cm^2", "current_density", 1.0),
        ("0.5 mAh/cm^2", "areal_charge", 18_000.0),
        ("5 MPa", "pressure", 5e6),
        ("30 min", "time", 1800.0),
        ("25 degC", "temperature", 298.15),
        ("80 °C", "temperature", 353.15),
        ("1 mV", "voltage", 1e-3),
        ("0.785 cm^2", "area", 0.785e-4),
        ("20 %", "dimensionless", 0.2),
        ("10 µV", "voltage", 1e-5),
    ],
)
def test_quantities_become_si_floats(text, kind, expected):
    assert units.parse(text, kind) == pytest.approx(expected)


def test_wrong_dimension_says_what_was_expected():
    with pytest.raises(UnitError, match=r"'5 mA' is not a current density.*0.1 mA/cm\^2"):
        units.parse("5 mA", "current_density")


def test_bare_number_needs_a_unit():
    with pytest.raises(UnitError, match="has no unit"):
        units.parse(5, "time")


def test_garbage_is_one_clear_error():
    with pytest.raises(UnitError, match="cannot read 'fast' as a quantity"):
        units.parse("fast", "time")


def test_areal_and_absolute_round_trip_through_the_area():
    area = units.parse("0.785 cm^2", "area")
    current = units.absolute(units.parse("1 mA/cm^2", "current_density"), area)
    assert current == pytest.approx(0.785e-3)
    assert units.to_ma_per_cm2(units.areal(current, area)) == pytest.approx(1.0)
    assert units.to_mah_per_cm2(units.parse("0.5 mAh/cm^2", "areal_charge")) == pytest.approx(0.5)
