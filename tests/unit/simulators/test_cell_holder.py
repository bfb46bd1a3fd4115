"""The simulated fixture: a fresh cell goes in at the fixture's pressure and temperature."""

from simulators.base import CellHolder
from simulators.cell import CellParameters, SymmetricCell


def test_a_new_cell_takes_the_fixtures_conditions_and_everything_reaches_the_new_cell():
    def make(n: int) -> SymmetricCell:
        return SymmetricCell(CellParameters(seed=n))

    holder = CellHolder(make(0), make)
    holder.pressure_pa = 5e6  # as the rig sets it
    holder.temperature_k = 333.15  # as the heater sets it
    holder.advance(3600.0, 1e-4)
    first = holder.cell
    assert first.state.charge_passed_c > 0

    holder.replace()

    assert holder.cell is not first and holder.cells == 2
    assert holder.pressure_pa == 5e6 and holder.temperature_k == 333.15
    assert holder.state.charge_passed_c == 0.0  # reads go to the fresh cell
    assert holder.voltage(1e-4) == holder.cell.voltage(1e-4)
    assert first.pressure_pa == 5e6  # the old cell is left as it was
