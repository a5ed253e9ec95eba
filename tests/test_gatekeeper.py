"""The scheduler's pure decisions, shown without a scheduler."""

from __future__ import annotations

from daskfleet.trust.gatekeeper import FINGERPRINT_KEY, Gatekeeper
from daskfleet.trust.peers import Peer

FP = "sha256:" + "a" * 64
VERSIONS = {"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0", "cloudpickle": "3", "msgpack": "1",
            "tornado": "6", "toolz": "1.2.0", "numpy": "2.4.6", "pandas": None}


def keeper(policy="refuse"):
    return Gatekeeper(cluster="analytics", expected_fingerprint=FP, versions=VERSIONS, client_version_policy=policy)


def peer(role, cluster="analytics"):
    return Peer(cluster, role, "alice")


def test_peer_is_read_from_a_verified_certificate():
    cert = {"subject": ((("organizationName", "daskfleet"),), (("commonName", "alice"),)),
            "subjectAltName": (("URI", "spiffe://analytics/role/client"),)}
    assert Peer.from_peercert(cert, "tls://1.2.3.4:5") == Peer("analytics", "client", "alice", "tls://1.2.3.4:5")
    assert Peer.from_peercert(None).role is None


def test_workers_need_a_worker_certificate_and_the_clusters_environment():
    assert keeper().check_worker(peer("worker"), {FINGERPRINT_KEY: FP}) is None
    assert "role is 'client'" in keeper().check_worker(peer("client"), {FINGERPRINT_KEY: FP}).reason
    assert "(none reported)" in keeper().check_worker(peer("worker"), {}).reason
    assert "cluster 'other'" in keeper().check_worker(peer("worker", "other"), {FINGERPRINT_KEY: FP}).reason


def test_a_worker_registers_only_an_address_on_its_own_host():
    me = Peer("analytics", "worker", "worker.analytics", "tls://10.0.0.7:40000")
    assert keeper().check_worker(me, {FINGERPRINT_KEY: FP}, "tls://10.0.0.7:8788") is None
    refusal = keeper().check_worker(me, {FINGERPRINT_KEY: FP}, "tls://10.0.0.9:8788")
    assert "registers address tls://10.0.0.9:8788, but connects from tls://10.0.0.7:40000" in refusal.reason


def test_clients_with_other_core_versions_are_refused_or_warned_by_policy():
    theirs = {"packages": {**VERSIONS, "dask": "2025.1.0", "pandas": "2.2.0"}}
    refusal, warning = keeper().check_client(peer("client"), theirs)
    assert "dask 2025.1.0 (yours) != 2026.8.0 (cluster)" in refusal.reason and warning is None
    assert "pandas" not in refusal.reason  # compared only where both sides have it
    refusal, warning = keeper("warn").check_client(peer("client"), theirs)
    assert refusal is None and "dask 2025.1.0" in warning


def worker_at(host):
    return Peer("analytics", "worker", "worker.analytics", f"tls://{host}:40000")


def test_only_a_worker_certificate_on_the_workers_own_host_reports_its_memory_kill():
    from daskfleet.conventions import MEMORY_KILL_OP

    k, me = keeper(), worker_at("10.0.0.7")
    assert k.check_operation(MEMORY_KILL_OP, me, {"worker": "tls://10.0.0.7:8788"}) is None
    assert "only itself, not tls://10.0.0.9:8788" in k.check_operation(
        MEMORY_KILL_OP, me, {"worker": "tls://10.0.0.9:8788"}).reason
    assert "role is 'client'; worker required" in k.check_operation(MEMORY_KILL_OP, peer("client"), {"worker": "tls://10.0.0.7:8788"}).reason


