"""The scheduler side of scaling: snapshot the real scheduler, ask the pure core, apply through a narrow backend.

``install`` adds a ``ScalingPlugin`` to the scheduler before it starts. Every interval the plugin
reads ``adaptive_target()``, ``workers_to_close()``, the registered and leaving workers, the
connected clients and the ceiling, and applies the decision: the backend requests workers;
chosen workers retire through the scheduler (their data moves) before the backend lets their
process or instance go. When idle with no worker left, the backend may stop the scheduler's own
capacity (AWS); then the scheduler closes. Each action is audited. The backend also reports workers
that failed to start for good; while those of the current launch version keep failing, the plugin
asks for no more (``core.launch_hold``) and takes pending requests back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from time import monotonic, time
from typing import Any, Protocol

from distributed.diagnostics.plugin import SchedulerPlugin

from ..errors import DaskfleetError
from ..trust.audit import AuditLog
from ..trust.gatekeeper import FIRE_AND_FORGET_CLIENT
from .core import Decision, LaunchFailures, ScalingCore, Snapshot, launch_hold
from .idle import IdlePolicy
from .policy import ScalingSpec

logger = logging.getLogger("daskfleet.scaling")

PLUGIN_NAME = "daskfleet-scaling"
#: A ceiling on the worker count from outside (the budget stop, per-user limits), consulted at every
#: decision; None means no ceiling. Several compose by their minimum in the provider.
Ceiling = Callable[[], "int | None"]
#: Task states in which a task is work still to do: the cluster has work (and, for the usage ledger, so has its owner).
WORK_STATES = frozenset({"waiting", "queued", "no-worker", "processing"})
#: A decision asked for early (a graph arrived, a worker left) waits until this long (or the interval, if
#: shorter) has passed since the last one: a burst of submissions makes a few decisions, not one each.
EARLY_DECISION_GAP_S = 0.2
#: After a failed attempt to stop the scheduler's capacity, wait this long before the next.
STOP_RETRY_S = 60.0
#: Boot failures are read at most this often (and at most every six decisions): they cost an API call on AWS.
FAILURE_CHECK_S = 30.0


class WorkerBackend(Protocol):
    """Where workers come from; blocking calls, run off the event loop."""

    #: Whether a worker that leaves to switch environments comes back by itself (systemd restarts it on its
    #: instance), so the scaler counts it as coming instead of replacing it.
    restarts_switching_workers: bool

    def describe(self) -> str:
        """A short name for logs, e.g. ``auto scaling group daskfleet-x-worker``."""

    def outstanding(self) -> int:
        """Workers already requested or running when the scheduler starts (they will register)."""

    def launch(self, count: int) -> int:
        """Request ``count`` more workers; returns how many were requested (the platform may allow fewer)."""

    def remove(self, names: Sequence[str]) -> None:
        """Let the processes or instances of these retired workers go."""

    def stop_scheduler(self) -> str | None:
        """Idle with no worker left: stop paying for the scheduler and say what was done (then it closes), or None."""

    def launch_failures(self, since: float) -> LaunchFailures:
        """What new workers start from now, and the workers that failed to start for good since ``since`` (epoch)."""

    def withdraw(self, count: int) -> None:
        """Take back ``count`` requested workers that will not come (so the platform stops replacing them)."""


class ScalingPlugin(SchedulerPlugin):
    """Runs the scaling loop inside the scheduler; ``last_decision`` says what it decided last and why."""

    name = PLUGIN_NAME

    def __init__(
        self,
        policy: ScalingSpec,
        backend: WorkerBackend,
        audit: AuditLog,
        ceiling: Ceiling | None = None,
        clock: Callable[[], float] = monotonic,
    ):
        self.policy = policy
        self.backend = backend
        self.audit = audit
        self.ceiling = ceiling
        self.clock = clock
        self.core = ScalingCore(policy, clock)
        self.idle = IdlePolicy(policy.idle_timeout_s, policy.no_client_timeout_s, clock)
        self.last_decision: Decision | None = None
        #: Told of every decision (e.g. the desired-workers metric).
        self.observers: list[Callable[[Decision], None]] = []
        self.scheduler: Any = None
        self._retiring: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.Task | None = None
        self._idle_reason: str | None = None
        self._last_stop_attempt: float | None = None
        self._submitted = asyncio.Event()
        #: Decide soon after a graph arrives (a backlog asks for workers without waiting out the interval).
        self.decide_on_submit = True
        self.stopping = False
        #: Why no worker is asked for now (``core.launch_hold``), and the boot failures seen so far.
        self.held: str | None = None
        self._failures_seen: set[tuple[str, float]] = set()
        self._failures_checked: float | None = None

    # --- scheduler plugin hooks ----------------------------------------------------------------

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        try:
            self.core.expect(await asyncio.to_thread(self.backend.outstanding))
        except DaskfleetError as exc:
            logger.warning("scaling: cannot tell what %s already runs: %s", self.backend.describe(), exc)
        policy = self.policy
        logger.info(
            "adaptive workers %d..%d (cap %s) through %s, every %gs; idle after %gs without work, %gs without a client",
            policy.min_workers, policy.max_workers, policy.cluster_cap, self.backend.describe(), policy.interval_s,
            policy.idle_timeout_s, policy.no_client_timeout_s,
        )
        self._loop = asyncio.create_task(self._run(), name=PLUGIN_NAME)

    def update_graph(self, scheduler: Any, **kwargs: Any) -> None:
        self.idle.note_work()
        if self.decide_on_submit:
            self._submitted.set()

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """A worker left (retired, switching environments, lost): decide at once whether to replace it."""
        if self.decide_on_submit:
            self._submitted.set()

    async def before_close(self) -> None:
        if self._loop is not None and self._loop is not asyncio.current_task():
            self._loop.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def settle(self) -> None:
        """Wait until retirements in flight have finished (tests and benchmarks step the plugin by hand)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        """A decision every interval, and one as soon as a graph is submitted or a worker leaves, but not within
        EARLY_DECISION_GAP_S (or the interval, if shorter) of the last: a burst of submissions is decided together."""
        loop = asyncio.get_running_loop()
        gap = min(self.policy.interval_s, EARLY_DECISION_GAP_S)
        while not self.stopping:
            self._submitted.clear()
            try:
                await self.step()
            except Exception:  # a bug in one step must not end scaling for the scheduler's lifetime
                logger.exception("scaling step failed")
            last = loop.time()
            try:
                await asyncio.wait_for(self._submitted.wait(), timeout=self.policy.interval_s)
            except TimeoutError:
                continue
            await asyncio.sleep(max(last + gap - loop.time(), 0.0))

    def snapshot(self) -> Snapshot:
        """What the scheduler says now, in the core's terms (worker names; AWS names workers by instance id)."""
        scheduler = self.scheduler
        leaving = {str(ws.name) for ws in scheduler.workers.values() if ws.status.name == "closing_gracefully"}
        workers = frozenset(str(ws.name) for ws in scheduler.workers.values()) - leaving - self._retiring
        clients = sum(1 for client in scheduler.clients if client != FIRE_AND_FORGET_CLIENT)
        return Snapshot(
            target=scheduler.adaptive_target(),
            workers=workers,
            closable=tuple(str(name) for name in scheduler.workers_to_close(attribute="name")),
            ceiling=self.ceiling() if self.ceiling is not None else None,
            idle=self.idle.observe(busy=has_work(scheduler), clients=clients),
            held=self.held,
        )

    async def step(self) -> Decision:
        """One decision, applied: request, retire (in the background), or stop when idle with no worker left."""
        await self._check_boot_failures()
        snapshot = self.snapshot()
        decision = self.core.decide(snapshot)
        self._report(snapshot, decision)
        if decision.launch:
            await self._launch(decision)
        if decision.withdraw:
            await self._withdraw(decision)
        if decision.retire:
            self._retiring |= set(decision.retire)
            task = asyncio.create_task(self._retire(decision))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif snapshot.idle and not self.scheduler.workers and not self._retiring and not decision.coming:
            await self._stop_when_idle(snapshot.idle)
        return decision

    def state(self) -> dict[str, Any]:
        """What ``daskfleet status`` shows (conventions.SCALING_STATE_HANDLER): idle or active, and the last decision."""
        decision = self.last_decision
        return {
            "state": "stopping" if self.stopping else ("idle" if self._idle_reason else "active"),
            "idle_reason": self._idle_reason,
            "desired": decision.desired if decision else None,
            "reason": decision.reason if decision else None,
            "workers": len(self.scheduler.workers) if self.scheduler is not None else 0,
            "min_workers": self.policy.min_workers,
            "max_workers": self.policy.max_workers,
            "idle_timeout_s": self.policy.idle_timeout_s,
            "no_client_timeout_s": self.policy.no_client_timeout_s,
            "held": self.held,
            "boot_failures": len(self._failures_seen),
        }

    async def _check_boot_failures(self) -> None:
        """Read the backend's boot failures (not more often than FAILURE_CHECK_S); audit new ones and hold changes."""
        now = self.clock()
        every = min(FAILURE_CHECK_S, 6 * self.policy.interval_s)
        if self.policy.boot_failure_limit == 0 or (
                self._failures_checked is not None and now - self._failures_checked < every):
            return
        self._failures_checked = now
        since = time() - self.policy.boot_failure_window_s
        try:
            seen = await asyncio.to_thread(self.backend.launch_failures, since)
        except DaskfleetError as exc:
            logger.warning("scaling: cannot read boot failures from %s: %s", self.backend.describe(), exc)
            return
        for failure in seen.failures:
            if (failure.worker, failure.at) not in self._failures_seen:
                self._failures_seen.add((failure.worker, failure.at))
                self.audit.record("worker-boot-failed", worker=failure.worker, version=failure.version,
                                  code=failure.code, line=failure.line)
        held = launch_hold(seen, time(), limit=self.policy.boot_failure_limit, window_s=self.policy.boot_failure_window_s)
        if held and not self.held:
            logger.warning("scaling: %s", held)
            self.audit.record("worker-launches-held", version=seen.current, reason=held)
        elif self.held and not held:
            self.audit.record("worker-launches-resumed", version=seen.current)
        self.held = held

    def _report(self, snapshot: Snapshot, decision: Decision) -> None:
        previous = self.last_decision
        self.last_decision = decision
        for observer in self.observers:
            observer(decision)
        if previous is None or previous.reason != decision.reason:
            logger.info("scaling: %s", decision.reason)
        if snapshot.idle and self._idle_reason is None:
            self.audit.record("cluster-idle", reason=snapshot.idle, workers=len(snapshot.workers))
        self._idle_reason = snapshot.idle

    async def _launch(self, decision: Decision) -> None:
        try:
            requested = await asyncio.to_thread(self.backend.launch, decision.launch)
        except DaskfleetError as exc:
            self.core.fell_short(decision.launch)
            self._failed("launch", exc, count=decision.launch)
            return
        self.core.fell_short(decision.launch - requested)
        if not requested:
            return
        self.audit.record("workers-requested", count=requested, desired=decision.desired, reason=decision.reason)

    async def _withdraw(self, decision: Decision) -> None:
        try:
            await asyncio.to_thread(self.backend.withdraw, decision.withdraw)
        except DaskfleetError as exc:
            self._failed("withdraw", exc, count=decision.withdraw)
            return
        self.audit.record("workers-withdrawn", count=decision.withdraw, reason=decision.reason)

    async def _retire(self, decision: Decision) -> None:
        """Retire the chosen workers (their data moves), then let the backend end their processes or instances."""
        names = list(decision.retire)
        scheduler = self.scheduler
        self.audit.record("workers-retiring", workers=names, desired=decision.desired, reason=decision.reason)
        try:
            retired = await scheduler.retire_workers(
                names=names, close_workers=True, remove=True, stimulus_id=f"daskfleet-scaling-{time()}",
            )
            gone = {str(info.get("name")) for info in retired.values()}
            stuck = [name for name in names if name not in gone]
            if stuck and decision.desired == 0:
                await self._close_without_recipients(stuck)
                gone |= set(stuck)
            elif stuck:
                self.audit.record("workers-kept", workers=stuck, reason="their data could not move to another worker")
            if gone:
                try:
                    await asyncio.to_thread(self.backend.remove, sorted(gone))
                except DaskfleetError as exc:
                    self._failed("remove", exc, workers=sorted(gone))
                else:
                    self.audit.record("workers-retired", workers=sorted(gone), via=self.backend.describe())
        finally:
            self._retiring -= set(names)

    async def _close_without_recipients(self, names: list[str]) -> None:
        """Going to zero workers: data held only on them has nowhere to move, so they close anyway, gracefully."""
        by_name = {str(ws.name): address for address, ws in self.scheduler.workers.items()}
        for name in names:
            if name in by_name:
                await self.scheduler.remove_worker(
                    by_name[name], close=True, expected=True, stimulus_id=f"daskfleet-scaling-zero-{time()}",
                )
        self.audit.record("workers-closed", workers=names, reason="scaling to zero: no other worker to take their data")

    async def _stop_when_idle(self, reason: str) -> None:
        now = self.clock()
        if self._last_stop_attempt is not None and now - self._last_stop_attempt < STOP_RETRY_S:
            return
        self._last_stop_attempt = now
        try:
            done = await asyncio.to_thread(self.backend.stop_scheduler)
        except DaskfleetError as exc:
            self._failed("stop-scheduler", exc)
            return
        if done is None:
            return
        self.stopping = True
        self.audit.record("scheduler-capacity-zero", detail=done)
        self.audit.record("scheduler-stopping", reason=reason)
        logger.warning("cluster idle (%s): no worker left and the scheduler's capacity is 0; stopping", reason)
        asyncio.get_running_loop().create_task(self.scheduler.close(reason=f"idle: {reason}"))

    def _failed(self, action: str, error: DaskfleetError, **fields: Any) -> None:
        logger.warning("scaling: %s through %s failed: %s", action, self.backend.describe(), error)
        self.audit.record("scaling-failed", action=action, error=str(error), **fields)


def has_work(scheduler: Any) -> bool:
    """Whether any task is waiting, queued, without a worker, or running."""
    if scheduler.queued or scheduler.unrunnable:
        return True
    return any(group.states.get(state) for group in scheduler.task_groups.values() for state in WORK_STATES)


def install(
    scheduler: Any,
    policy: ScalingSpec | None,
    make_backend: Callable[[], WorkerBackend] | None,
    audit: AuditLog,
    *,
    ceiling: Ceiling | None = None,
) -> ScalingPlugin | None:
    """Add the scaling plugin before the scheduler starts; None (logged) without a policy or a backend.

    ``make_backend`` is called only when the spec asks for scaling; ``ceiling`` is consulted at every decision.
    """
    if policy is None:
        logger.info("the spec has no scaling section: this scheduler sizes no workers")
        return None
    if make_backend is None:
        logger.warning("the spec has a scaling section, but this node has no worker backend: scaling is off")
        return None
    plugin = ScalingPlugin(policy, make_backend(), audit, ceiling)
    scheduler.add_plugin(plugin, name=PLUGIN_NAME)
    return plugin
