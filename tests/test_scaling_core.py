"""The scaling decision and the idle policy, pure, on a fake clock: what users of adaptive clusters report going wrong."""

from __future__ import annotations

import asyncio
import time

import pytest

from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.node.spec import parse_spec
from daskfleet.scaling.core import BootFailure, Decision, LaunchFailures, ScalingCore, Snapshot, launch_hold
from daskfleet.scaling.idle import IdlePolicy
from daskfleet.scaling.policy import ScalingSpec
from daskfleet.scaling.runner import EARLY_DECISION_GAP_S, ScalingPlugin
from daskfleet.trust.audit import AuditLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def names(count: int, start: int = 0) -> frozenset[str]:
    return frozenset(f"w{i:02d}" for i in range(start, start + count))


def core(**policy) -> tuple[ScalingCore, FakeClock]:
    clock = FakeClock()
    spec = ScalingSpec(**{"max_workers": 20, "cooldown_s": 60, "scale_down_targets": 3, "max_step_down": 4, **policy})
    return ScalingCore(spec, clock), clock


def test_a_backlog_asks_for_what_it_needs_at_once_and_nothing_twice():
    scaler, clock = core()
    first = scaler.decide(Snapshot(target=8, workers=frozenset()))
    assert (first.desired, first.launch, first.retire) == (8, 8, ())
    for _ in range(5):  # still booting: counted as coming, not requested again
        clock.advance(5)
        again = scaler.decide(Snapshot(target=8, workers=frozenset()))
        assert (again.launch, again.coming) == (0, 8)
    clock.advance(5)
    arrived = scaler.decide(Snapshot(target=8, workers=names(5)))
    assert (arrived.launch, arrived.coming) == (0, 3)
    more = scaler.decide(Snapshot(target=10, workers=names(5)))
    assert (more.desired, more.launch) == (10, 2)  # only the difference


def test_requested_workers_that_never_register_are_requested_again_after_the_launch_timeout():
    scaler, clock = core(launch_timeout_s=120)
    assert scaler.decide(Snapshot(target=3, workers=frozenset())).launch == 3
    clock.advance(119)
    assert scaler.decide(Snapshot(target=3, workers=frozenset())).launch == 0
    clock.advance(1)
    retry = scaler.decide(Snapshot(target=3, workers=frozenset()))
    assert retry.launch == 3 and "did not register within 120s" in retry.reason


def test_asking_for_more_than_the_group_allows_is_capped_at_max_workers():
    scaler, _ = core(max_workers=10)
    decision = scaler.decide(Snapshot(target=50, workers=names(4)))
    assert (decision.desired, decision.launch) == (10, 6)
    assert "capped at max_workers 10" in decision.reason
    assert scaler.decide(Snapshot(target=50, workers=names(4))).launch == 0


def test_dropping_from_15_to_1_retires_only_cheap_workers_a_step_at_a_time_and_loses_no_work():
    scaler, clock = core(max_step_down=4)
    workers = names(15)
    scaler.decide(Snapshot(target=15, workers=workers))
    clock.advance(61)
    busy = {"w00", "w01", "w02"}  # the scheduler would not offer these: they hold work
    cheap = tuple(sorted(workers - busy))
    decisions = [scaler.decide(Snapshot(target=1, workers=workers, closable=cheap)) for _ in range(3)]
    assert [d.retire for d in decisions] == [(), (), cheap[:4]]  # waits for 3 low targets, then 4 at most
    assert not busy & set(decisions[-1].retire)
    workers -= set(decisions[-1].retire)
    cooling = scaler.decide(Snapshot(target=1, workers=workers, closable=tuple(sorted(workers - busy))))
    assert cooling.retire == () and "cooldown" in cooling.reason
    while True:
        clock.advance(61)
        step = scaler.decide(Snapshot(target=1, workers=workers, closable=tuple(sorted(workers - busy))))
        assert len(step.retire) <= 4 and not busy & set(step.retire)
        if not step.retire:
            break
        workers -= set(step.retire)
    assert workers == busy and "no worker can leave without losing work" in step.reason


