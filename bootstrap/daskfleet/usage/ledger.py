"""The cluster's ledger: who used what, from task transitions, on an injectable clock (pure: no scheduler here).

Per user: tasks run, compute seconds (the tasks' own run time), and the worker seconds and cost
charged. Each worker's wall-clock time is split among the users whose tasks were processing on
it, in proportion to how many of each user's tasks were; time with no task there is idle, and is
charged at each ``tick`` to the users whose clients were connected in that interval (keeping the
cluster up), else to ``idle``. So the users' figures (with ``idle``) add up to the cluster's.

With ``prefixes_per_user`` the same figures are also kept per task prefix (distributed's
``TaskPrefix``: the function, e.g. ``read_parquet``) of each user, charged by the same rule one
level down: worker time is split among the (user, prefix) pairs processing, and a user's share
of idle time is their ``(idle)`` prefix. So a user's prefixes add up to the user. The first
``prefixes_per_user`` prefixes a user runs keep their own figures for the ledger's life; later
ones count as ``(other)``. A prefix never loses its place, so its figures only grow (Prometheus
counters), and a graph of a million distinct names adds one entry, ``(other)``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace

from ..conventions import IDLE_PREFIX, OTHER_PREFIX
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
    prefixes: Mapping[str, Mapping[str, UserUsage]] = field(default_factory=dict)  # user -> prefix -> figures

    @property
    def cost_usd(self) -> float:
        return sum(usage.cost_usd for usage in self.users.values()) + self.scheduler_cost_usd


@dataclass
class _Worker:
    instance_type: str
    purchase: str
    usd_per_s: float
    since: float
    running: Counter = field(default_factory=Counter)  # account -> its tasks processing here
    total: int = 0                                     # tasks processing here
    idle_pending: float = 0.0                         # idle seconds not yet charged


class _Account:
    """Running figures of a user, or of one prefix of a user (``parent``: the user's own, also charged).

    Mutable: the ledger adds to them on every task event; hashed by identity (a worker counts its tasks per account).
    """

    __slots__ = ("user", "parent", "tasks", "compute_s", "worker_s", "cost_usd")

    def __init__(self, user: str, parent: _Account | None = None) -> None:
        self.user, self.parent = user, parent
        self.tasks, self.compute_s, self.worker_s, self.cost_usd = 0, 0.0, 0.0, 0.0

    def count(self, tasks: int, compute_s: float) -> None:
        self.tasks += tasks
        self.compute_s += compute_s
        if self.parent is not None:
            self.parent.count(tasks, compute_s)

    def charge(self, worker_s: float, cost_usd: float) -> None:
        self.worker_s += worker_s
        self.cost_usd += cost_usd
        if self.parent is not None:
            self.parent.charge(worker_s, cost_usd)

    def frozen(self) -> UserUsage:
        return UserUsage(self.tasks, self.compute_s, self.worker_s, self.cost_usd)


class _Prefixes:
    """One user's per-prefix accounts: the first ``limit`` prefixes get their own, every later one ``(other)``."""

    __slots__ = ("owner", "limit", "accounts", "named")

    def __init__(self, owner: _Account, limit: int) -> None:
        self.owner, self.limit = owner, limit
        self.accounts: dict[str, _Account] = {}
        self.named = 0  # accounts of real prefixes (not the ledger's own labels)

    def account(self, prefix: str) -> _Account:
        account = self.accounts.get(prefix)
        if account is not None:
            return account
        if prefix in (OTHER_PREFIX, IDLE_PREFIX) or self.named >= self.limit:
            return self.reserved(OTHER_PREFIX)  # a key naming one of the labels counts as (other)
        self.named += 1
        account = self.accounts[prefix] = _Account(self.owner.user, self.owner)
        return account

    def reserved(self, label: str) -> _Account:
        account = self.accounts.get(label)
        if account is None:
            account = self.accounts[label] = _Account(self.owner.user, self.owner)
        return account


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

    def __init__(
        self, prices: Mapping[str, InstancePrice], clock: Clock, *, scheduler_usd_per_s: float = 0.0,
        prefixes_per_user: int = 0,
    ):
        """``prefixes_per_user``: how many prefixes of each user keep their own figures; 0: per-user figures only."""
        self.prices = dict(prices)
        self.clock = clock
        self.scheduler_usd_per_s = scheduler_usd_per_s
        self.prefixes_per_user = prefixes_per_user
        self._users: dict[str, _Account] = {}
        self._prefixes: dict[str, _Prefixes] = {}
        self._worker_s: Counter = Counter()
        self._idle_s = 0.0
        self._scheduler_s = 0.0
        self._workers: dict[str, _Worker] = {}
        self._running: dict[Hashable, tuple[str, _Account, float]] = {}  # task key -> (worker, account, since)
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

    def task_started(self, key: Hashable, user: str, worker: str, prefix: str | None = None) -> None:
        """``key`` of ``user`` is processing on ``worker``; ``prefix`` is its TaskPrefix (kept with prefix accounting)."""
        state = self._workers.get(worker)
        if state is None:
            return
        now = self.clock()
        self._advance(state, now)
        account = self._book(user).account(prefix or OTHER_PREFIX) if self.prefixes_per_user else self._account(user)
        state.running[account] += 1
        state.total += 1
        self._running[key] = (worker, account, now)

    def task_stopped(self, key: Hashable, compute_s: float | None = None) -> None:
        """The task left processing; with ``compute_s`` it ran to an end (result or error) and counts."""
        where = self._release(key)
        if where is not None and compute_s is not None:
            self._count(where[0], 1, compute_s, where[2])

    def task_left(self, key: Hashable, ran_s: float | None) -> None:
        """The task left processing without an end of its own (cancelled, retried after an error, lost with its
        worker): its compute still counts, ``ran_s`` as its worker last reported it, at most the time it was
        processing (None: that whole time, e.g. its worker is gone), but it is no task that ran."""
        where = self._release(key)
        if where is None:
            return
        account, since, now = where
        processing = max(now - since, 0.0)
        self._count(account, 0, processing if ran_s is None else min(max(ran_s, 0.0), processing), now)

    def worker_of(self, key: Hashable) -> str | None:
        """The worker a task is processing on, as the ledger knows it (None: not processing)."""
        where = self._running.get(key)
        return where[0] if where is not None else None

    def _release(self, key: Hashable) -> tuple[_Account, float, float] | None:
        """Settle the task's worker and take the task off it: (account, processing since, now), or None."""
        where = self._running.pop(key, None)
        if where is None:
            return None
        worker, account, since = where
        now = self.clock()
        state = self._workers.get(worker)
        if state is not None:
            self._advance(state, now)
            state.running[account] -= 1
            state.total -= 1
            if state.running[account] <= 0:
                del state.running[account]
        return account, since, now

    def _count(self, account: _Account, tasks: int, compute_s: float, now: float) -> None:
        compute_s = max(compute_s, 0.0)
        self._roll_day(now)
        account.count(tasks, compute_s)
        self._day_compute[account.user] += compute_s

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
        prefixes = {user: {prefix: account.frozen() for prefix, account in book.accounts.items()}
                    for user, book in self._prefixes.items()}
        return Totals(users, dict(self._worker_s), self._idle_s, self._scheduler_s, self._scheduler_s * self.scheduler_usd_per_s,
                      prefixes)

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
        return sum(1 for state in self._workers.values() if any(account.user == user for account in state.running))

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
        for account, count in state.running.items():
            share = elapsed * count / total
            self._charge(account, share, share * state.usd_per_s, now)

    def _charge_idle(self, state: _Worker, payers: list[str]) -> None:
        if state.idle_pending <= 0:
            return
        who = payers or [IDLE]
        share = state.idle_pending / len(who)
        for user in who:
            account = self._book(user).reserved(IDLE_PREFIX) if self.prefixes_per_user else self._account(user)
            self._charge(account, share, share * state.usd_per_s, state.since)
        state.idle_pending = 0.0

    def _account(self, user: str) -> _Account:
        account = self._users.get(user)
        if account is None:
            account = self._users[user] = _Account(user)
        return account

    def _book(self, user: str) -> _Prefixes:
        book = self._prefixes.get(user)
        if book is None:
            book = self._prefixes[user] = _Prefixes(self._account(user), self.prefixes_per_user)
        return book

    def _charge(self, account: _Account, worker_s: float, cost_usd: float, now: float) -> None:
        account.charge(worker_s, cost_usd)
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


def _changed(later: Mapping[str, UserUsage], earlier: Mapping[str, UserUsage]) -> dict[str, UserUsage]:
    """Per name, what changed between two snapshots (names with no change left out)."""
    changes = {name: usage.minus(earlier.get(name, UserUsage())) for name, usage in later.items()}
    return {name: change for name, change in changes.items() if change != UserUsage()}


def difference(later: Totals, earlier: Totals) -> Totals:
    """What happened between two snapshots of one ledger."""
    workers = {kind: seconds - earlier.worker_s.get(kind, 0.0) for kind, seconds in later.worker_s.items()}
    prefixes = {user: _changed(books, earlier.prefixes.get(user, {})) for user, books in later.prefixes.items()}
    return replace(
        later, users=_changed(later.users, earlier.users), worker_s={k: v for k, v in workers.items() if v},
        idle_s=later.idle_s - earlier.idle_s, scheduler_s=later.scheduler_s - earlier.scheduler_s,
        scheduler_cost_usd=later.scheduler_cost_usd - earlier.scheduler_cost_usd,
        prefixes={user: changes for user, changes in prefixes.items() if changes},
    )
