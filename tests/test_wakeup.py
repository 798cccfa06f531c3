"""The resettable wake-up (wakeup.py): a notification cuts one sleep short and is used up."""

from __future__ import annotations

import anyio

from orchestrator.wakeup import Wakeup


async def test_a_notification_ends_the_sleep_at_once() -> None:
    wake = Wakeup()
    async with anyio.create_task_group() as group:
        woken: list[bool] = []

        async def sleeper() -> None:
            woken.append(await wake.wait(60))

        group.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):  # far below the 60 s timeout
            wake.notify()
    assert woken == [True]


async def test_a_notification_before_the_wait_is_kept_and_then_used_up() -> None:
    wake = Wakeup()
    wake.notify()
    wake.notify()  # two notifications: still one wake-up
    assert await wake.wait(60) is True
    assert await wake.wait(0.01) is False


async def test_clear_drops_a_pending_notification() -> None:
    wake = Wakeup()
    wake.notify()
    wake.clear()
    assert await wake.wait(0.01) is False