def test_running_workers_are_not_closed_while_requested_ones_are_still_pending():
    scaler, clock = core(cooldown_s=0)
    scaler.decide(Snapshot(target=4, workers=frozenset()))
    clock.advance(5)
    scaler.decide(Snapshot(target=8, workers=names(4)))  # 4 arrived, 4 more requested
    for _ in range(5):
        clock.advance(5)
        decision = scaler.decide(Snapshot(target=2, workers=names(4), closable=tuple(sorted(names(4)))))
        assert decision.retire == ()
    assert "waiting for 4 requested worker(s)" in decision.reason
    clock.advance(5)
    scaler.decide(Snapshot(target=2, workers=names(8)))  # they arrived: now it may scale down
    clock.advance(5)
    assert len(scaler.decide(Snapshot(target=2, workers=names(8), closable=tuple(sorted(names(8))))).retire) == 4


def test_a_flapping_target_scales_up_once_and_never_down():
    scaler, clock = core(cooldown_s=30, scale_down_targets=4)
    launches, retired = 0, 0
    workers = frozenset()
    for index in range(40):
        target = 8 if index % 2 == 0 else 2
        decision = scaler.decide(Snapshot(target=target, workers=workers, closable=tuple(sorted(workers))))
        launches += decision.launch
        retired += len(decision.retire)
        workers = (workers | names(decision.launch, start=len(workers))) - set(decision.retire)
        clock.advance(5)
    assert (launches, retired) == (8, 0)


def test_min_workers_are_kept_and_scale_down_follows_the_largest_recent_target():
    scaler, clock = core(min_workers=2, cooldown_s=0, scale_down_targets=3)
    assert scaler.decide(Snapshot(target=0, workers=frozenset())).launch == 2
    workers = names(6)
    for target, retired in [(6, 0), (1, 0), (1, 0), (1, 4), (0, 0)]:
        clock.advance(5)
        decision = scaler.decide(Snapshot(target=target, workers=workers, closable=tuple(sorted(workers))))
        assert len(decision.retire) == retired, (target, decision)
        workers -= set(decision.retire)
    assert len(workers) == 2


@pytest.mark.parametrize(
    ("snapshot_kwargs", "policy", "expected_left", "why"),
    [
        ({"idle": "no client and no work for 300s"}, {}, 0, "idle: no client"),
        ({"ceiling": 0}, {}, 0, "ceiling 0"),
        ({"ceiling": 3}, {}, 3, "ceiling 3"),
        ({}, {"cluster_cap": 5}, 5, "cluster cap 5"),
    ],
)
def test_hard_limits_retire_at_once_even_in_cooldown_and_with_pending_launches(snapshot_kwargs, policy, expected_left, why):
    scaler, clock = core(max_step_down=20, **policy)
    workers = names(8)
    scaler.decide(Snapshot(target=12, workers=workers))  # 4 requested, a scale-up just now
    clock.advance(1)
    decision = scaler.decide(Snapshot(target=12, workers=workers, closable=("w07", "w06"), **snapshot_kwargs))
    assert decision.forced and why in decision.reason
    assert len(workers) - len(decision.retire) == expected_left
    assert decision.retire[:2] == ("w07", "w06")  # cheapest first, then the rest
    assert decision.coming == 0 and decision.launch == 0


def test_a_ceiling_or_cap_above_what_runs_limits_the_scale_up():
    scaler, _ = core(cluster_cap=6)
    decision = scaler.decide(Snapshot(target=15, workers=names(2), ceiling=9))
    assert (decision.desired, decision.launch) == (6, 4) and "held to 6 by the cluster cap 6" in decision.reason


def test_a_ceiling_lowered_while_launches_are_pending_forgets_them():
    scaler, clock = core()
    scaler.decide(Snapshot(target=6, workers=names(2)))
    decision = scaler.decide(Snapshot(target=6, workers=names(2), ceiling=2))
    assert decision == Decision(2, reason=decision.reason, forced=True) and scaler.coming == 0


def test_workers_the_platform_did_not_start_are_asked_for_again_at_the_next_decision():
    scaler, _ = core()
    assert scaler.decide(Snapshot(target=5, workers=frozenset())).launch == 5
    scaler.fell_short(3)  # e.g. the group's maximum, or no free local slot yet
    assert scaler.coming == 2
    assert scaler.decide(Snapshot(target=5, workers=frozenset())).launch == 3


def test_workers_seen_at_start_can_be_counted_as_coming():
    scaler, _ = core()
    scaler.expect(3)
    assert scaler.decide(Snapshot(target=3, workers=frozenset())).launch == 0


# --- workers that keep failing to start ----------------------------------------------------------

