import asyncio
import time

from labctl.clock import RealClock, SimulatedClock


async def test_simulated_sleep_costs_no_wall_time():
    clock = SimulatedClock(start_ns=0)
    wall = time.monotonic()
    await clock.sleep(7 * 86400)
    assert clock.monotonic() == 7 * 86400
    assert clock.time_ns() == 7 * 86400 * 10**9
    assert time.monotonic() - wall < 0.5


async def test_participants_wake_in_deadline_order_and_time_waits_for_the_busy_one():
    clock = SimulatedClock(start_ns=0)
    woke: list[tuple[str, float]] = []
    busy = asyncio.Event()

    async def sleeper(name: str, delay: float, participant) -> None:
        with participant:
            await clock.sleep(delay)
            woke.append((name, clock.monotonic()))
            if name == "a":
                await busy.wait()  # doing I/O: time must not move meanwhile
                woke.append(("a-done", clock.monotonic()))

    async def releaser() -> None:
        await asyncio.sleep(0.01)
        assert clock.monotonic() == 1.0  # b (deadline 5) has not been woken while a is busy
        busy.set()

    a, b = clock.participant(), clock.participant()  # both registered before either sleeps
    await asyncio.gather(sleeper("a", 1.0, a), sleeper("b", 5.0, b), releaser())
    assert woke == [("a", 1.0), ("a-done", 1.0), ("b", 5.0)]


async def test_cancelled_sleeper_leaves_the_queue():
    clock = SimulatedClock(start_ns=0)
    main, other = clock.participant(), clock.participant()

    async def long_sleep() -> None:
        with other:
            await clock.sleep(10)

    with main:
        task = asyncio.create_task(long_sleep())
        await asyncio.sleep(0)
        assert clock.monotonic() == 0.0  # main is busy: the 10 s sleep must wait
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await clock.sleep(1)
    assert clock.monotonic() == 1.0  # the cancelled 10 s sleep never moved time


async def test_real_clock_sleeps_for_real():
    clock = RealClock()
    start = clock.monotonic()
    await clock.sleep(0.02)
    assert clock.monotonic() - start >= 0.015


async def test_paced_clock_runs_simulated_time_at_its_speed():
    import pytest

    from labctl.clock import PacedClock

    clock = PacedClock(speed=1000.0, start_ns=0)
    wall0, sim0 = time.monotonic(), clock.monotonic()
    await clock.sleep(200.0)  # 200 simulated seconds: 0.2 s of wall time
    wall, sim = time.monotonic() - wall0, clock.monotonic() - sim0
    assert 0.19 <= wall < 1.0
    assert sim == pytest.approx(wall * 1000.0, rel=0.05)
    assert clock.time_ns() == pytest.approx(clock.monotonic() * 1e9, rel=1e-3)
    with pytest.raises(ValueError):
        PacedClock(speed=0)
