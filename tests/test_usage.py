"""The pure parts of usage accounting, on a fake clock: ledger, limits, budget stop, records and the policy's text forms."""

from __future__ import annotations

import datetime as dt
import json
import re
from types import SimpleNamespace

import pytest

from daskfleet.conventions import IDLE_PREFIX, OTHER_PREFIX, UNRECORDED_PREFIX
from daskfleet.usage.budget import BudgetPolicy, BudgetStop
from daskfleet.usage.commands import prefix_report, render_prefix_table
from daskfleet.usage.ledger import Ledger, difference, month_start, next_day_start, next_month_start
from daskfleet.usage.limits import Limits
from daskfleet.usage.policy import IDLE, InstancePrice, UsagePolicy, policy_from_entries
from daskfleet.usage.plugin import UNKNOWN_OWNER, UsagePlugin
from daskfleet.usage.profiles import most_sampled, profile_window
from daskfleet.usage.records import carried, make_record, parse_lines, summarize

#: 2026-11-20 12:00 UTC
NOON = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc).timestamp()
PRICES = {"m7i.xlarge": InstancePrice(on_demand=3.6, spot=1.8)}  # 0.1 and 0.05 cents a second


class FakeClock:
    def __init__(self, now: float = NOON):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def ledger_with_two_workers(clock):
    ledger = Ledger(PRICES, clock, scheduler_usd_per_s=0.0001)
    ledger.worker_joined("w1", "m7i.xlarge", "on-demand")
    ledger.worker_joined("w2", "m7i.xlarge", "spot")
    return ledger


def test_worker_time_is_split_among_the_users_whose_tasks_ran_there(clock):
    ledger = ledger_with_two_workers(clock)
    ledger.client_connected("alice")
    ledger.task_started("a1", "alice", "w1")
    ledger.task_started("b1", "bob", "w1")
    clock.advance(10)
    ledger.task_stopped("a1", compute_s=9.5)
    clock.advance(10)
    ledger.task_stopped("b1", compute_s=19.0)
    ledger.tick()
    users = ledger.totals().users
    # w1: 10 s shared equally, then 10 s bob alone; w2 idle 20 s, charged to alice (connected), not bob.
    assert users["alice"].worker_s == pytest.approx(5 + 20)
    assert users["bob"].worker_s == pytest.approx(5 + 10)
    assert (users["alice"].tasks, users["alice"].compute_s, users["bob"].compute_s) == (1, 9.5, 19.0)
    assert users["alice"].cost_usd == pytest.approx(5 * 0.001 + 20 * 0.0005)
    assert users["bob"].cost_usd == pytest.approx(15 * 0.001)
    assert IDLE not in users


def test_idle_time_with_nobody_connected_is_charged_to_idle_and_everything_adds_up(clock):
    ledger = ledger_with_two_workers(clock)
    ledger.task_started("a1", "alice", "w1")
    clock.advance(30)
    ledger.task_stopped("a1", compute_s=29.0)
    clock.advance(30)
    ledger.worker_left("w2")
    clock.advance(15)
    ledger.tick()
    totals = ledger.totals()
    assert totals.users[IDLE].worker_s == pytest.approx(30 + 15 + 60)  # w1 after the task, w2 until it left
    assert sum(u.worker_s for u in totals.users.values()) == pytest.approx(sum(totals.worker_s.values()))
    assert totals.worker_s == {("m7i.xlarge", "on-demand"): 75.0, ("m7i.xlarge", "spot"): 60.0}
    assert totals.idle_s == pytest.approx(105)
    assert totals.cost_usd == pytest.approx(sum(u.cost_usd for u in totals.users.values()) + 75 * 0.0001)


def test_users_who_connected_during_an_interval_share_its_idle_time(clock):
    ledger = Ledger(PRICES, clock)
    ledger.worker_joined("w1", "m7i.xlarge", "on-demand")
    ledger.client_connected("alice")
    ledger.client_connected("bob")
    ledger.client_disconnected("bob")
    clock.advance(20)
    ledger.tick()
    clock.advance(20)
    ledger.tick()
    users = ledger.totals().users
    assert users["bob"].worker_s == pytest.approx(10) and users["alice"].worker_s == pytest.approx(30)


