"""Rolling workers onto a published environment, decided purely on a fake clock."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from daskfleet.environments.policy import RolloutPolicy
from daskfleet.environments.published import PublishedEnvironment
from daskfleet.environments.roll import RollCore, RollTarget
from daskfleet.environments.rollout import RolloutPlugin
from daskfleet.trust.audit import AuditLog
from daskfleet.trust.gatekeeper import FINGERPRINT_KEY, Gatekeeper
from daskfleet.trust.guards import SchedulerGuard

OLD, NEW, OTHER = "sha256:" + "0" * 64, "sha256:" + "1" * 64, "sha256:" + "2" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def core(fraction=0.25, timeout=100.0) -> tuple[RollCore, Clock]:
    clock = Clock()
    return RollCore(fraction, timeout, clock), clock


def test_nothing_published_accepts_only_the_schedulers_environment():
    roll, _ = core()
    plan = roll.decide(OLD, {"w0": OLD})
    assert plan.accepted == {OLD} and plan.done and not plan.switch


def test_at_most_a_fraction_of_the_workers_switch_at_once_and_the_next_go_as_they_come_back():
    roll, _ = core(fraction=0.25)
    roll.begin(RollTarget(NEW, frozenset({OLD})))
    workers = {f"w{i}": OLD for i in range(8)}
    plan = roll.decide(OLD, workers)
    assert plan.switch == ("w0", "w1") and plan.accepted == {OLD, NEW} and not plan.done
    assert roll.decide(OLD, workers).switch == ()  # two away already: nobody else yet
    roll.note_left("w0")
    del workers["w0"]
    assert roll.decide(OLD, workers).switch == ()  # w0 is still away
    workers["w0"] = NEW  # back on the new environment
    assert roll.decide(OLD, workers).switch == ("w2",)


def test_one_worker_switches_even_when_the_fraction_rounds_to_none():
    roll, _ = core(fraction=0.25)
    roll.begin(RollTarget(NEW, frozenset({OLD})))
    assert roll.decide(OLD, {"w0": OLD, "w1": OLD}).switch == ("w0",)


def test_once_every_worker_runs_the_new_environment_only_it_is_accepted():
    roll, _ = core()
    roll.begin(RollTarget(NEW, frozenset({OLD})))
    roll.decide(OLD, {"w0": OLD})
    roll.note_left("w0")
    plan = roll.decide(OLD, {"w0": NEW})
    assert plan.done and plan.accepted == {NEW} and plan.reason == "every worker runs the published environment"


def test_a_worker_back_on_its_old_environment_failed_and_is_not_asked_again():
    roll, _ = core()
    roll.begin(RollTarget(NEW, frozenset({OLD})))
    roll.decide(OLD, {"w0": OLD, "w1": OLD})
    roll.note_left("w0")
    plan = roll.decide(OLD, {"w0": OLD, "w1": OLD})  # w0 came back, still on OLD: its install failed
    assert roll.failed == {"w0": "came back on its previous environment"}
    assert plan.switch == ("w1",) and plan.accepted == {OLD, NEW}  # the failed node keeps computing on OLD
    roll.note_left("w1")
    plan = roll.decide(OLD, {"w0": OLD, "w1": NEW})
    assert plan.switch == () and plan.done and plan.accepted == {OLD, NEW}


def test_a_failure_the_worker_reports_and_a_worker_that_never_comes_back():
    roll, clock = core(timeout=100.0)
    roll.begin(RollTarget(NEW, frozenset({OLD})))
    roll.decide(OLD, {"w0": OLD})
    roll.note_failure("w0", "alpha 1.1: sha256 of s3://… is …, the lock says …")
    assert "sha256" in roll.failed["w0"]
    roll.begin(RollTarget(OTHER, frozenset({NEW, OLD})))  # a new publication forgets the old failures
    assert roll.failed == {} and roll.decide(OLD, {"w0": OLD}).switch == ("w0",)
    roll.note_left("w0")
    clock.now = 101.0
    roll.decide(OLD, {})
    assert roll.failed == {"w0": "did not come back within 100s"}


def test_a_change_of_core_packages_restarts_the_scheduler_before_any_worker_switches():
    roll, _ = core()
    roll.begin(RollTarget(NEW, frozenset({OLD}), core_packages=("dask", "distributed")))
    plan = roll.decide(OLD, {"w0": OLD})
    assert plan.restart_scheduler and plan.switch == () and plan.accepted == {OLD, NEW}
    assert "dask, distributed" in plan.reason
    after = roll.decide(NEW, {"w0": OLD})  # the scheduler came back on NEW: now the workers
    assert not after.restart_scheduler and after.switch == ("w0",)


@pytest.mark.parametrize("fraction", [0, 1.5])
def test_a_fraction_outside_0_to_1_is_refused(fraction):
    with pytest.raises(ValueError):
        RollCore(fraction, 10, Clock())


def test_a_scheduler_that_could_not_install_a_core_change_skips_its_restart_and_audits_it_once(tmp_path):
    published = PublishedEnvironment(
        lock_sha256="a" * 64, fingerprints={"linux-64": NEW}, replaces={"linux-64": [OLD]},
        core_packages=["dask", "distributed"], published_by="alice", published_at="2026-11-30T00:00:00+00:00",
        wheel={"file_name": "daskfleet-0.1.0-py3-none-any.whl", "sha256": "b" * 64, "version": "0.1.0"},
    )
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path)
    guard = SchedulerGuard(Gatekeeper(cluster="analytics", expected_fingerprint=OLD, versions={}), audit)
    plugin = RolloutPlugin(lambda: published, "linux-64", OLD, guard, audit, RolloutPolicy(),
                           own_error="alpha 1.1: sha256 mismatch", clock=Clock())
    plugin.scheduler = SimpleNamespace(workers={"tcp://w0": SimpleNamespace(name="w0", extra={FINGERPRINT_KEY: OLD})})

    async def three_steps():
        for _ in range(3):
            await plugin.step()

    asyncio.run(three_steps())
    events = [json.loads(line)["event"] for line in audit_path.read_text().splitlines()]
    assert events == ["environment-published", "scheduler-restart-skipped"]  # once, not at every poll
    assert not plugin.restarting and "could not install it (alpha 1.1: sha256 mismatch)" in plugin.reason
    assert guard.gatekeeper.expected_fingerprint == NEW and guard.gatekeeper.also_accepted == {OLD}
