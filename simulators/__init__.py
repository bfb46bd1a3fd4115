"""Simulated instruments: physics models behind the real wire protocols."""
