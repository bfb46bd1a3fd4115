import re
from pathlib import Path

import pytest

from labctl.errors import ProtocolError
from labctl.protocol import Overrides, compile_file, compile_text

ROOT = Path(__file__).resolve().parents[3]

MINIMAL = """\
labctl: 1
name: t
steps:
  - rest: {until: {time: 10 min}}
"""


def test_library_ccd_compiles_with_densities_through_the_area():
    plan, _ = compile_file(ROOT / "protocols" / "ccd.yaml")
    first_current = next(s for s in plan.steps if s.kind == "current")
    assert first_current.density_a_m2 == pytest.approx(0.5)  # 0.05 mA/cm²
    assert first_current.current_a == pytest.approx(0.5 * 0.785e-4)
    assert first_current.ends[0].condition == "charge"
    assert first_current.ends[0].value == pytest.approx(0.1 * 36_000 * 0.785e-4)
    plate = plan.steps[first_current.index + 1]
    assert plate.current_a == pytest.approx(-first_current.current_a)
    densities = sorted({round(s.context["j"], 9) for s in plan.steps if "j" in s.context})
    assert densities[0] == pytest.approx(0.5) and densities[-1] == pytest.approx(30.0)
    assert len(densities) == 60


def test_overrides_replace_conditions_and_area():
    plan, _ = compile_file(
        ROOT / "protocols" / "ccd.yaml", Overrides(pressure_pa=5e6, temperature_k=353.15, area_m2=2e-4)
    )
    assert plan.pressure_pa == 5e6 and plan.temperature_k == 353.15
    first_current = next(s for s in plan.steps if s.kind == "current")
    assert first_current.current_a == pytest.approx(0.5 * 2e-4)


def test_minimal_protocol_gets_defaults():
    plan = compile_text(MINIMAL)
    assert plan.steps[0].ends[0].value == 600
    assert plan.compliance_v == 1.0


def _error(text: str) -> str:
    with pytest.raises(ProtocolError) as info:
        compile_text(text, "bad.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace("until", "untill"),
            r"^bad.yaml:4: steps\[0\].rest.untill: unknown field 'untill'; did you mean 'until'",
        ),
        (
            MINIMAL.replace("rest", "rets"),
            r"bad.yaml:4: steps\[0\]: unknown step kind 'rets'; did you mean 'rest'",
        ),
        (
            MINIMAL.replace("10 min", "10 mA"),
            r"bad.yaml:4: steps\[0\].rest.until.time: '10 mA' is not a duration",
        ),
        (MINIMAL + "cell: {area: 5 mm}\n", r"bad.yaml:5: cell.area: '5 mm' is not an area"),
        (MINIMAL + "recrod: {}\n", r"bad.yaml:5: recrod: unknown field 'recrod'; did you mean 'record'"),
        (
            MINIMAL + "  - current: {density: 5 mA, until: {time: 1 h}}\n",
            r"bad.yaml:5: steps\[1\].current.density: '5 mA' is not a current density",
        ),
        (
            MINIMAL + "  - current: {density: '${k}', until: {time: 1 h}}\n",
            r"bad.yaml:5: .*'\$\{k\}' is not defined",
        ),
        (
            MINIMAL + "  - current: {density: 1 mA/cm^2, until: {capacity: 1 mAh}}\n",
            r"bad.yaml:5: steps\[1\].current.until.capacity: '1 mAh' is not an areal capacity",
        ),
        (MINIMAL + "  - rest: {until: {capacity: 1 mAh/cm^2}}\n", r"bad.yaml:5: .*never reaches a capacity"),
        (
            MINIMAL + "  - current: {density: 1 mA/cm^2, until: {}}\n",
            r"bad.yaml:5: .*at least one end condition",
        ),
        (
            MINIMAL + "  - current: {density: 1 mA/cm^2, until: {time: 1 h, action: {goto: nowhere}}}\n",
            r"bad.yaml:5: .*no step is labelled 'nowhere'",
        ),
        (
            MINIMAL + "  - current: {density: 1 mA/cm^2, until: [{tiem: 1 h, action: stop}]}\n",
            r"bad.yaml:5: .*unknown end condition 'tiem'; did you mean 'time'",
        ),
        (
            MINIMAL + "safety: {voltage: {min: 1 V, max: -1 V}}\n",
            r"bad.yaml:5: safety.voltage: min .* must be below max",
        ),
        (
            MINIMAL + "safety: {current: {max: 1 mA}}\n  - current: {current: 5 mA, until: {time: 1 h}}\n",
            r"bad.yaml",
        ),
        (MINIMAL + "watch: {s: {type: short_circut}}\n", r"bad.yaml:5: watch.s"),
        ("name: t\nsteps: [\n", r"bad.yaml:3: not valid YAML"),
        ("", r"bad.yaml:1: the file is empty"),
        (MINIMAL + "name: again\n", r"bad.yaml:5: name appears twice"),
        (
            MINIMAL + "  - sweep: {parameter: j, values: [1 mA/cm^2, 2 mA],"
            " steps: [{current: {density: '${j}', until: {time: 1 h}}}]}\n",
            r"bad.yaml:5: .*values\[1\]: '2 mA' is not a current density",
        ),
    ],
)
def test_bad_files_give_file_line_and_field(text, expected):
    message = _error(text)
    assert re.search(expected, message), message