def test_workers_may_call_only_worker_operations_and_only_on_themselves():
    k, me = keeper(), worker_at("10.0.0.7")
    assert k.check_operation("heartbeat_worker", me, {"address": "tls://10.0.0.7:8788"}) is None
    assert k.check_operation("retire_workers", me, {"workers": ["tls://10.0.0.7:8788"]}) is None
    assert "only itself, not tls://10.0.0.9:8788" in k.check_operation(
        "retire_workers", me, {"workers": ["tls://10.0.0.7:8788", "tls://10.0.0.9:8788"]}).reason
    for op in ("run_function", "terminate", "restart", "register_scheduler_plugin", "broadcast", "who_has_not"):
        assert "admin or client required" in k.check_operation(op, me, {}).reason
        assert "reserved for users" in k.check_operation(op, me, {}, worker_hosts={"10.0.0.7"}).reason


def test_a_task_client_registers_and_coordinates_only_from_a_registered_workers_host():
    k, me = keeper(), worker_at("10.0.0.7")
    refusal, _ = k.check_client(me, {"packages": VERSIONS}, worker_hosts={"10.0.0.9"})
    assert "only from a registered worker's host, not tls://10.0.0.7:40000" in refusal.reason
    assert k.check_client(me, {"packages": VERSIONS}, worker_hosts={"10.0.0.7"}) == (None, None)
    assert "role is 'scheduler'; admin or client required" in k.check_client(peer("scheduler"), {"packages": VERSIONS})[0].reason
    for op in ("semaphore_acquire", "queue_put", "variable_set", "event_wait", "publish_put", "gather", "scatter"):
        assert k.check_operation(op, me, {}, worker_hosts={"10.0.0.7"}) is None
        assert "registered worker's host" in k.check_operation(op, me, {}, worker_hosts={"10.0.0.9"}).reason


def test_a_task_clients_graph_is_charged_to_the_owner_of_the_running_task_that_submits_it():
    from daskfleet.trust.gatekeeper import SubmittingTask

    k, me = keeper(), worker_at("10.0.0.7")
    assert k.graph_owner(peer("client"), None) == ("alice", None)
    running = SubmittingTask("outer-1", "processing", "10.0.0.7", "bob")
    assert k.graph_owner(me, running) == ("bob", None)
    cases = {
        None: "names none",
        SubmittingTask("outer-1", "memory", None, "bob"): "is not running",
        SubmittingTask("outer-1", "processing", "10.0.0.9", "bob"): "runs on 10.0.0.9, not on the task client's host 10.0.0.7",
        SubmittingTask("outer-1", None, None, None): "is not running",
        SubmittingTask("outer-1", "processing", "10.0.0.7", None): "no recorded owner",
    }
    for submitting, reason in cases.items():
        owner, refusal = k.graph_owner(me, submitting)
        assert owner is None and reason in refusal.reason


def test_admins_may_call_anything_but_worker_operations():
    k = keeper()
    for op in ("run_function", "restart", "register_worker_plugin", "terminate", "set_restrictions", "gather"):
        assert k.check_operation(op, peer("admin")) is None
    assert k.check_operation("retire_workers", peer("admin"), {"workers": ["tls://10.0.0.9:8788"]}) is None
    assert k.check_operation("broadcast", peer("admin"), {"msg": {"op": "run"}}) is None
    for op in ("heartbeat_worker", "shuffle_get_or_create", "register-worker"):
        assert "worker required" in k.check_operation(op, peer("admin")).reason
        assert "worker required" in k.check_operation(op, peer("client")).reason


def test_members_compute_and_coordinate_but_do_not_administer():
    k, member = keeper(), peer("client")
    for op in ("gather", "scatter", "publish_put", "semaphore_acquire", "queue_get", "event_set", "who_has", "retry",
               "get_task_stream", "daskfleet_usage", "daskfleet_env_roll", "daskfleet_scaling_state"):
        assert k.check_operation(op, member) is None, op
    for op in ("restart", "restart_workers", "retire_workers", "run_function", "feed", "register_scheduler_plugin",
               "register_worker_plugin", "unregister_worker_plugin", "terminate", "rebalance", "replicate",
               "set_restrictions", "set_resources", "benchmark_hardware", "dump_cluster_state_to_url"):
        refusal = k.check_operation(op, member, {"workers": ["tls://10.0.0.9:8788"]})
        assert f"{op!r} is for the cluster's admins" in refusal.reason and "certificate role is 'client'" in refusal.reason
    assert "(it restarts every worker, losing everyone's work" in k.check_operation("restart", member).reason
    # An operation nobody classified (a later distributed's) is for admins until someone does.
    assert "is not classified for members" in k.check_operation("reshape_cluster", member).reason
    assert k.check_operation("reshape_cluster", peer("admin")) is None


