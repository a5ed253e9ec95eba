"""The cluster's ledger: who used what, from task transitions, on an injectable clock (pure: no scheduler here).

Per user: tasks run, compute seconds (the tasks' own run time), and the worker seconds and cost
charged. Each worker's wall-clock time is split among the users whose tasks were processing on
it, in proportion to how many of each user's tasks were; time with no task there is idle, and is
charged at each ``tick`` to the users whose clients were connected in that interval (keeping the
cluster up), else to ``idle``. So the users' figures (with ``idle``) add up to the cluster's.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace

from .policy import IDLE, InstancePrice

Clock = Callable[[], float]


@dataclass(frozen=True)
class UserUsage:
    tasks: int = 0
    compute_s: float = 0.0
    worker_s: float = 0.0
    cost_usd: float = 0.0

    def plus(self, other: UserUsage) -> UserUsage:
        return UserUsage(self.tasks + other.tasks, self.compute_s + other.compute_s,
                         self.worker_s + other.worker_s, self.cost_usd + other.cost_usd)

    def minus(self, other: UserUsage) -> UserUsage:
        return UserUsage(self.tasks - other.tasks, self.compute_s - other.compute_s,
                         self.worker_s - other.worker_s, self.cost_usd - other.cost_usd)


@dataclass(frozen=True)
class Totals:
    """Cumulative figures since the ledger started."""

    users: Mapping[str, UserUsage]
    worker_s: Mapping[tuple[str, str], float]  # (instance type, purchase) -> worker seconds
    idle_s: float                              # worker seconds with no task running
    scheduler_s: float
    scheduler_cost_usd: float

    @property
    def cost_usd(self) -> float:
        return sum(usage.cost_usd for usage in self.users.values()) + self.scheduler_cost_usd


@dataclass
class _Worker:
    instance_type: str
    purchase: str
    usd_per_s: float
    since: float
    running: Counter = field(default_factory=Counter)  # user -> tasks processing here
    total: int = 0                                     # tasks processing here
    idle_pending: float = 0.0                         # idle seconds not yet charged


class _Account:
    """A user's running figures (mutable: the ledger adds to them on every task event)."""

    __slots__ = ("tasks", "compute_s", "worker_s", "cost_usd")

    def __init__(self) -> None:
        self.tasks, self.compute_s, self.worker_s, self.cost_usd = 0, 0.0, 0.0, 0.0

    def frozen(self) -> UserUsage:
        return UserUsage(self.tasks, self.compute_s, self.worker_s, self.cost_usd)


def utc_day(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).date()


def utc_month(now: float) -> tuple[int, int]:
    day = utc_day(now)
    return day.year, day.month


def month_start(now: float) -> dt.datetime:
    """The first instant of this UTC month: where this month's spend (and ``usage --since``'s default) begins."""
    year, month = utc_month(now)
    return dt.datetime(year, month, 1, tzinfo=dt.timezone.utc)


def next_month_start(now: float) -> dt.datetime:
    """The first instant of the next UTC month: when a month's spend (and the budget stop) resets."""
    year, month = utc_month(now)
    return dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.timezone.utc)


def next_day_start(now: float) -> dt.datetime:
    """The next UTC midnight: when a day's compute hours reset."""
    return dt.datetime.combine(utc_day(now) + dt.timedelta(days=1), dt.time(), dt.timezone.utc)


