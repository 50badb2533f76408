"""What the server side of a test saw, for the test thread to wait on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from conftest import UNIT

__all__ = ["Events"]


class Events:
    """Items added by controller callbacks (on the ASGI server's loop), waited for by tests."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.cond = threading.Condition()
        #: The ASGI server's event loop, as seen by the last callback that added an item.
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, item: Any) -> None:
        with self.cond:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
            self.items.append(item)
            self.cond.notify_all()

    def wait_for(self, item: Any) -> None:
        """Wait until ``item`` was added, and take it out."""
        with self.cond:
            assert self.cond.wait_for(lambda: item in self.items, 5 * UNIT), (item, self.items)
            self.items.remove(item)

    def on_loop(self, func: Callable[[], Any]) -> Any:
        """``func()`` run on the server's loop; its result."""
        assert self.loop is not None

        async def call() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5 * UNIT)
