"""Per-user usage, task clients and limits on a running local cluster: real processes, real TLS, several users."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from daskfleet.conventions import ADMIN_ROLE, MEMBER_ROLE
from daskfleet.local import cluster as local
from daskfleet.local.state import LOCAL_CLUSTER
from daskfleet.trust import pki
from daskfleet.usage.policy import UsagePolicy, policy_from_entries
from daskfleet.usage.records import USAGE_OP, summarize

from support import security_for, user_client

#: One local worker-second costs 1 cent: cost follows time exactly.
PRICE = "local=36"
POLICY = dict(
    prices=[PRICE],
    user_max_workers=["carol=0", "erin=1"],
    user_compute_hours_per_day=["dave=0.0001"],  # 0.36 s of compute a day
    record_interval_s=1.0,
)


@pytest.fixture(scope="module")
def usage_cluster(tmp_path_factory, cluster_ca):
    state = tmp_path_factory.mktemp("usage-cluster")
    cluster = local.up(state, workers=2, ca=cluster_ca, usage=policy_from_entries(**POLICY))
    yield cluster
    local.down(state)


def audit(cluster) -> list[dict]:
    return [json.loads(line) for line in (Path(cluster.state_dir) / "audit.jsonl").read_text().splitlines()]


def live(client: Client, since: float | None = None) -> list[dict]:
    return client.sync(getattr(client.scheduler, USAGE_OP), since=since)


def worker_ceiling(client: Client) -> int | None:
    """What the scaler would be told: the scheduler's ceiling provider, asked on the scheduler (by an admin)."""
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.extensions["daskfleet-usage"].worker_ceiling())


def wait_until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g}s")
        time.sleep(0.1)


def _by_value():
    """Task functions the workers cannot import by name (this module is not theirs): cloudpickle sends them whole."""

    def slow(seconds: float, tag: int) -> int:
        import time

        time.sleep(seconds)
        return tag

    return slow


slow = _by_value()


def test_two_users_are_charged_their_own_work_and_the_figures_add_up(usage_cluster, cluster_ca):
    start = time.time()
    with user_client(usage_cluster, cluster_ca, "alice") as alice, user_client(usage_cluster, cluster_ca, "bob") as bob:
        a = alice.map(slow, [0.5] * 4, range(4))
        b = bob.map(slow, [0.5] * 2, range(10, 12))  # other keys: a task both ask for runs once, for its first owner
        assert alice.gather(a) == [0, 1, 2, 3] and bob.gather(b) == [10, 11]
        summary = summarize(live(alice), start)
    users = summary.users
    assert users["alice"].tasks == 4 and users["bob"].tasks == 2
    assert users["alice"].compute_s >= 2.0 and users["bob"].compute_s >= 1.0
    assert users["alice"].compute_s > users["bob"].compute_s
    assert users["alice"].worker_s > users["bob"].worker_s > 0
    # Every worker-second is charged to someone (users, or idle): the per-user figures sum to the cluster's.
    cluster_worker_s = sum(summary.worker_s.values())
    assert sum(u.worker_s for u in users.values()) == pytest.approx(cluster_worker_s, rel=0.01)
    assert sum(u.cost_usd for u in users.values()) == pytest.approx(cluster_worker_s * 0.01, rel=0.01)


def test_a_task_using_lock_queue_and_worker_client_works_and_is_charged_to_its_user(usage_cluster, cluster_ca):
    def coordinated(x: int) -> int:
        from distributed import Lock, Queue, Variable, worker_client

        with Lock("usage-test-lock"):
            queue = Queue("usage-test-queue")
            queue.put(x)
            Variable("usage-test-variable").set(x)
            with worker_client() as client:
                inner = client.map(lambda y: y * 2, [queue.get(), 1, 2])
                return sum(client.gather(inner))

    start = time.time()
    with user_client(usage_cluster, cluster_ca, "frank") as frank:
        assert frank.submit(coordinated, 20).result(timeout=60) == 46
        summary = summarize(live(frank), start)
    assert summary.users["frank"].tasks == 4  # the task and the three it submitted
    submitted = [e for e in audit(usage_cluster) if e["event"] == "graph-submitted" and e.get("task_client")]
    assert submitted and submitted[-1]["identity"] == "frank" and submitted[-1]["task_client"] == "worker.local"
    assert "coordinated" in submitted[-1]["submitting_task"]


def test_a_task_client_may_not_do_what_is_reserved_for_users(usage_cluster, cluster_ca):
    def overreach():
        from distributed import get_client

        return get_client().run_on_scheduler(lambda: "ran on the scheduler")

    with user_client(usage_cluster, cluster_ca, "frank") as frank:
        with pytest.raises(PermissionError, match="'run_function' is reserved for users"):
            frank.submit(overreach).result(timeout=60)
    refused = [e for e in audit(usage_cluster) if e["event"] == "operation-refused" and e.get("op") == "run_function"]
    assert refused and refused[-1]["role"] == "worker"


