"""The one resettable wake-up: a sleeper waits with a timeout, anyone may cut the sleep short."""

from __future__ import annotations

import math

import anyio

from orchestrator.clock import Clock


class Wakeup:
    """`notify()` ends the current (or next) `wait()` early; the notification is then used up.

    Notifications while nobody waits are not lost: the next `wait()` returns at once, unless
    `clear()` drops them first (a loop that is about to look at everything anyway).
    """

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(
        self, timeout: float, *, clock: Clock | None = None, real_cap_s: float = math.inf
    ) -> bool:
        """Sleep up to `timeout` seconds; True if a notification ended the sleep.

        With `clock`, the timeout is that clock's time (`Clock.sleep`: a test clock jumps
        ahead), and `real_cap_s` bounds the sleep in real time as well: how soon a change
        made by another process (an operator's command) is looked at.
        """
        event = self._event
        with anyio.move_on_after(min(max(0.0, timeout), real_cap_s) if clock is None
                                 else real_cap_s):
            if clock is None:
                await event.wait()
            else:
                async with anyio.create_task_group() as group:

                    async def sleeper() -> None:
                        await clock.sleep(timeout)
                        group.cancel_scope.cancel()

                    group.start_soon(sleeper)
                    await event.wait()
                    group.cancel_scope.cancel()
        if not event.is_set():
            return False
        if event is self._event:
            self._event = anyio.Event()
        return True