def test_every_problem_is_reported_not_just_the_first():
    message = _error(MINIMAL.replace("10 min", "10 mA") + "recrod: {}\n")
    assert "2 problems" in message and "10 mA" in message and "recrod" in message


def test_current_above_safety_limit_is_refused_before_running():
    text = MINIMAL + "  - current: {current: 5 mA, until: {time: 1 h}}\nsafety: {current: {max: 1 mA}}\n"
    assert "above the safety limit" in _error(text)


def test_sweep_geometric_and_list_values():
    text = MINIMAL + (
        "  - sweep:\n"
        "      parameter: j\n"
        "      values: {from: 0.1 mA/cm^2, to: 0.8 mA/cm^2, factor: 2}\n"
        "      steps: [{current: {density: '-2 * ${j}', until: {time: 1 min}}}]\n"
    )
    plan = compile_text(text)
    assert [round(s.density_a_m2, 9) for s in plan.steps[1:]] == [-2.0, -4.0, -8.0, -16.0]


def test_protocol_files_cannot_execute_code():
    text = MINIMAL + "description: !!python/object/apply:os.system ['echo hacked']\n"
    assert "bad.yaml" in _error(text)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (
            "  - current: {c_rate: C/10, until: {time: 1 h}}\n",
            r"c_rate: a C-rate needs the cell's nominal capacity",
        ),
        ("  - current: {c_rate: fast, until: {time: 1 h}}\n", r"'fast' is not a C-rate"),
        ("  - voltage: {value: 0.5 V, until: {time: 1 h}}\n", r"needs a current limit"),
        (
            "  - voltage: {value: 5 V, current_limit: 1 mA, until: {time: 1 h}}\n",
            r"outside the safety window",
        ),
        ("  - current: {current: 1 mA, until: {detector: shrot}}\n", r"no watch is named 'shrot'"),
        ("  - current: {current: 1 mA, until: {current_below: 1 mA}}\n", r"holds its current"),
        ("  - repeat: {until: {retention_below: 80 %}, steps: []}\n", r"needs 'max'"),
        (
            "  - repeat: {until: {retension_below: 80 %}, max: 3, steps: []}\n",
            r"did you mean 'retention_below'",
        ),
        ("  - eis: {amplitude: 10 mA}\n", r"eis.amplitude: '10 mA' is not a voltage.*potentiostatic"),
        ("  - eis: {from: 1 MHz, to: 0.1 V}\n", r"eis.to: '0.1 V' is not a frequency"),
        ("  - set: {pressure: 5 MPa, temperature: 25 degC}\n", r"set exactly one"),
        ("  - set: {pressure: 5 MPa, settle: {rate_below: 1 mV/s}}\n", r"'1 mV/s' is not a pressure rate"),
        ("  - mark: {}\n", r"'note' is required"),
        ("  - rest: {until: {dvdt_below: 1 mV}}\n", r"'1 mV' is not a voltage rate"),
    ],
)
def test_new_step_kinds_report_their_problems(steps, expected):
    message = _error(MINIMAL + steps)
    assert re.search(expected, message), message


