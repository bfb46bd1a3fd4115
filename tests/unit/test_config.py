from pathlib import Path

import pytest

from labctl.config import PneumaticRigConfig, ScrewRigConfig, load_station_config
from labctl.errors import ConfigError
from labctl.protocol import compile_text
from labctl.session import _check_station_abilities


def test_station_file_with_rig_and_heater(tmp_path: Path):
    path = tmp_path / "bench.toml"
    path.write_text(
        'name = "b1"\n[potentiostat]\ndriver = "emstat4"\nresource = "/dev/ttyACM0"\n'
        '[rig]\ngauge = "/dev/ttyUSB0"\nactuator = "/dev/ttyUSB1"\nmax_force = "1.5 kN"\n'
        '[heater]\nresource = "tcp://10.0.0.5:502"\n'
    )
    config = load_station_config(path)
    assert config.rig is not None and config.rig.max_force == pytest.approx(1500.0)
    assert config.heater is not None and config.heater.device_id == 1


def test_station_file_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "bench.toml"
    path.write_text(
        '[potentiostat]\nresource = "x"\n[rig]\ngauge = "a"\nactuator = "b"\nmax_force = "5 MPa"\n'
    )
    with pytest.raises(ConfigError, match=r"rig.max_force: '5 MPa' is not a force"):
        load_station_config(path)


def test_a_protocol_that_sets_pressure_needs_a_rig_on_a_real_station(tmp_path: Path):
    plan = compile_text("labctl: 1\nname: t\nsteps:\n  - set: {pressure: 5 MPa}\n", "p.yaml")
    path = tmp_path / "bench.toml"
    path.write_text('[potentiostat]\nresource = "TCPIP0::1.2.3.4::5025::SOCKET"\n')
    with pytest.raises(ConfigError, match=r"p.yaml:4: .*sets the pressure.*\[rig\]"):
        _check_station_abilities(plan, False, load_station_config(path))
    _check_station_abilities(plan, True, None)  # the simulated bench has one


def _station(tmp_path: Path, rig: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(f'[potentiostat]\nresource = "TCPIP0::1.2.3.4::5025::SOCKET"\n[rig]\n{rig}')
    return path


def test_rig_without_type_is_a_screw_rig(tmp_path: Path):
    config = load_station_config(_station(tmp_path, 'gauge = "/dev/ttyUSB0"\nactuator = "/dev/ttyUSB1"\n'))
    assert isinstance(config.rig, ScrewRigConfig) and config.rig.type == "screw"
    config = load_station_config(_station(tmp_path, 'type = "screw"\ngauge = "a"\nactuator = "b"\n'))
    assert isinstance(config.rig, ScrewRigConfig)


def test_pneumatic_rig_with_controller_piston_area_and_optional_gauge(tmp_path: Path):
    config = load_station_config(
        _station(
            tmp_path,
            'type = "pneumatic"\ncontroller = "socket://10.0.0.7:4001"\npiston_area = "50 cm^2"\n'
            'gauge = "/dev/ttyUSB0"\nmax_force = "1.5 kN"\n',
        )
    )
    rig = config.rig
    assert isinstance(rig, PneumaticRigConfig)
    assert rig.controller == "socket://10.0.0.7:4001"
    assert rig.piston_area == pytest.approx(50e-4)
    assert rig.gauge == "/dev/ttyUSB0" and rig.max_force == pytest.approx(1500.0)
    assert (rig.unit_id, rig.pressure_unit, rig.baudrate) == ("A", "psi", 19200)
    bare = load_station_config(
        _station(tmp_path, 'type = "pneumatic"\ncontroller = "/dev/ttyUSB2"\npiston_area = "20 cm^2"\n')
    ).rig
    assert isinstance(bare, PneumaticRigConfig) and bare.gauge is None


@pytest.mark.parametrize(
    ("rig", "message"),
    [
        ('type = "hydraulic"\n', r'rig: type must be "screw" .* or "pneumatic"'),
        ('type = "pneumatic"\ncontroller = "/dev/ttyUSB2"\n', r"rig.piston_area: missing: .*piston_area = "),
        ('type = "pneumatic"\npiston_area = "20 cm^2"\n', r"rig.controller: missing: .*controller = "),
        (
            'type = "pneumatic"\ncontroller = "c"\npiston_area = "20 cm^2"\nactuator = "b"\n',
            r"rig.actuator: not a key of a pneumatic rig \(it takes controller, piston_area, gauge",
        ),
        (
            'type = "pneumatic"\ncontroller = "c"\npiston_area = "20 N"\n',
            r"rig.piston_area: '20 N' is not an area",
        ),
        (
            'type = "pneumatic"\ncontroller = "c"\npiston_area = "-2 cm^2"\n',
            r"rig.piston_area: .*greater than 0",
        ),
        ('controller = "c"\npiston_area = "20 cm^2"\n', r'rig.type: missing: .*type = "pneumatic"'),
        ('gauge = "a"\n', r"rig.actuator: missing: a screw rig needs actuator = "),
    ],
)
def test_bad_rig_sections_say_what_to_write(tmp_path: Path, rig: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_station_config(_station(tmp_path, rig))


def test_a_pneumatic_rig_plays_the_pressure_role(tmp_path: Path):
    plan = compile_text("labctl: 1\nname: t\nsteps:\n  - set: {pressure: 5 MPa}\n", "p.yaml")
    path = _station(tmp_path, 'type = "pneumatic"\ncontroller = "c"\npiston_area = "20 cm^2"\n')
    _check_station_abilities(plan, False, load_station_config(path))