def test_members_broadcast_only_queries_and_only_ask_the_memory_manager_whether_it_runs():
    k, member = keeper(), peer("client")
    for op in ("broadcast", "proxy"):
        assert k.check_operation(op, member, {"msg": {"op": "versions"}}) is None
        for worker_op in ("run", "run_coroutine", "upload_file", "plugin-add", "terminate", "benchmark_disk", None):
            refusal = k.check_operation(op, member, {"msg": {"op": worker_op}})
            assert f"{op!r} of worker operation {worker_op!r} is for the cluster's admins" in refusal.reason
    assert "is for the cluster's admins" in k.check_operation("broadcast", member, {"msg": "run"}).reason
    assert k.check_operation("amm_handler", member, {"method": "running"}) is None
    assert "method 'start' is for the cluster's admins" in k.check_operation("amm_handler", member, {"method": "start"}).reason


def test_a_metrics_certificate_is_refused_everywhere_for_now():
    from daskfleet.trust.gatekeeper import WorkerGatekeeper

    scraper = peer("metrics")
    assert "role is 'metrics'" in keeper().check_operation("identity", scraper).reason
    assert "role is 'metrics'" in keeper().check_client(scraper, {"packages": VERSIONS})[0].reason
    assert "role is 'metrics'" in WorkerGatekeeper("analytics").check_operation("get_data", scraper).reason


def test_every_scheduler_operation_is_classified_once_with_a_reason():
    # A distributed upgrade that adds a handler fails here until the handler is classified for members or admins.
    import asyncio

    from distributed import Scheduler

    from daskfleet import conventions
    from daskfleet.trust.gatekeeper import (
        ADMIN_OPS, DENIED_OPS, MEMBER_OPS, TASK_CLIENT_OPS, WORKER_ONLY_OPS, WORKER_OPS,
    )

    async def handlers():
        return set(Scheduler(dashboard=False).handlers)

    served = asyncio.run(handlers()) | set(conventions.DASKFLEET_SCHEDULER_OPS)
    tables = [set(MEMBER_OPS), set(ADMIN_OPS), WORKER_ONLY_OPS, DENIED_OPS]
    assert set().union(*tables) == served
    assert sum(map(len, tables)) == len(served), "an operation is in two tables"
    assert all(reason.strip() for reason in [*MEMBER_OPS.values(), *ADMIN_OPS.values()])
    assert TASK_CLIENT_OPS - WORKER_OPS <= set(MEMBER_OPS)  # a task client does no more than a member


def test_nobody_may_open_a_raw_stream_or_act_without_a_role():
    k = keeper()
    for who in (peer("client"), worker_at("10.0.0.7")):
        assert "not served" in k.check_operation("connection_stream", who).reason
    assert k.check_operation("who_has", peer("scheduler")) is not None
    assert "no daskfleet role URI" in k.check_operation("who_has", Peer(None, None, "x")).reason


def test_a_stream_carries_only_its_roles_operations_as_itself():
    k = keeper()
    assert k.check_stream_message("client", "C1", {"op": "update-graph"}) is None
    assert k.check_stream_message("client", "C1", {"op": "client-desires-keys", "client": "C1"}) is None
    assert "not a client's" in k.check_stream_message("client", "C1", {"op": "task-finished", "worker": "w"}).reason
    assert "names client 'C2'" in k.check_stream_message("client", "C1", {"op": "client-releases-keys", "client": "C2"}).reason
    assert k.check_stream_message("worker", "tls://w:1", {"op": "task-finished"}) is None
    assert "not a worker's" in k.check_stream_message("worker", "tls://w:1", {"op": "update-graph"}).reason
    assert "names worker" in k.check_stream_message("worker", "tls://w:1", {"op": "task-erred", "worker": "tls://v:2"}).reason
    assert k.check_stream_message("worker", "tls://w:1", {"op": "close-stream"}) is None
    assert k.check_stream_message("client", "C1", {"op": "client-desires-keys", "client": "fire-and-forget"}) is None
    assert k.check_stream_message("client", "C1", {"op": "publish_flush_batched_send"}) is None


