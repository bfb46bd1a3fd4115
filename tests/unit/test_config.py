from pathlib import Path

import pytest

from labctl.config import load_station_config
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