V3, V4 = "launch template lt-0abc version 3", "launch template lt-0abc version 4"
NOW = 100_000.0


def failures(*spec: tuple[str, float]) -> tuple[BootFailure, ...]:
    return tuple(BootFailure(f"i-{index:04d}", version, NOW - age, 66, "error: secret not found")
                 for index, (version, age) in enumerate(spec))


@pytest.mark.parametrize(
    ("current", "seen", "held"),
    [
        (V3, failures((V3, 10), (V3, 20)), False),  # two failures: not yet
        (V3, failures((V3, 10), (V3, 20), (V3, 30)), True),  # three of the version new workers start from
        (V4, failures((V3, 10), (V3, 20), (V3, 30)), False),  # a new version is deployed: ask again
        (V3, failures((V3, 10), (V3, 20), (V3, 1801)), False),  # the oldest aged out of the window
        (V3, failures((V3, 10), (V4, 20), (V3, 30), (V4, 40)), False),  # mixed versions count apart
    ],
)
def test_launches_are_held_while_workers_of_the_current_version_keep_failing(current, seen, held):
    reason = launch_hold(LaunchFailures(current, seen), NOW, limit=3, window_s=1800)
    assert bool(reason) is held
    if held:
        assert f"3 workers from {current} failed to start within 1800s" in reason and "error: secret not found" in reason
    assert launch_hold(LaunchFailures(current, seen), NOW, limit=0, window_s=1800) is None  # 0: never hold


def test_a_held_scaler_asks_for_nothing_and_takes_back_what_it_asked_for():
    scaler, clock = core()
    assert scaler.decide(Snapshot(target=6, workers=names(2))).launch == 4
    clock.advance(30)
    held = scaler.decide(Snapshot(target=6, workers=names(2), held="3 workers from v3 failed to start"))
    assert (held.launch, held.withdraw, held.desired) == (0, 4, 2) and "not asking for more workers: 3 workers" in held.reason
    assert scaler.coming == 0
    for _ in range(10):  # no loop: still held, nothing asked, nothing more to take back
        clock.advance(5)
        again = scaler.decide(Snapshot(target=6, workers=names(2), held="3 workers from v3 failed to start"))
        assert (again.launch, again.withdraw) == (0, 0)
    clock.advance(5)
    assert scaler.decide(Snapshot(target=6, workers=names(2))).launch == 4  # lifted: asks again


def test_a_hold_does_not_stop_scale_down_or_the_hard_limits():
    scaler, clock = core(cooldown_s=0, scale_down_targets=1)
    workers = names(4)
    down = scaler.decide(Snapshot(target=1, workers=workers, closable=tuple(sorted(workers)), held="failing"))
    assert len(down.retire) == 3
    idle = scaler.decide(Snapshot(target=0, workers=names(1), idle="no work", held="failing"))
    assert idle.forced and len(idle.retire) == 1


# --- the idle policy -----------------------------------------------------------------------------


def test_idle_after_the_idle_timeout_without_work_even_with_a_client():
    clock = FakeClock()
    idle = IdlePolicy(1200, 300, clock)
    assert idle.observe(busy=True, clients=1) is None
    clock.advance(1199)
    assert idle.observe(busy=False, clients=1) is None
    clock.advance(1)
    assert "no work for 1200s (idle timeout 1200s)" in idle.observe(busy=False, clients=1)


def test_idle_after_the_no_client_timeout_counted_from_the_later_of_work_and_last_client():
    clock = FakeClock()
    idle = IdlePolicy(1200, 300, clock)
    idle.observe(busy=False, clients=1)
    clock.advance(100)
    assert idle.observe(busy=True, clients=0) is None  # fire-and-forget work keeps it up without a client
    clock.advance(299)
    assert idle.observe(busy=False, clients=0) is None
    clock.advance(1)
    assert "no client and no work for 300s" in idle.observe(busy=False, clients=0)
    # A client connected past the last work: the timeout counts from when it was last seen, not from the work.
    idle = IdlePolicy(1200, 300, clock)
    assert idle.observe(busy=True, clients=1) is None  # the last work
    clock.advance(200)
    assert idle.observe(busy=False, clients=1) is None  # the client stays connected past it, then leaves
    clock.advance(1)
    assert idle.observe(busy=False, clients=0) is None
    clock.advance(298)  # 499 s after the last work, 299 s after the client was last seen
    assert idle.observe(busy=False, clients=0) is None
    clock.advance(1)
    assert "no client and no work for 300s" in idle.observe(busy=False, clients=0)