def test_users_with_work_and_workers_held(clock):
    ledger = ledger_with_two_workers(clock)
    ledger.work_added("alice")
    ledger.work_added("alice")
    ledger.task_started("a1", "alice", "w1")
    ledger.task_started("a2", "alice", "w2")
    assert ledger.users_with_work() == {"alice"} and ledger.workers_held("alice") == 2
    ledger.work_removed("alice")
    ledger.work_removed("alice")
    ledger.work_removed("alice")  # never below zero
    assert ledger.users_with_work() == set()


def test_compute_hours_limit_refuses_until_the_next_utc_day(clock):
    limits = Limits(policy_from_entries(user_compute_hours_per_day=["alice=1", "*=2"]))
    assert limits.check_compute_hours("alice", 3599, clock()) is None
    refusal = limits.check_compute_hours("alice", 3600, clock())
    assert refusal.reason == ("user alice reached the limit of 1 compute hours per day (used 1.00 h today); "
                              "it resets at 2026-11-21 00:00 UTC")
    assert limits.check_compute_hours("carol", 7000, clock()) is None and limits.check_compute_hours("carol", 7200, clock())
    ledger = Ledger(PRICES, clock)
    ledger.worker_joined("w1", "m7i.xlarge", "on-demand")
    ledger.task_started("a1", "alice", "w1")
    ledger.task_stopped("a1", compute_s=3600)
    assert ledger.compute_today_s("alice") == 3600
    clock.advance(12 * 3600)  # the next UTC day
    assert ledger.compute_today_s("alice") == 0


@pytest.mark.parametrize("moment, start, next_month, next_day", [
    ("2026-11-20T12:00", "2026-11-01", "2026-12-01", "2026-11-21"),
    ("2026-12-31T23:59:59", "2026-12-01", "2027-01-01", "2027-01-01"),
    ("2028-02-29T00:00", "2028-02-01", "2028-03-01", "2028-03-01"),
])
def test_the_calendar_moments_are_utc_boundaries(moment, start, next_month, next_day):
    now = dt.datetime.fromisoformat(moment).replace(tzinfo=dt.timezone.utc).timestamp()
    utc = lambda day: dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)  # noqa: E731
    assert (month_start(now), next_month_start(now), next_day_start(now)) == (utc(start), utc(next_month), utc(next_day))


