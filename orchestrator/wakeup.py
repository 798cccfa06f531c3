"""The one resettable wake-up: a sleeper waits with a timeout, anyone may cut the sleep short."""

from __future__ import annotations

import anyio


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

    async def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True if a notification ended the sleep."""
        event = self._event
        with anyio.move_on_after(max(0.0, timeout)):
            await event.wait()
        if not event.is_set():
            return False
        if event is self._event:
            self._event = anyio.Event()
        return True