def test_worker_operation_tables_match_the_installed_distributed():
    # If distributed adds or renames a worker stream operation, this fails instead of workers or clients breaking.
    import asyncio
    import inspect

    from distributed import Scheduler

    from daskfleet.trust.gatekeeper import STREAM_CONTROL_OPS, WORKER_OPS, WORKER_STREAM_OPS

    async def tables():
        scheduler = Scheduler(dashboard=False)
        return dict(scheduler.stream_handlers), set(scheduler.handlers)

    streams, handlers = asyncio.run(tables())
    def taking(name):
        return {op for op, handler in streams.items() if name in inspect.signature(handler).parameters}

    assert WORKER_STREAM_OPS <= set(streams)
    assert WORKER_STREAM_OPS - taking("worker") == {"keep-alive", "task-erred"}  # worker comes in **msg
    assert taking("worker") <= WORKER_STREAM_OPS and not taking("client") & WORKER_STREAM_OPS
    assert not STREAM_CONTROL_OPS & set(streams)
    assert WORKER_OPS <= handlers


def test_a_worker_serves_clients_only_data_and_actors_and_runs_code_only_for_its_scheduler():
    from daskfleet.trust.gatekeeper import WorkerGatekeeper

    k = WorkerGatekeeper("analytics")
    client, scheduler, other_worker = peer("client"), peer("scheduler"), peer("worker")
    for op in ("get_data", "update_data", "actor_execute"):
        assert k.check_operation(op, client) is None
        assert k.check_operation(op, peer("admin")) is None
    # An admin runs code on workers through the scheduler (audited there), never directly.
    assert "scheduler required" in k.check_operation("run", peer("admin")).reason
    for op in ("run", "run_coroutine", "plugin-add", "terminate", "upload_file"):
        assert k.check_operation(op, scheduler) is None
        assert "scheduler required" in k.check_operation(op, client).reason
        assert "scheduler required" in k.check_operation(op, other_worker).reason
    assert k.check_operation("get_data", other_worker) is None
    assert "scheduler or worker required" in k.check_operation("connection_stream", client).reason
    assert "cluster 'other'" in k.check_operation("get_data", peer("client", "other")).reason


def test_a_prefix_profile_is_for_users_and_only_the_scheduler_asks_the_workers_for_theirs():
    # `daskfleet profile` calls one scheduler operation; the scheduler alone gathers the workers' profiles.
    from daskfleet.trust.gatekeeper import WorkerGatekeeper
    from daskfleet.usage.profiles import PROFILE_OP

    k = keeper()
    assert k.check_operation(PROFILE_OP, peer("client")) is None
    task_client = worker_at("10.0.0.7")  # a task's get_client(), from a registered worker's host
    assert "is reserved for users" in k.check_operation(PROFILE_OP, task_client, {}, {"10.0.0.7"}).reason
    workers = WorkerGatekeeper("analytics")
    for op in ("profile", "profile_metadata"):
        assert workers.check_operation(op, peer("scheduler")) is None
        assert "scheduler or worker required" in workers.check_operation(op, peer("client")).reason


def test_every_peer_of_the_cluster_may_hand_over_its_renewed_certificate_and_no_other_cluster_s():
    from daskfleet.conventions import RENEWED_OP

    k = keeper()
    for role in ("client", "admin", "worker"):
        assert k.check_operation(RENEWED_OP, peer(role), {"cert_pem": "..."}) is None
    assert "cluster" in k.check_operation(RENEWED_OP, peer("client", cluster="other"), {}).reason