class CountingTasks(dict):
    """The scheduler's tasks, counting lookups."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)


def test_the_usage_plugin_looks_a_task_up_once_per_transition_and_only_when_its_owner_matters(clock):
    class Owners:
        def owner_of(self, ts):
            return {"a1": "alice"}.get(ts.key) if ts is not None else None

    worker = SimpleNamespace(address="w1")
    tasks = CountingTasks(a1=SimpleNamespace(key="a1", processing_on=worker), x=SimpleNamespace(key="x", processing_on=None))
    ledger = ledger_with_two_workers(clock)
    plugin = UsagePlugin(SimpleNamespace(ledger=ledger, guard=SimpleNamespace(owners=Owners()),
                                         scheduler=SimpleNamespace(tasks=tasks)))
    plugin.transition("a1", "released", "waiting", stimulus_id="s")
    assert ledger.users_with_work() == {"alice"} and tasks.lookups == 1
    plugin.transition("a1", "waiting", "processing", stimulus_id="s")
    assert ledger.workers_held("alice") == 1 and tasks.lookups == 2
    clock.advance(10)
    plugin.transition("a1", "processing", "memory", stimulus_id="s",
                      startstops=[{"action": "compute", "start": 0.0, "stop": 9.0}])
    assert ledger.users_with_work() == set() and tasks.lookups == 3
    plugin.transition("a1", "memory", "forgotten", stimulus_id="s")  # nothing to charge: no lookup
    assert tasks.lookups == 3
    plugin.transition("x", "released", "waiting", stimulus_id="s")
    assert ledger.users_with_work() == {UNKNOWN_OWNER}
    ledger.tick()
    alice = ledger.totals().users["alice"]
    assert (alice.tasks, alice.compute_s, alice.worker_s) == (1, 9.0, pytest.approx(10))


def test_a_tick_settles_the_ledger_once_also_when_it_writes_a_record(clock, tmp_path):
    from daskfleet.trust.audit import AuditLog
    from daskfleet.usage.service import UsageAccounting

    accounting = UsageAccounting(
        SimpleNamespace(), SimpleNamespace(audit=AuditLog(tmp_path / "audit.jsonl")), UsagePolicy(record_interval_s=60.0),
        records=AuditLog(tmp_path / "usage.jsonl", label="usage"), history=[], clock=clock,
    )
    settled = []
    settle = accounting.ledger.tick
    accounting.ledger.tick = lambda: (settled.append(clock()), settle())[-1]
    clock.advance(30)
    accounting.tick()
    clock.advance(30)
    accounting.tick()  # a record is due
    assert settled == [NOON + 30, NOON + 60]
    (record,) = accounting.records
    assert (record["start_ts"], record["end_ts"]) == (NOON, NOON + 60)
    assert accounting.write_record()["start_ts"] == NOON + 60 and len(settled) == 3


def test_worker_limits_refuse_at_zero_and_clamp_to_the_sum_for_users_with_work():
    limits = Limits(policy_from_entries(user_max_workers=["alice=2", "bob=3", "carol=0"]))
    assert "user carol may hold at most 0 workers" in limits.check_workers("carol").reason
    assert limits.check_workers("alice") is None and limits.check_workers("dave") is None
    assert limits.worker_ceiling({"alice"}) == 2
    assert limits.worker_ceiling({"alice", "bob"}) == 5
    assert limits.worker_ceiling({"alice", "dave"}) is None  # dave is not limited
    assert limits.worker_ceiling(set()) is None
    assert "user alice may hold at most 2 worker(s) at once" in limits.clamp_notice("alice", 1)
    assert limits.clamp_notice("dave", 0) is None
    everyone = Limits(policy_from_entries(user_max_workers=["*=1"]))
    assert everyone.worker_ceiling({"x", "y"}) == 2


def test_the_budget_stop_triggers_from_a_ledger_fed_with_a_fake_clock(clock):
    ledger = ledger_with_two_workers(clock)  # 0.0015 $/s of workers + 0.0001 $/s of scheduler
    stop = BudgetStop(BudgetPolicy(monthly_usd=10.0, hard_stop_percent=80, lead_s=600))
    for _ in range(6000):  # $5.76 an hour
        clock.advance(1)
        ledger.tick()
        if stop.update(ledger.month_cost_usd(), ledger.rate_usd_per_s(), clock()) == "stopped":
            break
    # The stop comes 600 s of spend (at $0.0016/s: $0.96) before the $8 threshold.
    assert stop.active and ledger.month_cost_usd() == pytest.approx(8.0 - 0.96, abs=0.002)
    assert stop.state.threshold_usd == 8.0 and stop.state.projected_usd > 8.0
    assert "the budget stop is at $8.00. It resets at 2026-12-01 00:00 UTC" in stop.state.message()
    ledger.worker_left("w1")
    ledger.worker_left("w2")  # letting the workers go lowers the rate, but does not lift the stop
    assert stop.update(ledger.month_cost_usd(), ledger.rate_usd_per_s(), clock()) is None and stop.active
    clock.now = dt.datetime(2026, 11, 30, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp()
    ledger.tick()
    assert stop.update(ledger.month_cost_usd(), ledger.rate_usd_per_s(), clock()) is None and stop.active
    clock.advance(2)  # a new UTC month
    ledger.tick()
    assert ledger.month_cost_usd() < 0.01
    assert stop.update(ledger.month_cost_usd(), ledger.rate_usd_per_s(), clock()) == "lifted" and not stop.active


def test_no_budget_or_a_zero_percent_stop_never_stops(clock):
    for policy in (BudgetPolicy(None, 100, 0), BudgetPolicy(10.0, 0, 0)):
        assert not policy.assess(1e9, 1.0, clock()).stop


def test_records_add_up_across_schedulers_and_restore_the_month_and_the_day(clock):
    ledger = ledger_with_two_workers(clock)
    before = ledger.totals()
    ledger.task_started("a1", "alice", "w1")
    clock.advance(100)
    ledger.task_stopped("a1", compute_s=90)
    ledger.tick()
    first = make_record(difference(ledger.totals(), before), NOON, clock())
    middle = ledger.totals()
    ledger.task_started("a2", "alice", "w2")  # the next period (another scheduler's, say) has work of its own
    clock.advance(50)
    ledger.task_stopped("a2", compute_s=40)
    ledger.tick()
    second = make_record(difference(ledger.totals(), middle), clock() - 50, clock())
    assert second["users"]["alice"]["tasks"] == 1 and second["users"]["alice"]["compute_s"] == 40
    summary = summarize([first, second, {"event": "other"}])
    alice = summary.users["alice"]
    assert (alice.tasks, alice.compute_s) == (2, 130)  # summed over the records, not the last one's
    both = [first["users"]["alice"], second["users"]["alice"]]
    assert alice.worker_s == pytest.approx(sum(u["worker_s"] for u in both))
    assert alice.cost_usd == pytest.approx(sum(u["cost_usd"] for u in both))
    assert summary.scheduler_cost_usd == pytest.approx(first["scheduler_cost_usd"] + second["scheduler_cost_usd"])
    assert summary.idle_s == pytest.approx(first["idle_s"] + second["idle_s"])
    assert summary.worker_s[("m7i.xlarge", "spot")] == pytest.approx(150)  # w2 through both periods
    assert (summary.start, summary.end) == (NOON, clock())
    assert summarize([first], since=clock()).users == {}
    month_cost, day_compute = carried([first, second], clock())
    assert month_cost == pytest.approx(sum(record["scheduler_cost_usd"] + sum(u["cost_usd"] for u in record["users"].values())
                                           for record in (first, second)))
    assert day_compute == {"alice": 130}
    assert carried([first], clock() + 31 * 86400) == (0.0, {})
    assert parse_lines([json.dumps(first), "not json", '{"event": "usage"}']) == [json.loads(json.dumps(first))]


def test_policy_text_forms_give_one_error_naming_the_key():
    policy = policy_from_entries(prices=["m7i.xlarge=0.2016/0.0806", "local=0"], user_max_workers=["alice=4", "*=2"])
    assert policy.price("m7i.xlarge").per_second("spot") == pytest.approx(0.0806 / 3600)
    assert policy.price("local").per_second("spot") == 0.0
    cases = [
        ({"prices": ["m7i.xlarge"]}, "prices: 'm7i.xlarge' is not INSTANCE_TYPE=ON_DEMAND_USD[/SPOT_USD]"),
        ({"prices": ["m7i.xlarge=cheap"]}, "prices: 'm7i.xlarge=cheap': prices must be numbers"),
        ({"prices": ["a=1", "a=2"]}, "prices: 'a' is given more than once"),
        ({"user_max_workers": ["alice=1.5"]}, "user_max_workers: 'alice=1.5': '1.5' is not a whole number"),
        ({"user_max_workers": ["idle=1"]}, "'idle' is reserved for idle worker time"),
        ({"user_compute_hours_per_day": ["Alice=1"]}, "'Alice' is neither '*' nor a user name"),
        ({"user_compute_hours_per_day": ["alice=-1"]}, "must be 0 or more"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            policy_from_entries(**changes)


def test_the_node_spec_carries_the_usage_policy_and_names_a_bad_key():
    from daskfleet.errors import DaskfleetError
    from daskfleet.node.spec import parse_spec

    spec = parse_spec({"cluster": "analytics", "role": "scheduler",
                       "usage": {"user_max_workers": {"alice": 2}, "prices_usd_per_hour": {"m7i.large": {"on_demand": 0.1}}}})
    assert spec.usage.user_max_workers == {"alice": 2} and spec.usage.budget_hard_stop_percent == 100
    assert parse_spec({"cluster": "analytics", "role": "scheduler"}).usage == UsagePolicy()
    with pytest.raises(DaskfleetError, match=r"usage\.user_max_workers\.alice: .*\(got 'two'\)"):
        parse_spec({"cluster": "analytics", "role": "scheduler", "usage": {"user_max_workers": {"alice": "two"}}})
    with pytest.raises(DaskfleetError, match=r"usage\.budget_hard_stopp_percent: unknown key"):
        parse_spec({"cluster": "analytics", "role": "scheduler", "usage": {"budget_hard_stopp_percent": 90}})


# --- per task prefix ----------------------------------------------------------------------------------------


def prefix_ledger(clock, bound=2):
    ledger = Ledger(PRICES, clock, prefixes_per_user=bound)
    ledger.worker_joined("w1", "m7i.xlarge", "on-demand")
    return ledger


def test_worker_time_is_split_among_prefixes_and_a_users_prefixes_add_up_to_the_user(clock):
    ledger = prefix_ledger(clock)
    ledger.client_connected("alice")
    ledger.task_started("r1", "alice", "w1", "read_parquet")
    ledger.task_started("g1", "alice", "w1", "groupby-agg")
    ledger.task_started("b1", "bob", "w1", "read_parquet")
    clock.advance(30)
    for key, ran in (("r1", 29.0), ("g1", 9.0), ("b1", 19.0)):
        ledger.task_stopped(key, compute_s=ran)
    clock.advance(10)  # idle, alice connected: her (idle)
    ledger.tick()
    totals = ledger.totals()
    alice, bob = totals.prefixes["alice"], totals.prefixes["bob"]
    assert alice["read_parquet"].worker_s == pytest.approx(10) and alice["groupby-agg"].worker_s == pytest.approx(10)
    assert alice[IDLE_PREFIX].worker_s == pytest.approx(10) and alice[IDLE_PREFIX].tasks == 0
    assert (bob["read_parquet"].tasks, bob["read_parquet"].compute_s) == (1, 19.0) and IDLE_PREFIX not in bob
    for user, prefixes in totals.prefixes.items():
        for field in ("tasks", "compute_s", "worker_s", "cost_usd"):
            assert sum(getattr(u, field) for u in prefixes.values()) == pytest.approx(getattr(totals.users[user], field))
    assert totals.users["alice"].cost_usd == pytest.approx(30 * 0.001)


def test_past_the_bound_prefixes_count_as_other_and_a_million_names_add_one_entry(clock):
    ledger = prefix_ledger(clock, bound=2)
    for index, prefix in enumerate(["first", "second", OTHER_PREFIX, IDLE_PREFIX, *(f"name{n}" for n in range(20_000))]):
        ledger.task_started(index, "alice", "w1", prefix)
        ledger.task_stopped(index, compute_s=1.0)
    ledger.task_started("again", "alice", "w1", "first")  # a prefix keeps its place
    ledger.task_stopped("again", compute_s=1.0)
    prefixes = ledger.totals().prefixes["alice"]
    assert set(prefixes) == {"first", "second", OTHER_PREFIX}  # a key named like a label is (other) too
    assert (prefixes["first"].tasks, prefixes[OTHER_PREFIX].tasks) == (2, 20_002)
    assert Ledger(PRICES, clock).totals().prefixes == {}  # without prefix accounting: per-user figures only


def test_a_task_that_leaves_without_an_end_counts_what_it_ran_but_no_task(clock):
    ledger = prefix_ledger(clock)
    for key in ("cancelled", "lost", "queued"):
        ledger.task_started(key, "alice", "w1", "slow")
    clock.advance(20)
    ledger.task_left("cancelled", ran_s=12.0)  # as its worker last reported (plus the time since)
    ledger.task_left("lost", ran_s=None)       # its worker is gone: the whole time it was processing
    ledger.task_left("queued", ran_s=0.0)
    ledger.task_left("never-started", ran_s=5.0)
    slow = ledger.totals().prefixes["alice"]["slow"]
    assert (slow.tasks, slow.compute_s) == (0, pytest.approx(12 + 20)) and ledger.compute_today_s("alice") == 32
    ledger.task_started("long", "alice", "w1", "slow")
    clock.advance(1)
    ledger.task_left("long", ran_s=50.0)  # never more than the time it was processing
    assert ledger.totals().prefixes["alice"]["slow"].compute_s == pytest.approx(33)


def test_the_plugin_passes_each_tasks_prefix_and_asks_the_worker_how_long_a_cancelled_task_ran(clock):
    class Task:  # hashable, as the scheduler's TaskState (WorkerState.executing is keyed by it)
        key, processing_on, prefix = "a1", SimpleNamespace(address="w1"), SimpleNamespace(name="load")

    ts = Task()
    ledger = prefix_ledger(clock)
    scheduler = SimpleNamespace(tasks={"a1": ts}, workers={"w1": SimpleNamespace(executing={ts: 4.0}, last_seen=NOON + 8)})
    plugin = UsagePlugin(SimpleNamespace(ledger=ledger, guard=SimpleNamespace(owners=SimpleNamespace(owner_of=lambda t: "alice")),
                                         scheduler=scheduler))
    plugin.transition("a1", "waiting", "processing", stimulus_id="s")
    clock.advance(10)
    plugin.transition("a1", "processing", "released", stimulus_id="cancel")
    load = ledger.totals().prefixes["alice"]["load"]
    assert (load.tasks, load.compute_s) == (0, pytest.approx(4.0 + 2.0))  # reported at NOON+8, cancelled at NOON+10


def test_records_carry_prefixes_within_a_size_and_old_records_read_as_not_recorded(clock):
    ledger = prefix_ledger(clock, bound=50)
    before = ledger.totals()
    for index in range(40):
        ledger.task_started(index, "alice", "w1", f"step{index:02d}")
        clock.advance(index + 1)
        ledger.task_stopped(index, compute_s=index + 1)
    ledger.tick()
    period = difference(ledger.totals(), before)
    record = make_record(period, NOON, clock())
    assert len(record["prefixes"]["alice"]) == 40
    small = make_record(period, NOON, clock(), prefix_chars=1500)
    kept = small["prefixes"]["alice"]
    assert len(json.dumps(small["prefixes"])) <= 1500 and "step39" in kept and "step00" not in kept
    assert sum(f["cost_usd"] for f in kept.values()) == pytest.approx(record["users"]["alice"]["cost_usd"])
    assert kept[OTHER_PREFIX]["tasks"] == 40 - (len(kept) - 1)
    old = {key: value for key, value in record.items() if key != "prefixes"}  # before per-prefix figures
    summary = summarize([old, json.loads(json.dumps(small))])
    assert summary.prefixes["alice"][UNRECORDED_PREFIX] == summary.users["alice"].minus(
        summarize([small]).users["alice"])
    assert summary.prefixes["alice"]["step39"].tasks == 1


def test_the_prefix_table_is_largest_first_with_shares_and_the_rest_in_one_line(clock):
    ledger = prefix_ledger(clock, bound=50)
    for key, (user, prefix, seconds) in enumerate([("alice", "small", 1), ("bob", "big", 6), ("alice", "mid", 3)]):
        ledger.task_started(key, user, "w1", prefix)
        clock.advance(seconds)
        ledger.task_stopped(key, compute_s=seconds)
    ledger.tick()
    summary = summarize([make_record(ledger.totals(), NOON, clock())])
    report = prefix_report(summary, NOON, user=None, top=2)
    assert [(row["prefix"], row["user"]) for row in report["rows"]] == [("big", "bob"), ("mid", "alice")]
    assert [round(row["share"], 3) for row in report["rows"]] == [0.6, 0.3] and report["share_of"] == "cost_usd"
    assert report["more"]["rows"] == 1 and report["more"]["share"] == pytest.approx(0.1)
    table = render_prefix_table(report).splitlines()
    assert table[1].split() == ["prefix", "user", "tasks", "compute", "h", "worker", "h", "cost", "USD", "share"]
    assert table[3].split() == ["big", "bob", "1", "0.002", "0.002", "0.01", "60.0%"]
    assert table[5].split()[:2] == ["(1", "more)"] and table[-1].split()[-1] == "100.0%"
    assert [row["prefix"] for row in prefix_report(summary, NOON, user="alice", top=0)["rows"]] == ["mid", "small"]


def test_a_profile_window_runs_from_the_oldest_cycle_a_worker_holds_to_now():
    window = profile_window([NOON + 5, NOON + 1, NOON + 9], [[NOON + 3, 0], [NOON + 4, 12], [NOON + 6, 3]], NOON + 10, 1.0)
    assert window == {"start": NOON, "end": NOON + 10, "samples_from": NOON + 3, "samples_to": NOON + 7}
    # No cycle held yet: only the current one, at most a cycle long.
    assert profile_window([], [], NOON, 1.0) == {"start": NOON - 1, "end": NOON, "samples_from": None, "samples_to": None}
    series = {"b": [[NOON, 3]], "a": [[NOON, 1], [NOON + 1, 2]], "idle": [[NOON, 0]], **{f"x{n}": [[NOON, 1]] for n in range(50)}}
    assert most_sampled(series)[:3] == ["a", "b", "x0"] and len(most_sampled(series)) == 20  # a few, most first


def test_prefixes_per_user_is_a_bounded_policy_key():
    assert UsagePolicy().prefixes_per_user == 50 and policy_from_entries(prefixes_per_user=0).prefixes_per_user == 0
    with pytest.raises(ValueError, match="prefixes_per_user"):
        UsagePolicy(prefixes_per_user=100_000)


def test_the_prefix_metrics_name_each_users_prefixes_and_nothing_without_them(clock):
    from daskfleet.usage.metrics import prefix_families

    ledger = prefix_ledger(clock)
    ledger.task_started("a", "alice", "w1", "load")
    clock.advance(2)
    ledger.task_stopped("a", compute_s=2.0)
    compute, cost = prefix_families(ledger.totals())
    assert compute.name == "daskfleet_prefix_compute_seconds" and cost.name == "daskfleet_prefix_cost_usd"
    assert [(s.name, s.labels, s.value) for s in compute.samples] == [
        ("daskfleet_prefix_compute_seconds_total", {"user": "alice", "prefix": "load"}, 2.0)]
    assert list(prefix_families(Ledger(PRICES, clock).totals())) == []


def test_the_commands_refuse_what_does_not_fit_and_write_no_page_for_a_prefix_without_samples(tmp_path):
    from click.testing import CliRunner

    from daskfleet.errors import DaskfleetError
    from daskfleet.usage.commands import profile_command, usage_command

    usage = usage_command(live=lambda *a, **k: [], stored=lambda *a, **k: [])
    refused = CliRunner().invoke(usage, ["local", "--top", "3"])
    assert refused.exit_code == 2 and "--user and --top go with --by prefix" in refused.output
    nothing = {"prefix": "no_such_function", "profile": {}, "samples": 0, "start": NOON - 60, "end": NOON,
               "sampled_prefixes": ["load_rows", "fit_model"]}
    page = tmp_path / "none.html"
    result = CliRunner().invoke(profile_command(fetch=lambda *a, **k: nothing),
                                ["local", "--prefix", "no_such_function", "--out", str(page)])
    assert isinstance(result.exception, DaskfleetError) and not page.exists()
    assert str(result.exception) == ("no profile samples of task prefix 'no_such_function' on the workers in "
                                     "2026-11-20 11:59:00 UTC – 2026-11-20 12:00:00 UTC (the prefixes with most samples: "
                                     "load_rows, fit_model)")
