"""Shared fixtures: fail any test that leaves a task running (STYLE.md rule 17)."""

from __future__ import annotations

import asyncio

import pytest

from tests.servers import mosquitto_broker, victoria_metrics  # noqa: F401  (real servers: tests/servers.py)


@pytest.fixture(autouse=True)
async def fail_on_leaked_tasks():
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    if leaked:
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test left tasks running: {leaked}")