def test_c_rate_uses_the_nominal_capacity_through_the_area():
    text = MINIMAL.replace(
        "name: t\n",
        "name: t\ncell: {kind: full, cathode: NMC811, loading: 12 mg/cm^2, capacity: 2 mAh/cm^2}\n",
    )
    plan = compile_text(
        text + "  - cccv: {c_rate: C/10, voltage: 0.9 V, until: {current_below: 0.01 mA}}\n"
        "  - current: {c_rate: -0.5C, until: {voltage_below: -0.5 V}}\n"
    )
    charge, discharge = plan.steps[1], plan.steps[2]
    assert charge.current_a == pytest.approx(0.1 * 2 * 3.6 / 3600 * 0.785)  # 0.157 mA
    assert discharge.current_a == pytest.approx(-0.5 * 2 * 3.6 / 3600 * 0.785)
    assert plan.cell.active_mass_kg == pytest.approx(12e-6 / 1e-4 * 0.785e-4)


def test_repeat_until_unrolls_with_a_check_that_jumps_past_the_loop():
    text = MINIMAL + (
        "  - repeat:\n      until: {retention_below: 80 %}\n      max: 3\n      steps:\n"
        "        - current: {current: 1 mA, until: {time: 1 h}}\n"
        "        - current: {current: -1 mA, until: {time: 1 h}}\n"
        "  - rest: {until: {time: 1 min}}\n"
    )
    plan = compile_text(text)
    kinds = [s.kind for s in plan.steps]
    assert kinds == ["rest"] + ["current", "current", "check"] * 3 + ["rest"]
    checks = [s for s in plan.steps if s.kind == "check"]
    assert {c.check.target for c in checks} == {len(plan.steps) - 1}
    assert [c.context["cycle"] for c in checks] == [1, 2, 3]


def test_eis_defaults_are_typical_practice():
    plan = compile_text(MINIMAL + "  - eis: {}\n")
    spec = plan.steps[1].eis
    assert (spec.f_start_hz, spec.f_end_hz, spec.points_per_decade, spec.amplitude) == (1e6, 0.1, 10, 0.01)
    assert spec.dc_is_ocv and plan.needs == frozenset({"eis"})


def test_set_steps_validate_and_declare_the_role_they_need():
    plan = compile_text(
        MINIMAL + "  - set: {pressure: 5 MPa, settle: {rate_below: 0.01 MPa/min, hold: 5 min}}\n"
    )
    assert plan.steps[1].setpoints == {
        "pressure_pa": 5e6,
        "settle_rate": pytest.approx(166.666, rel=1e-4),
        "settle_hold_s": 300.0,
    }
    assert plan.needs == frozenset({"pressure"})


def test_sweep_until_ends_each_ramp_with_its_own_check_and_waits_can_ask_for_a_new_cell():
    text = MINIMAL + (
        "  - sweep:\n      parameter: p\n      values: [1 MPa, 3 MPa]\n      steps:\n"
        "        - wait: {message: fresh cell, new_cell: true}\n"
        "        - sweep:\n            parameter: j\n            values: [1 mA/cm^2, 2 mA/cm^2]\n"
        "            until: {detector: short}\n            steps:\n"
        "              - current: {density: '${j}', until: {time: 1 h}}\n"
        "watch:\n  short: {type: short_circuit, action: next}\n"
    )
    plan = compile_text(text)
    kinds = [s.kind for s in plan.steps]
    assert kinds == ["rest"] + (["wait"] + ["current", "check"] * 2) * 2
    checks = [s for s in plan.steps if s.kind == "check"]
    # each ramp's checks jump just past that ramp: to the next cell's wait, then to the end
    assert [c.check.target for c in checks] == [6, 6, 11, 11]
    assert plan.steps[6].kind == "wait" and plan.steps[6].new_cell
    assert next(c.description for c in checks).startswith("check detector")


def test_sweep_until_names_a_known_condition_and_watch():
    text = MINIMAL + (
        "  - sweep:\n      parameter: j\n      values: [1 mA/cm^2]\n      until: {detector: shrot}\n"
        "      steps:\n        - current: {density: '${j}', until: {time: 1 h}}\n"
        "watch:\n  short: {type: short_circuit}\n"
    )
    with pytest.raises(ProtocolError, match="shrot"):
        compile_text(text)
