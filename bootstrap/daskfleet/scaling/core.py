"""The scaling decision, pure: snapshot + policy + clock -> how many workers, which ones leave, and why.

In the spirit of distributed's ``AdaptiveCore``, but with what users of adaptive clusters keep
asking for: scale-up asks for what the backlog needs at once; requested workers count as
coming until they register or time out, so nothing is requested twice; scale-down follows the
largest recent target, waits out a cooldown and for pending launches, retires only workers the
scheduler calls cheap to close, and at most ``max_step_down`` at a time. Hard limits (idle, the
cluster cap, a ceiling such as the budget stop) skip the smoothing, since they must hold now.
New workers are not asked for while those of the current launch version keep failing to start
(``launch_hold``): the requests still pending are taken back, so the platform stops replacing them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .policy import ScalingSpec


@dataclass(frozen=True)
class Snapshot:
    """What the scheduler says now."""

    #: ``Scheduler.adaptive_target()``: workers the current workload wants.
    target: int
    #: Names of registered workers that are not leaving.
    workers: frozenset[str]
    #: ``Scheduler.workers_to_close()``: names of workers that may leave at low cost, cheapest first.
    closable: tuple[str, ...] = ()
    #: A ceiling from outside (e.g. the budget stop), or None.
    ceiling: int | None = None
    #: Why the cluster is idle (it must go to zero workers), or None.
    idle: str | None = None
    #: Why no worker may be asked for now (new ones keep failing to start: ``launch_hold``), or None.
    held: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to do now: request ``launch`` more workers, retire ``retire``; ``desired`` is where that heads."""

    desired: int
    launch: int = 0
    retire: tuple[str, ...] = ()
    reason: str = ""
    #: Requested workers still counted as coming after this decision.
    coming: int = 0
    #: Whether a hard limit (idle, cap, ceiling) decided rather than the adaptive target.
    forced: bool = False
    #: Requested workers taken back: they will not come (their launches keep failing).
    withdraw: int = 0


@dataclass(frozen=True)
class BootFailure:
    """A worker that stopped for good while starting: a configuration-class exit, or its agent gave up."""

    worker: str
    #: What it was launched from, e.g. ``launch template lt-0abc version 3`` (local: ``local worker slots``).
    version: str
    #: Epoch seconds.
    at: float
    code: int
    line: str


@dataclass(frozen=True)
class LaunchFailures:
    """What new workers start from now (``current``), and the recent boot failures of every version."""

    current: str
    failures: tuple[BootFailure, ...] = ()


def launch_hold(seen: LaunchFailures, now: float, *, limit: int, window_s: float) -> str | None:
    """Why no more workers may be asked for: ``limit`` boot failures of the current version within the window."""
    if limit <= 0:
        return None
    recent = [failure for failure in seen.failures if failure.version == seen.current and failure.at >= now - window_s]
    if len(recent) < limit:
        return None
    last = max(recent, key=lambda failure: failure.at)
    return (f"{len(recent)} workers from {seen.current} failed to start within {window_s:g}s (the last, {last.worker}: "
            f"exit {last.code}: {last.line}); none is asked for until another version is deployed or they age out")


