"""Each package's __init__ is its public API (STYLE.md rule 1): everything listed exists."""

import importlib

import pytest


@pytest.mark.parametrize("package", ["labctl.data", "labctl.engine", "labctl.protocol"])
def test_all_names_exist(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package} declares no public API"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    assert sorted(module.__all__) == list(module.__all__)