class Ledger:
    """Per-user usage and cost; every method reads the time from ``clock`` (seconds since the epoch)."""

    def __init__(self, prices: Mapping[str, InstancePrice], clock: Clock, *, scheduler_usd_per_s: float = 0.0):
        self.prices = dict(prices)
        self.clock = clock
        self.scheduler_usd_per_s = scheduler_usd_per_s
        self._users: dict[str, _Account] = {}
        self._worker_s: Counter = Counter()
        self._idle_s = 0.0
        self._scheduler_s = 0.0
        self._workers: dict[str, _Worker] = {}
        self._running: dict[Hashable, tuple[str, str]] = {}  # task key -> (worker, user)
        self._pending: Counter = Counter()                   # user -> tasks waiting or running
        self._connected: Counter = Counter()                 # user -> connected clients
        self._seen: set[str] = set()                         # users connected during this interval
        self._last_tick = clock()
        self._month_ends = next_month_start(self._last_tick).timestamp()
        self._month_cost = 0.0
        self._day_ends = next_day_start(self._last_tick).timestamp()
        self._day_compute: Counter = Counter()

    # --- what happens -----------------------------------------------------------------------

    def worker_joined(self, worker: str, instance_type: str, purchase: str) -> None:
        price = self.prices.get(instance_type)
        usd_per_s = price.per_second(purchase) if price else 0.0
        self._workers[worker] = _Worker(instance_type, purchase, usd_per_s, self.clock())

    def worker_left(self, worker: str) -> None:
        state = self._workers.get(worker)
        if state is None:
            return
        self._advance(state, self.clock())
        self._charge_idle(state, self._payers())
        del self._workers[worker]

    def client_connected(self, user: str) -> None:
        self._connected[user] += 1
        self._seen.add(user)

    def client_disconnected(self, user: str) -> None:
        if self._connected[user] > 0:
            self._connected[user] -= 1
        if self._connected[user] == 0:
            del self._connected[user]

    def work_added(self, user: str) -> None:
        """One of ``user``'s tasks now waits or runs (it keeps the user among those with work)."""
        self._pending[user] += 1

    def work_removed(self, user: str) -> None:
        if self._pending[user] > 1:
            self._pending[user] -= 1
        else:
            self._pending.pop(user, None)

    def task_started(self, key: Hashable, user: str, worker: str) -> None:
        state = self._workers.get(worker)
        if state is None:
            return
        self._advance(state, self.clock())
        state.running[user] += 1
        state.total += 1
        self._running[key] = (worker, user)

    def task_stopped(self, key: Hashable, compute_s: float | None = None) -> None:
        """The task left processing; with ``compute_s`` it ran to an end (result or error) and counts."""
        where = self._running.pop(key, None)
        if where is None:
            return
        worker, user = where
        now = self.clock()
        state = self._workers.get(worker)
        if state is not None:
            self._advance(state, now)
            state.running[user] -= 1
            state.total -= 1
            if state.running[user] <= 0:
                del state.running[user]
        if compute_s is not None:
            self._roll_day(now)
            account = self._account(user)
            account.tasks += 1
            account.compute_s += max(compute_s, 0.0)
            self._day_compute[user] += max(compute_s, 0.0)

    def tick(self) -> None:
        """Settle every worker up to now and charge the interval's idle time."""
        now = self.clock()
        payers = self._payers()
        for state in self._workers.values():
            self._advance(state, now)
            self._charge_idle(state, payers)
        elapsed = max(now - self._last_tick, 0.0)
        self._scheduler_s += elapsed
        self._roll_month(now)
        self._month_cost += elapsed * self.scheduler_usd_per_s
        self._last_tick = now
        self._seen = set(self._connected)

    def restore(self, month_cost_usd: float, day_compute_s: Mapping[str, float]) -> None:
        """Carry this month's spend and today's compute from before this ledger (e.g. an earlier scheduler)."""
        self._month_cost += month_cost_usd
        self._day_compute.update(day_compute_s)

    # --- what it says -----------------------------------------------------------------------

    def totals(self) -> Totals:
        users = {user: account.frozen() for user, account in self._users.items()}
        return Totals(users, dict(self._worker_s), self._idle_s, self._scheduler_s, self._scheduler_s * self.scheduler_usd_per_s)

    def month_cost_usd(self) -> float:
        """This UTC month's spend so far (workers and scheduler), including what was restored."""
        self._roll_month(self.clock())
        return self._month_cost

    def rate_usd_per_s(self) -> float:
        """What the cluster costs per second right now: its workers and the scheduler."""
        return sum(state.usd_per_s for state in self._workers.values()) + self.scheduler_usd_per_s

    def compute_today_s(self, user: str) -> float:
        self._roll_day(self.clock())
        return self._day_compute[user]

    def users_with_work(self) -> set[str]:
        return set(self._pending)

    def workers_held(self, user: str) -> int:
        """Workers on which ``user`` has tasks processing now."""
        return sum(1 for state in self._workers.values() if state.running.get(user))

    # --- bookkeeping ------------------------------------------------------------------------

    def _payers(self) -> list[str]:
        return sorted(self._seen | set(self._connected))

    def _advance(self, state: _Worker, now: float) -> None:
        elapsed = now - state.since
        if elapsed <= 0:
            return
        state.since = now
        self._worker_s[(state.instance_type, state.purchase)] += elapsed
        total = state.total
        if total <= 0:
            state.idle_pending += elapsed
            self._idle_s += elapsed
            return
        for user, count in state.running.items():
            share = elapsed * count / total
            self._charge(user, share, share * state.usd_per_s, now)

    def _charge_idle(self, state: _Worker, payers: list[str]) -> None:
        if state.idle_pending <= 0:
            return
        who = payers or [IDLE]
        share = state.idle_pending / len(who)
        for user in who:
            self._charge(user, share, share * state.usd_per_s, state.since)
        state.idle_pending = 0.0

    def _account(self, user: str) -> _Account:
        account = self._users.get(user)
        if account is None:
            account = self._users[user] = _Account()
        return account

    def _charge(self, user: str, worker_s: float, cost_usd: float, now: float) -> None:
        account = self._account(user)
        account.worker_s += worker_s
        account.cost_usd += cost_usd
        if cost_usd:
            self._roll_month(now)
            self._month_cost += cost_usd

    def _roll_month(self, now: float) -> None:
        if now >= self._month_ends:
            self._month_ends, self._month_cost = next_month_start(now).timestamp(), 0.0

    def _roll_day(self, now: float) -> None:
        if now >= self._day_ends:
            self._day_ends = next_day_start(now).timestamp()
            self._day_compute.clear()


def difference(later: Totals, earlier: Totals) -> Totals:
    """What happened between two snapshots of one ledger."""
    users = {user: usage.minus(earlier.users.get(user, UserUsage())) for user, usage in later.users.items()}
    workers = {kind: seconds - earlier.worker_s.get(kind, 0.0) for kind, seconds in later.worker_s.items()}
    return replace(
        later, users={u: v for u, v in users.items() if v != UserUsage()}, worker_s={k: v for k, v in workers.items() if v},
        idle_s=later.idle_s - earlier.idle_s, scheduler_s=later.scheduler_s - earlier.scheduler_s,
        scheduler_cost_usd=later.scheduler_cost_usd - earlier.scheduler_cost_usd,
    )