def test_a_graph_update_or_a_client_resets_the_clocks_and_zero_turns_a_timeout_off():
    clock = FakeClock()
    idle = IdlePolicy(60, 30, clock)
    clock.advance(50)
    idle.note_work()
    clock.advance(40)
    assert idle.observe(busy=False, clients=1) is None
    off = IdlePolicy(0, 0, clock)
    clock.advance(10**6)
    assert off.observe(busy=False, clients=0) is None


# --- the runner's pacing -----------------------------------------------------------------------


class QuietScheduler:
    """What ``ScalingPlugin.snapshot`` reads of a scheduler: no workers, no tasks, nobody connected."""

    workers: dict = {}
    clients: dict = {}
    queued: tuple = ()
    unrunnable: tuple = ()
    task_groups: dict = {}

    def adaptive_target(self) -> int:
        return 0

    def workers_to_close(self, attribute: str) -> list:
        return []


class NoBackend:
    restarts_switching_workers = True

    def describe(self) -> str:
        return "no backend"

    def outstanding(self) -> int:
        return 0

    def launch_failures(self, since: float) -> LaunchFailures:
        return LaunchFailures("none")


def test_a_burst_of_submissions_makes_a_bounded_number_of_decisions_and_the_last_one_is_decided(tmp_path):
    spec = ScalingSpec(max_workers=4, interval_s=5, idle_timeout_s=0, no_client_timeout_s=0)
    plugin = ScalingPlugin(spec, NoBackend(), AuditLog(tmp_path / "audit.jsonl"))
    steps: list[float] = []
    decide = plugin.step

    async def counted_step() -> Decision:
        steps.append(time.monotonic())
        return await decide()

    plugin.step = counted_step

    async def burst() -> tuple[float, float, float]:
        scheduler = QuietScheduler()
        await plugin.start(scheduler)
        await asyncio.sleep(0.5)  # the first decision, then quiet
        first = time.monotonic()
        submitted = 0
        while time.monotonic() - first < 1.0:  # 3,000 separate submissions over a second, as client.submit in a loop
            for _ in range(10):
                plugin.update_graph(scheduler)
                submitted += 1
            await asyncio.sleep(0.003)
        last = time.monotonic()
        await asyncio.sleep(2 * EARLY_DECISION_GAP_S)
        plugin.stopping = True
        await plugin.before_close()
        assert submitted >= 1000, submitted  # a burst the unthrottled loop answered with a decision each
        return first, last, time.monotonic()

    first, last, end = asyncio.run(burst())
    during = [moment for moment in steps if first <= moment <= end]
    assert len(steps) - len(during) == 1  # the decision at start; the interval (5 s) never elapsed
    assert during and during[0] - first < 0.1  # the first submission after a quiet spell is decided at once
    assert len(during) <= 2 + (last - first) / EARLY_DECISION_GAP_S  # then at most one per gap
    assert all(later - earlier >= EARLY_DECISION_GAP_S * 0.9 for earlier, later in zip(steps, steps[1:]))
    assert during[-1] >= last - 0.01  # and submissions at the end of the burst are decided, not dropped


# --- the spec section --------------------------------------------------------------------------


def test_the_scheduler_spec_carries_a_scaling_section_and_names_a_bad_key():
    spec = parse_spec({"cluster": "local", "role": "scheduler", "scaling": {"min_workers": 1, "max_workers": 4}})
    assert spec.scaling == ScalingSpec(min_workers=1, max_workers=4)
    with pytest.raises(DaskfleetError) as bad:
        parse_spec({"cluster": "local", "role": "scheduler", "scaling": {"max_workers": 4, "idle_timeout": 5}})
    assert bad.value.exit_code == ExitCode.SPEC_INVALID and "scaling.idle_timeout: unknown key" in str(bad.value)
    with pytest.raises(DaskfleetError, match="scaling.min_workers: 5 is more than max_workers"):
        parse_spec({"cluster": "local", "role": "scheduler", "scaling": {"min_workers": 5, "max_workers": 4}})
    with pytest.raises(DaskfleetError, match="scaling: only a scheduler"):
        parse_spec({"cluster": "local", "role": "worker", "scheduler_address": "tls://a:1", "scaling": {"max_workers": 1}})
