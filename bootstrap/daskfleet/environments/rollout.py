"""The scheduler's side of a published environment: follow the pointer and roll the workers onto it.

``RolloutPlugin`` polls where the node's source says the cluster's environment is published,
and for each new publication drives ``roll.RollCore``: it widens what the scheduler's guard
accepts to the published and the replaced fingerprints, tells workers to switch a few at a time
(each retires, so its data moves, and restarts into the new environment), restarts the
scheduler first when core packages change (announced to every client and audited), and narrows
what is accepted again once every worker has switched. ``daskfleet env status`` reads its
progress through ``conventions.ENV_ROLL_HANDLER``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from time import monotonic
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .. import conventions
from ..errors import DaskfleetError
from ..notices import tell_all_clients
from ..trust.audit import AuditLog
from ..trust.gatekeeper import FINGERPRINT_KEY
from ..trust.guards import SchedulerGuard
from .policy import RolloutPolicy
from .published import PublishedEnvironment
from .roll import RollCore, RollTarget

logger = logging.getLogger("daskfleet.environments")

PLUGIN_NAME = "daskfleet-rollout"
#: What a worker that could not install the published environment reports at registration.
ENV_ERROR_KEY = "daskfleet-env-error"
#: The worker operation a scheduler calls to make a worker switch environments (scheduler only).
SWITCH_OP = conventions.ENV_SWITCH_OP


class RolloutPlugin(SchedulerPlugin):
    """Follows the published environment from inside the scheduler; ``restarting`` says it asked to restart."""

    name = PLUGIN_NAME

    def __init__(
        self,
        published: Callable[[], PublishedEnvironment | None],
        platform: str,
        own_fingerprint: str,
        guard: SchedulerGuard,
        audit: AuditLog,
        settings: RolloutPolicy,
        *,
        expect_back: Callable[[int], None] | None = None,
        own_error: str | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.published = published
        self.platform = platform
        self.own_fingerprint = own_fingerprint
        self.guard = guard
        self.audit = audit
        self.settings = settings
        self.expect_back = expect_back
        #: Why this scheduler's own environment step failed, if it did: it must not restart into a loop.
        self.own_error = own_error
        self.core = RollCore(settings.max_fraction, settings.switch_timeout_s, clock or monotonic)
        self.base = guard.gatekeeper
        self.restarting = False
        self.reason = "no environment published"
        self.scheduler: Any = None
        self._loop: asyncio.Task | None = None
        self._names: dict[str, str] = {}
        self._changed = asyncio.Event()

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._loop = asyncio.create_task(self._run())

    async def before_close(self) -> None:
        if self._loop is not None and self._loop is not asyncio.current_task():
            self._loop.cancel()

    def add_worker(self, scheduler: Any, worker: str) -> None:
        state = scheduler.workers.get(worker)
        if state is None:
            return
        self._names[worker] = str(state.name)
        self._changed.set()  # a worker came back: the next one may switch now
        error = (state.extra or {}).get(ENV_ERROR_KEY)
        if error:
            self.core.note_failure(str(state.name), str(error))
            self.audit.record("environment-install-failed", worker=str(state.name), detail=str(error))
            logger.warning("worker %s could not install the published environment: %s", state.name, error)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        name = self._names.pop(worker, None)
        if name is not None:
            self.core.note_left(name)
            self._changed.set()

    def workers(self) -> dict[str, str]:
        return {str(ws.name): str((ws.extra or {}).get(FINGERPRINT_KEY)) for ws in self.scheduler.workers.values()}

    def state(self) -> dict[str, Any]:
        """What ``daskfleet env status`` shows: the target, what each worker runs, and how far the roll got."""
        progress = self.core.progress(self.workers() if self.scheduler else {}, self.reason)
        return {**progress.as_dict(), "scheduler": self.own_fingerprint, "accepted": sorted(
            {self.guard.gatekeeper.expected_fingerprint, *self.guard.gatekeeper.also_accepted})}

    async def _run(self) -> None:
        """A step every poll, and one as soon as a worker comes or goes."""
        while True:
            self._changed.clear()
            try:
                await self.step()
            except DaskfleetError as exc:  # the pointer cannot be read now: keep the current environment
                logger.warning("published environment: %s", exc)
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=self.settings.poll_s)
            except TimeoutError:
                pass

    async def step(self) -> None:
        published = await asyncio.to_thread(self.published)
        if published is not None:
            self._follow(published)
        plan = self.core.decide(self.own_fingerprint, self.workers())
        previous, self.reason = self.reason, plan.reason
        self._accept(plan.accepted)
        if plan.restart_scheduler and not self.restarting:
            if self.own_error:
                self.reason = f"{plan.reason}, but the scheduler could not install it ({self.own_error})"
                if previous != self.reason:  # audited once, not at every poll
                    self.audit.record("scheduler-restart-skipped", reason=self.own_error)
                return
            await self._restart_scheduler(plan.reason)
            return
        for name in plan.switch:
            await self._switch(name)

    def _follow(self, published: PublishedEnvironment) -> None:
        target = published.fingerprint_for(self.platform)
        if self.core.target is not None and self.core.target.fingerprint == target:
            return
        if self.core.target is None and target == self.own_fingerprint and not published.replaces:
            self.core.begin(RollTarget(target, frozenset()))
            return
        replaces = frozenset(published.replaces_for(self.platform)) - {target}
        if self.core.target is not None:
            replaces |= {self.core.target.fingerprint} - {target}
        self.core.begin(RollTarget(target, replaces, tuple(published.core_packages)))
        self.audit.record(
            "environment-published", fingerprint=target, replaces=sorted(replaces), by=published.published_by,
            core_packages=list(published.core_packages),
        )
        logger.info("environment %s published by %s: rolling the workers onto it", target, published.published_by)

    def _accept(self, accepted: frozenset[str]) -> None:
        primary = self.core.target.fingerprint if self.core.target else self.base.expected_fingerprint
        current = self.guard.gatekeeper
        also = accepted - {primary}
        if current.expected_fingerprint == primary and current.also_accepted == also:
            return  # at every poll, nothing changed: keep the guard's gatekeeper without building another
        self.guard.gatekeeper = dataclasses.replace(self.base, expected_fingerprint=primary, also_accepted=also)

    async def _switch(self, name: str) -> None:
        address = next((address for address, ws in self.scheduler.workers.items() if str(ws.name) == name), None)
        if address is None:
            return
        self.audit.record("environment-switch", worker=name, fingerprint=self.core.target.fingerprint)
        if self.expect_back is not None:
            self.expect_back(1)  # it comes back by itself: the scaler must not replace it meanwhile
        try:
            await getattr(self.scheduler.rpc(address), SWITCH_OP)()
        except (OSError, asyncio.TimeoutError) as exc:
            self.core.note_failure(name, f"could not be told to switch ({exc})")

    async def _restart_scheduler(self, reason: str) -> None:
        self.restarting = True
        text = (f"daskfleet: the cluster's environment changes ({reason}); the scheduler restarts now. Work in "
                "flight is lost; reconnect in a minute.")
        tell_all_clients(self.scheduler, text)
        self.audit.record("scheduler-restart", reason=reason, fingerprint=self.core.target.fingerprint)
        logger.warning(text)
        await asyncio.sleep(1.0)  # let the announcement reach the clients
        # Closed from its own task: closing cancels this loop, which must not cancel the close.
        self._closing = asyncio.ensure_future(self.scheduler.close(reason="daskfleet: environment switch"))


def install(
    scheduler: Any,
    guard: SchedulerGuard,
    audit: AuditLog,
    published: Callable[[], PublishedEnvironment | None],
    *,
    platform: str,
    own_fingerprint: str,
    settings: RolloutPolicy = RolloutPolicy(),
    expect_back: Callable[[int], None] | None = None,
    own_error: str | None = None,
) -> RolloutPlugin:
    """Add the rollout plugin and its status operation before the scheduler starts."""
    plugin = RolloutPlugin(published, platform, own_fingerprint, guard, audit, settings, expect_back=expect_back,
                           own_error=own_error)
    scheduler.add_plugin(plugin, name=PLUGIN_NAME)
    guard.add_handler(conventions.ENV_ROLL_HANDLER, plugin.state)
    return plugin
