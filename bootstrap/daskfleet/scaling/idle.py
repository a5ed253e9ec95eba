"""When the cluster is idle, pure: no tasks and no graph updates for a while, or nobody connected either.

Two timeouts on an injectable monotonic clock: ``idle_timeout_s`` without work (a forgotten
notebook keeps no machine busy), and the shorter ``no_client_timeout_s`` without work and
without a connected client. Work is any task not yet finished, or a graph update. 0 turns a
timeout off.
"""

from __future__ import annotations

from collections.abc import Callable


class IdlePolicy:
    """Call ``note_work`` on graph updates and ``observe`` once per decision; it says why the cluster is idle."""

    def __init__(self, idle_timeout_s: float, no_client_timeout_s: float, clock: Callable[[], float]):
        self.idle_timeout_s = idle_timeout_s
        self.no_client_timeout_s = no_client_timeout_s
        self.clock = clock
        self.last_work = self.last_client = clock()

    def note_work(self) -> None:
        self.last_work = self.clock()

    def observe(self, *, busy: bool, clients: int) -> str | None:
        """Why the cluster is idle now, or None while it has work or is within its timeouts."""
        now = self.clock()
        if busy:
            self.last_work = now
        if clients:
            self.last_client = now
        if busy:
            return None
        quiet = now - self.last_work
        if self.idle_timeout_s and quiet >= self.idle_timeout_s:
            return f"no work for {quiet:.0f}s (idle timeout {self.idle_timeout_s:g}s)"
        alone = now - max(self.last_client, self.last_work)
        if self.no_client_timeout_s and not clients and alone >= self.no_client_timeout_s:
            return f"no client and no work for {alone:.0f}s (no-client timeout {self.no_client_timeout_s:g}s)"
        return None
