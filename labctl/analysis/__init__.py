"""Analysis of journaled runs: CCD today; impedance and cycling metrics later."""