class ScalingCore:
    """Decides from snapshots; keeps only the recent targets, the outstanding requests and the last action time."""

    def __init__(self, policy: ScalingSpec, clock: Callable[[], float]):
        self.policy = policy
        self.clock = clock
        self._targets: deque[int] = deque(maxlen=policy.scale_down_targets)
        #: Outstanding requests, oldest first: [time requested, workers not yet arrived].
        self._requests: list[list[float]] = []
        self._known: frozenset[str] = frozenset()
        self._last_action: float | None = None

    @property
    def coming(self) -> int:
        return int(sum(count for _, count in self._requests))

    def expect(self, count: int) -> None:
        """Count ``count`` workers as coming from now, e.g. instances found booting when the scheduler starts."""
        if count > 0:
            self._requests.append([self.clock(), count])

    def fell_short(self, count: int) -> None:
        """The platform requested ``count`` fewer workers than the last decision asked for: they are not coming."""
        while count > 0 and self._requests:
            newest = self._requests[-1]
            taken = min(count, int(newest[1]))
            newest[1] -= taken
            count -= taken
            if newest[1] <= 0:
                self._requests.pop()

    def decide(self, snapshot: Snapshot) -> Decision:
        now = self.clock()
        notes = self._account(snapshot.workers, now)
        self._targets.append(max(snapshot.target, 0))
        have = len(snapshot.workers)
        coming = self.coming
        limit, limit_reason = self._hard_limit(snapshot)
        want = min(max(snapshot.target, self.policy.min_workers), self.policy.max_workers)
        clamp_note = f"; target {snapshot.target} capped at max_workers {self.policy.max_workers}" if snapshot.target > self.policy.max_workers else ""

        if limit is not None and limit < have + coming:
            return self._enforce(snapshot, limit, limit_reason, now, notes)
        if limit is not None and want > limit:
            want, clamp_note = limit, f"{clamp_note}; held to {limit} by the {limit_reason}"
        if snapshot.held and (want > have or coming):
            withdrawn = coming
            self._requests.clear()
            return Decision(have, withdraw=withdrawn, reason=notes + f"not asking for more workers: {snapshot.held}")
        if want > have + coming:
            launch = want - have - coming
            self._requests.append([now, launch])
            self._last_action = now
            reason = f"target {snapshot.target} asks for {want} workers, {have} registered and {coming} coming{clamp_note}"
            return Decision(want, launch=launch, reason=notes + reason, coming=coming + launch)
        held = min(max(max(self._targets), self.policy.min_workers), self.policy.max_workers)
        if limit is not None:
            held = min(held, limit)
        if held >= have:
            return Decision(have + coming, reason=notes + f"holding {have} workers ({coming} coming)", coming=coming)
        return self._scale_down(snapshot, held, coming, now, notes)

    def _account(self, workers: frozenset[str], now: float) -> str:
        """Arrivals settle the oldest requests; requests older than the launch timeout are given up."""
        arrived = len(workers - self._known)
        self._known = workers
        for request in self._requests:
            settled = min(arrived, int(request[1]))
            request[1] -= settled
            arrived -= settled
        expired = sum(int(count) for at, count in self._requests if count and now - at >= self.policy.launch_timeout_s)
        self._requests = [r for r in self._requests if r[1] > 0 and now - r[0] < self.policy.launch_timeout_s]
        if expired:
            return f"{expired} requested worker(s) did not register within {self.policy.launch_timeout_s:g}s; "
        return ""

    def _hard_limit(self, snapshot: Snapshot) -> tuple[int | None, str]:
        """The lowest limit that holds whatever the target asks, and what sets it."""
        limits: list[tuple[int, str]] = []
        if snapshot.idle:
            limits.append((0, f"idle: {snapshot.idle}"))
        if snapshot.ceiling is not None:
            limits.append((max(snapshot.ceiling, 0), f"ceiling {snapshot.ceiling}"))
        if self.policy.cluster_cap is not None:
            limits.append((self.policy.cluster_cap, f"cluster cap {self.policy.cluster_cap}"))
        if not limits:
            return None, ""
        return min(limits)

    def _enforce(self, snapshot: Snapshot, limit: int, why: str, now: float, notes: str) -> Decision:
        """A hard limit below what runs and comes: forget pending requests, retire down to it now."""
        self._requests.clear()
        have = len(snapshot.workers)
        excess = have - limit
        if excess <= 0:
            return Decision(have, reason=notes + f"{why}: no more workers requested", forced=True)
        step = excess if limit == 0 else min(excess, self.policy.max_step_down)
        cheap = [name for name in snapshot.closable if name in snapshot.workers]
        rest = sorted(snapshot.workers - set(cheap))
        retire = tuple((cheap + rest)[:step])
        self._last_action = now
        reason = f"{why}: retiring {len(retire)} of {have} workers"
        return Decision(have - len(retire), retire=retire, reason=notes + reason, forced=True)

    def _scale_down(self, snapshot: Snapshot, held: int, coming: int, now: float, notes: str) -> Decision:
        have = len(snapshot.workers)
        recent = len(self._targets)
        if coming:
            return Decision(have + coming, reason=notes + f"{held} would do, but waiting for {coming} requested worker(s) "
                            "before retiring any", coming=coming)
        if self._last_action is not None and now - self._last_action < self.policy.cooldown_s:
            left = self.policy.cooldown_s - (now - self._last_action)
            return Decision(have, reason=notes + f"{held} would do; cooldown, {left:.0f}s left")
        cheap = [name for name in snapshot.closable if name in snapshot.workers]
        retire = tuple(cheap[: min(have - held, self.policy.max_step_down)])
        if not retire:
            return Decision(have, reason=notes + f"{held} would do, but no worker can leave without losing work")
        self._last_action = now
        reason = f"the last {recent} targets ask for at most {held}: retiring {len(retire)} of {have} workers"
        return Decision(have - len(retire), retire=retire, reason=notes + reason)
