"""Faults survived by the end-to-end cluster on moto, behind the fault proxy, one cluster for the module.

Each node runs the exact ``ExecStart`` of the unit its user data enables, under a supervisor applying the
restart semantics read back from the rendered unit (as systemd reads them). Emulated besides what
``test_end_to_end`` emulates: each instance's directories (systemd's RuntimeDirectory anew at each start,
StateDirectory and LogsDirectory kept), free ports instead of the stack's fixed ones (every node shares
127.0.0.1 here), DNS (the worker spec's host, updated as the DNS updater would when a scheduler is replaced),
and the user's port forward to the scheduler's name (a relay that connects wherever the name points now).
Each node runs with its node role's credentials and gets its certificate from the vendor at boot (aws.e2e.VendorLambda,
whose own requests pass the proxy too); the user logs in with their own.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from distributed import Client
from distributed.comm.core import CommClosedError
from aws.awsfake import Moto, post
from aws.e2e import (Instance, TcpRelay, VendorLambda, exec_start, free_port, load_into_moto, node_environment,
                     node_role_credentials, point_dns_at, restart_rule_of, stack_ca, user_credentials)
from aws.faultproxy import FaultProxy, complete_lifecycle_action_response
from aws.imds import ImdsServer
from infra.program import evaluate_program, example_config

import daskfleet
from daskfleet import conventions
from daskfleet.aws import userdata
from daskfleet.environments.records import current_fingerprint
from daskfleet.errors import ExitCode
from daskfleet.local.supervisor import Exit, Supervisor, last_line
from daskfleet.node.sources import SCHEDULER_INFO_FILE
from daskfleet.trust import pki
from daskfleet.trust.tls import TlsMaterial, client_security

from support import wait_until

FIRST, REPLACEMENT = "127.0.0.1", "127.0.0.2"
#: Bounds on recovery, generous for a loaded 2-core machine; a hang fails the test instead of the suite.
RECOVERY_S = 120


class SupervisedInstances:
    """A systemd emulation for the instances: the local cluster's Supervisor, polled from a thread."""

    def __init__(self, unit: str):
        self.rule = restart_rule_of(unit)
        self.supervisor = Supervisor(self.rule)
        self.instances: dict[str, Instance] = {}
        self.exits: list[Exit] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd", daemon=True)
        self._thread.start()

    def boot(self, name: str, instance: Instance) -> None:
        with self._lock:
            self.instances[name] = instance
            self.supervisor.add(name, instance.start)

    def terminate(self, name: str) -> None:
        """The instance goes: systemd stops its unit (SIGTERM), nothing restarts it."""
        with self._lock:
            self.supervisor.stop([name])

    def exits_of(self, name: str) -> list[tuple[int, bool]]:
        with self._lock:
            return [(event.returncode, event.restarting) for event in self.exits if event.name == name]

    def last_exit(self, name: str) -> tuple[int, bool] | None:
        exits = self.exits_of(name)
        return exits[-1] if exits else None

    def close(self) -> None:
        with self._lock:
            self.supervisor.stop(list(self.supervisor.children))
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                self.exits += self.supervisor.poll()


class Cluster:
    """The module's cluster: the stack in moto (behind the proxy), its groups, the supervised instances."""

    def __init__(self, stack, moto: Moto, proxy: FaultProxy, tmp_path):
        self.stack, self.moto, self.proxy, self.tmp_path = stack, moto, proxy, tmp_path
        self.name, self.region = stack.outputs["cluster"], stack.outputs["region"]
        self.user, principal = example_config()["users"][0].split("=", 1)
        self.user_env = user_credentials(moto.endpoint, principal, self.region)  # the user's own AWS login
        self.roles = {role: node_role_credentials(moto.endpoint, stack, self.name, role, self.region)
                      for role in conventions.NODE_ROLES}
        self.ports = {"scheduler": free_port(), "dashboard": free_port(), "worker": free_port()}
        self.nodes = SupervisedInstances(userdata.render_unit())
        self.relay = TcpRelay((FIRST, self.ports["scheduler"]))
        self.imds: list[ImdsServer] = []

    def instance(self, role: str, instance_id: str, address: str) -> Instance:
        unit_role, argv = exec_start(self.stack.user_data[role])
        assert unit_role == role and argv[0] == userdata.DASKFLEET_EXECUTABLE
        imds = ImdsServer(instance_id=instance_id, region=self.region, private_ipv4=address,
                          tags=self.stack.instance_tags[role], user_data=self.stack.user_data[role].encode()).start()
        self.imds.append(imds)
        env = {**node_environment(), "AWS_ENDPOINT_URL": self.proxy.url, **self.roles[role]}
        return Instance(role, imds, self.tmp_path / instance_id, argv, env)

    def group_instances(self, role: str) -> list[str]:
        return [item["InstanceId"] for item in self.moto.group(self.name, role)["Instances"]
                if item["LifecycleState"] == "InService"]

    def boot_scheduler(self, name: str, instance_id: str, address: str) -> Instance:
        node = self.instance("scheduler", instance_id, address)
        self.nodes.boot(name, node)
        info = node.directory("run") / SCHEDULER_INFO_FILE
        wait_until(info.exists, RECOVERY_S, f"{name} listening")
        return node

    def connect(self):
        """The user connects (logging in at the vendor the first time) with their own AWS login."""
        with pytest.MonkeyPatch.context() as as_user:
            for name, value in self.user_env.items():
                as_user.setenv(name, value)
            return daskfleet.connect(self.name, address=self.relay.address, wake=False, timeout=30)

    def connect_as_admin(self) -> Client:
        """A client with an admin certificate (only admins restart a cluster): the example stack names no admin,
        so one is signed here with the stack's CA."""
        ca = stack_ca(self.stack, self.name)
        admin = pki.issue_certificate(ca, self.name, conventions.ADMIN_ROLE, user=self.user)
        material = TlsMaterial(ca.cert_pem, admin.cert_pem, admin.key_pem)
        return Client(self.relay.address, security=client_security(material, self.name), timeout=30)

    def close(self) -> None:
        self.nodes.close()
        self.relay.close()
        for imds in self.imds:
            imds.stop()