def test_a_worker_certificate_graph_not_from_a_running_task_is_refused(usage_cluster, cluster_ca):
    # A worker certificate from a worker's host registers as a task client, but only a running task's graph is taken.
    worker_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker")
    with Client(usage_cluster.address, security=security_for(cluster_ca.cert_pem, worker_cert, "worker"),
                name="worker", timeout=30) as impostor:
        with pytest.raises(PermissionError, match="must come from a running task"):
            impostor.submit(len, "free compute").result(timeout=30)
    refused = [e for e in audit(usage_cluster) if e["event"] == "graph-refused" and e.get("role") == "worker"]
    assert refused


def test_limits_refuse_with_the_limit_the_usage_and_when_it_resets(usage_cluster, cluster_ca):
    with user_client(usage_cluster, cluster_ca, "carol") as carol:
        with pytest.raises(PermissionError, match="user carol may hold at most 0 workers"):
            carol.submit(len, "x").result(timeout=30)
    with user_client(usage_cluster, cluster_ca, "dave") as dave:
        assert dave.submit(slow, 0.5, 1).result(timeout=30) == 1  # under the limit: 0.36 s of compute a day
        with pytest.raises(PermissionError, match=r"user dave reached the limit of 0\.0001 compute hours per day "
                                                  r"\(used 0\.00 h today\); it resets at \d{4}-\d\d-\d\d 00:00 UTC"):
            dave.submit(len, "more").result(timeout=30)
    reasons = [e["reason"] for e in audit(usage_cluster) if e["event"] == "graph-refused"]
    assert any("carol may hold at most 0" in r for r in reasons) and any("dave reached" in r for r in reasons)


def test_a_worker_limit_clamps_the_cluster_and_tells_the_user(usage_cluster, cluster_ca):
    told: list[str] = []
    with user_client(usage_cluster, cluster_ca, "erin") as erin, user_client(usage_cluster, cluster_ca, "ops", ADMIN_ROLE) as ops:
        erin.subscribe_topic("warn", lambda event: told.append(__import__("pickle").loads(event[1]["message"])))
        futures = erin.map(slow, [1.0] * 4, range(4))
        # erin alone has work, and may hold one worker (the graph reaches the scheduler on its own stream)
        wait_until("a ceiling of 1", lambda: worker_ceiling(ops) == 1)
        erin.gather(futures)
        wait_until("clamp notice", lambda: told)
    assert "user erin may hold at most 1 worker(s) at once" in told[0] and "lifts when your work is done" in told[0]
    assert any(e["event"] == "usage-clamped" and e["identity"] == "erin" for e in audit(usage_cluster))


def test_usage_command_prints_the_table_live_and_from_the_records(usage_cluster, cluster_ca):
    with user_client(usage_cluster, cluster_ca, "gina") as gina:
        gina.gather(gina.map(slow, [0.2] * 3, range(3)))
    state = usage_cluster.state_dir

    def command(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "daskfleet", "usage", "local", "--state-dir", state, *extra],
                              capture_output=True, text=True, timeout=120)

    table = command("--since", "1h")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split() == ["user", "tasks", "compute", "h", "worker", "h", "cost", "USD"]
    assert any(line.split()[:2] == ["gina", "3"] for line in lines)
    assert lines[-1].startswith("total")
    # Records are written every record interval: the three tasks may span two of them.
    recorded = wait_until("gina's three tasks in the usage records", lambda: (
        out := json.loads(command("--records", "--json").stdout))["users"].get("gina", {}).get("tasks") == 3 and out)
    assert recorded["source"] == "records"
    assert command("--since", "yesterday-ish").returncode != 0


def test_the_budget_stop_refuses_graphs_and_scales_the_workers_to_zero(tmp_path, cluster_ca):
    # A dollar per local worker-second and a one-dollar budget: the stop comes within seconds of the cluster starting.
    policy = UsagePolicy.model_validate({**policy_from_entries(prices=["local=3600"]).model_dump(),
                                         "budget_monthly_usd": 1.0, "budget_stop_lead_s": 0.0})
    cluster = local.up(tmp_path / "state", workers=1, ca=cluster_ca, usage=policy, smoke=False)
    try:
        with user_client(cluster, cluster_ca, "alice") as alice, user_client(cluster, cluster_ca, "ops", ADMIN_ROLE) as ops:
            wait_until("the budget stop", lambda: any(e["event"] == "budget-stopped" for e in audit(cluster)))
            with pytest.raises(PermissionError, match=r"stopped for its budget: the cluster's spend this month is \$"):
                alice.submit(len, "x").result(timeout=30)
            assert worker_ceiling(ops) == 0
            # The scaler obeys the ceiling: the one worker is retired and not started again.
            wait_until("the workers retired", lambda: not alice.scheduler_info()["workers"])
            time.sleep(3 * local.LOCAL_INTERVAL_S)
            assert not alice.scheduler_info()["workers"]
            assert any(e["event"] == "workers-retiring" and "ceiling 0" in e["reason"] for e in audit(cluster)), \
                [e["event"] for e in audit(cluster)]
    finally:
        local.down(tmp_path / "state")
