"""The protocol language: YAML files validated and compiled into plans."""

from labctl.protocol.compiler import Overrides, compile_data, compile_file, compile_text
from labctl.protocol.plan import Plan, PlanStep

__all__ = ["Overrides", "Plan", "PlanStep", "compile_data", "compile_file", "compile_text"]
