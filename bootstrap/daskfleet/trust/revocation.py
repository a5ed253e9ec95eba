"""The scheduler's revocation watch: read the deny-list at least once a minute, sweep expired peers.

Binds a deny-list reader (the cluster's SSM parameter through the scheduler's instance role on AWS,
``<state>/deny-list.json`` for a local cluster) to the ``SchedulerGuard``, which refuses and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..errors import DaskfleetError
from .denylist import DenyList
from .guards import SchedulerGuard

logger = logging.getLogger("daskfleet.scheduler")

#: Reads the deny-list document (None: none stored); raises DaskfleetError when it cannot.
DenyListReader = Callable[[], "str | None"]


def file_reader(path: str | Path) -> DenyListReader:
    """A local cluster's deny-list: a file (missing: nobody denied)."""
    path = Path(path)

    def read() -> str | None:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    return read


class RevocationWatch(SchedulerPlugin):
    """Polls the deny-list every ``poll_s`` and closes expired peers every ``sweep_s``, on the scheduler's loop
    from its start to its close."""

    name = "daskfleet-revocation"

    def __init__(self, guard: SchedulerGuard, reader: DenyListReader, *, poll_s: float, sweep_s: float,
                 origin: str = "deny-list"):
        self.guard = guard
        self.reader = reader
        self.poll_s = poll_s
        self.sweep_s = sweep_s
        self.origin = origin
        self._tasks: list[asyncio.Task] = []
        self._last_text: str | None = None
        self._applied = False

    async def poll_once(self) -> None:
        """Read the deny-list and apply it; a list that cannot be read or parsed keeps the last one (and says so).

        An unchanged document is not applied again: a denied user's later connections are refused as they come.
        """
        try:
            text = await asyncio.to_thread(self.reader)
            if self._applied and text == self._last_text:
                return
            deny = DenyList.from_json(text, self.origin)
        except DaskfleetError as exc:
            logger.warning("daskfleet: deny-list not read, the last one stays in force: %s", exc.message)
            self.guard.audit.record("deny-list-unreadable", reason=exc.message)
            return
        self._last_text, self._applied = text, True
        await self.guard.apply_deny_list(deny)

    async def _every(self, interval: float, step: Callable[[], Any]) -> None:
        while True:
            await step()
            await asyncio.sleep(interval)

    async def start(self, scheduler: Any) -> None:
        await self.poll_once()  # in force before the first client registers
        self._tasks = [asyncio.ensure_future(self._every(self.poll_s, self.poll_once)),
                       asyncio.ensure_future(self._every(self.sweep_s, self.guard.sweep_expired))]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
