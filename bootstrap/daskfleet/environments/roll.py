"""Rolling a running cluster onto a newly published environment, decided purely.

From what each worker runs (its fingerprint), the roll says which workers switch next, so that
at most a fraction of them is away at once and the cluster keeps computing; which fingerprints
the scheduler accepts meanwhile (the published one and the one it replaces, until every worker
runs the published one); and whether the scheduler itself must restart first, which it does
only when the change touches the core packages every node and client must share. A worker that
comes back on its old environment, or reports that it could not install the new one, has failed
for this roll and is not asked again: it keeps computing on its old environment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RollTarget:
    """What was published: the fingerprint nodes of this platform must reach, and what it replaces."""

    fingerprint: str
    replaces: frozenset[str]
    core_packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class RollPlan:
    switch: tuple[str, ...]
    accepted: frozenset[str]
    restart_scheduler: bool
    done: bool
    reason: str


@dataclass
class RollProgress:
    """What ``daskfleet env status`` shows of a roll."""

    target: str | None = None
    workers: dict[str, str] = field(default_factory=dict)
    switching: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    done: bool = True
    reason: str = "no environment published"

    def as_dict(self) -> dict:
        on_target = sum(1 for fingerprint in self.workers.values() if fingerprint == self.target)
        return {"target": self.target, "workers": dict(self.workers), "switching": list(self.switching),
                "failed": dict(self.failed), "done": self.done, "reason": self.reason,
                "progress": f"{on_target}/{len(self.workers)} workers on the published environment"}


class RollCore:
    """Decides each step of a roll; the caller reports what the workers run and what failed."""

    def __init__(self, max_fraction: float, switch_timeout_s: float, clock: Callable[[], float]):
        if not 0 < max_fraction <= 1:
            raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        self.switch_timeout_s = switch_timeout_s
        self.clock = clock
        self.target: RollTarget | None = None
        #: worker -> [when it was told to switch, whether it has left since]
        self._switching: dict[str, list] = {}
        self.failed: dict[str, str] = {}

    def begin(self, target: RollTarget) -> None:
        """A new environment was published (or rolled back to): forget the previous roll's state."""
        self.target = target
        self._switching.clear()
        self.failed.clear()

    def note_left(self, worker: str) -> None:
        """A switching worker left the scheduler (it is restarting into the new environment)."""
        if worker in self._switching:
            self._switching[worker][1] = True

    def note_failure(self, worker: str, error: str) -> None:
        self._switching.pop(worker, None)
        self.failed[worker] = error

    def decide(self, scheduler_fingerprint: str, workers: Mapping[str, str]) -> RollPlan:
        """``workers``: name -> fingerprint of every registered worker."""
        target = self.target
        if target is None:
            return RollPlan((), frozenset({scheduler_fingerprint}), False, True, "no environment published")
        accepted = frozenset({target.fingerprint}) | target.replaces
        if target.core_packages and scheduler_fingerprint != target.fingerprint:
            reason = f"core packages change ({', '.join(target.core_packages)}): the scheduler restarts into it first"
            return RollPlan((), accepted, True, False, reason)
        self._settle(workers)
        behind = sorted(name for name, fingerprint in workers.items() if fingerprint != target.fingerprint)
        candidates = [name for name in behind if name not in self._switching and name not in self.failed]
        if not behind and not self._switching:
            return RollPlan((), frozenset({target.fingerprint}), False, True, "every worker runs the published environment")
        allowed = max(1, math.floor(self.max_fraction * max(len(workers), 1)))
        room = max(0, allowed - len(self._switching))
        chosen = tuple(candidates[:room])
        now = self.clock()
        for name in chosen:
            self._switching[name] = [now, False]
        failed_note = f", {len(self.failed)} failed" if self.failed else ""
        reason = (f"{len(workers) - len(behind)}/{len(workers)} workers on the published environment, "
                  f"{len(self._switching)} switching (at most {allowed} at once){failed_note}")
        done = not candidates and not self._switching
        return RollPlan(chosen, accepted, False, done, reason)

    def _settle(self, workers: Mapping[str, str]) -> None:
        """Switching workers that came back on the target are done; back on an old environment, or gone too long, failed."""
        now = self.clock()
        for name, (since, left) in list(self._switching.items()):
            fingerprint = workers.get(name)
            if fingerprint == self.target.fingerprint:
                del self._switching[name]
            elif left and fingerprint is not None:
                # It left and came back on its old environment: it could not install the new one.
                self.note_failure(name, "came back on its previous environment")
            elif now - since > self.switch_timeout_s:
                self.note_failure(name, f"did not come back within {self.switch_timeout_s:g}s")

    def progress(self, workers: Mapping[str, str], reason: str) -> RollProgress:
        target = self.target
        return RollProgress(
            target=target.fingerprint if target else None, workers=dict(workers), switching=sorted(self._switching),
            failed=dict(self.failed), done=not self._switching and all(
                fingerprint == target.fingerprint or name in self.failed for name, fingerprint in workers.items()
            ) if target else True, reason=reason,
        )