@pytest.fixture(scope="module")
def cluster(moto_endpoint, tmp_path_factory):
    stack = evaluate_program({**example_config(), "environmentFingerprint": current_fingerprint(), "workerMinSize": 1})
    region = stack.outputs["region"]
    with pytest.MonkeyPatch.context() as patch, FaultProxy(moto_endpoint) as proxy:
        for key, value in {"AWS_ENDPOINT_URL": proxy.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_EC2_METADATA_DISABLED": "true",
                           "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}.items():
            patch.setenv(key, value)
        for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            patch.delenv(key, raising=False)
        patch.setenv("DASKFLEET_HOME", str(tmp_path_factory.mktemp("laptop")))  # where the user's login is kept
        post(f"{moto_endpoint}/moto-api/reset")
        moto = Moto(moto_endpoint, region)
        cluster = Cluster(stack, moto, proxy, tmp_path_factory.mktemp("instances"))
        load_into_moto(moto_endpoint, stack, cluster.name, region, scheduler_host=FIRST, ports=cluster.ports)
        # The vendor's AWS is the nodes' (proofs name the STS endpoint they were signed for): behind the proxy too.
        vendor = VendorLambda.of_stack(proxy.url, stack, {cluster.name})
        for name, value in vendor.env.items():
            patch.setenv(name, value)
        moto.create_node_groups(cluster.name, workers=1)
        proxy.emulate["CompleteLifecycleAction"] = complete_lifecycle_action_response()  # moto lacks it
        # Boot through a burst of faults: more than botocore's own attempts, resets, server errors, slow answers.
        proxy.schedule("GetParameter", "throttle", "reset", "503", "throttle", "500")
        proxy.schedule("CreateLogStream", "throttle", "reset", "slow")
        try:
            (scheduler_id,) = cluster.group_instances("scheduler")
            cluster.boot_scheduler("scheduler", scheduler_id, FIRST)
            (worker_id,) = cluster.group_instances("worker")
            cluster.nodes.boot("worker", cluster.instance("worker", worker_id, FIRST))
            yield cluster
        finally:
            cluster.close()
            vendor.close()


def rejoined(client) -> bool:
    """The client is connected again and sees a worker (it may still be reconnecting)."""
    try:
        return client.status == "running" and bool(client.scheduler_info(n_workers=-1)["workers"])
    except (OSError, CommClosedError):
        return False


def audit_lines(node: Instance) -> list[str]:
    return (node.directory("logs") / "audit.jsonl").read_text().splitlines()


def shipped(cluster: Cluster, node: Instance) -> list[str]:
    logs = cluster.moto.client("logs")
    events = logs.get_log_events(logGroupName=conventions.log_group_name(cluster.name),
                                 logStreamName=f"audit/{node.instance_id}")["events"]
    return [event["message"] for event in events]


def test_the_nodes_boot_through_throttling_resets_server_errors_and_slow_answers(cluster):
    with cluster.connect() as client:
        client.wait_for_workers(1, timeout=RECOVERY_S)
        assert client.submit(sum, range(10)).result(timeout=60) == 45
    wait_until(lambda: not any(cluster.proxy.plan.values()), 60, "every scheduled fault served to the agents")
    assert cluster.proxy.served(fault="reset") >= 2 and cluster.proxy.served(fault="slow") == 1
    assert cluster.nodes.exits == []  # no node failed: they retried within their deadline
    journals = "".join(node.log.read_text() for node in cluster.nodes.instances.values())
    assert "failed: ServiceUnavailable" in journals and "trying again in" in journals


def test_client_restart_returns_within_its_timeout_with_every_worker_back(cluster):
    with cluster.connect_as_admin() as client:
        client.wait_for_workers(1, timeout=RECOVERY_S)
        before = set(client.scheduler_info()["workers"])
        started = time.monotonic()
        client.restart()  # raises if the workers do not come back within its timeout
        assert time.monotonic() - started < RECOVERY_S
        after = set(client.scheduler_info()["workers"])
        assert len(after) == len(before) == 1
        assert client.submit(sum, range(5)).result(timeout=60) == 10
    assert cluster.nodes.exits_of("worker") == [(ExitCode.RESTART_REQUESTED, True)]
    assert cluster.moto.group(cluster.name, "worker")["DesiredCapacity"] == 1  # the scaler asked for no replacement
    worker = cluster.nodes.instances["worker"]
    assert "daskfleet: the scheduler restarts this worker (client.restart()): restarting" in worker.log.read_text()


def test_audit_lines_reach_the_log_group_through_an_outage_and_none_is_lost(cluster):
    scheduler = cluster.nodes.instances["scheduler"]
    cluster.proxy.outage = {"PutLogEvents"}
    try:
        with cluster.connect() as client:
            assert client.submit(sum, [1, 2]).result(timeout=60) == 3
        wait_until(lambda: cluster.proxy.served("PutLogEvents", "503") >= 2, RECOVERY_S, "the outage to be met")
    finally:
        cluster.proxy.outage = set()
    wait_until(lambda: shipped(cluster, scheduler) == audit_lines(scheduler), RECOVERY_S,
               "every audit line in the log group")
    assert "lines-dropped" not in "".join(shipped(cluster, scheduler))


def test_the_scheduler_is_replaced_and_the_worker_and_a_client_rejoin_it(cluster):
    old = cluster.nodes.instances["scheduler"]
    with cluster.connect() as client:
        client.wait_for_workers(1, timeout=RECOVERY_S)
        # The group replaces the scheduler's instance: a new one (new id, new address) launches, the DNS updater
        # points the scheduler's name at it, the old one is terminated.
        cluster.moto.client("autoscaling").terminate_instance_in_auto_scaling_group(
            InstanceId=old.instance_id, ShouldDecrementDesiredCapacity=False)
        (new_id,) = wait_until(lambda: [i for i in cluster.group_instances("scheduler") if i != old.instance_id],
                               RECOVERY_S, "the group's replacement instance")
        point_dns_at(cluster.moto.endpoint, cluster.stack, cluster.name, cluster.region, REPLACEMENT, cluster.ports)
        cluster.relay.target = (REPLACEMENT, cluster.ports["scheduler"])
        started = time.monotonic()
        cluster.nodes.terminate("scheduler")
        new = cluster.boot_scheduler("scheduler-2", new_id, REPLACEMENT)
        # The same client object reconnects (through the forward, to the name) and computes on the rejoined worker.
        wait_until(lambda: rejoined(client), RECOVERY_S, "the client and the worker to rejoin the new scheduler")
        assert client.submit(sum, range(4), pure=False).result(timeout=60) == 6
        assert time.monotonic() - started < RECOVERY_S
        (worker,) = client.scheduler_info()["workers"].values()
        assert client.scheduler_info()["address"].startswith(f"tls://{REPLACEMENT}:")
        assert worker["name"] == cluster.nodes.instances["worker"].instance_id
    assert cluster.nodes.exits_of("worker")[-1] == (ExitCode.SCHEDULER_LOST, True)
    assert f"lost the scheduler tls://{FIRST}:{cluster.ports['scheduler']}: restarting to rejoin it" in \
        cluster.nodes.instances["worker"].log.read_text()
    assert cluster.nodes.exits_of("scheduler") == [(ExitCode.OK, False)]
    joined = [json.loads(line) for line in audit_lines(new) if '"client-connect"' in line]
    assert joined and joined[0]["identity"] == cluster.user  # the new instance's own trail


def test_a_drained_worker_completes_its_drain_hook_through_faults_and_stays_down(cluster):
    worker = cluster.nodes.instances["worker"]
    cluster.proxy.schedule("CompleteLifecycleAction", "throttle", "503")
    worker.imds.extra["meta-data/autoscaling/target-lifecycle-state"] = "Terminated"
    wait_until(lambda: cluster.nodes.last_exit("worker") == (ExitCode.DRAINED, False), RECOVERY_S,
               "the worker to drain and stay down")
    assert last_line(str(worker.log)) == "drained: its auto scaling group is terminating it; its data moved; stopping"
    (completed,) = [params for operation, params in cluster.proxy.emulated if operation == "CompleteLifecycleAction"]
    assert completed["InstanceId"] == worker.instance_id and completed["LifecycleActionResult"] == "CONTINUE"
    assert cluster.proxy.served("CompleteLifecycleAction") == 2  # both faults met, then it got through
