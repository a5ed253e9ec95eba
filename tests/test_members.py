"""Local clusters side by side, and members versus admins inside one: real processes, real TLS on 127.0.0.1.

Two clusters: ``beta`` (started here with the command line, one worker, under its own $DASKFLEET_HOME) and
the session's ``local`` cluster. The local user is each one's admin; ``bob`` is made a member of ``beta`` (and
of the session's cluster, for his ordinary work: its workers may have imported pandas already).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, Lock, worker_client
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin
from distributed.protocol.serialize import ToPickle

import daskfleet
from daskfleet.conventions import CLUSTER_NAME_PATTERN
from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.local.state import LocalCluster, find_state_dir
from daskfleet.trust import pki

from support import security_for, wait_until

CLUSTER = "beta"


def daskfleet_cli(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskfleet", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DASKFLEET_HOME": str(home)})


def audit(state_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(state_dir) / "audit.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """This module's $DASKFLEET_HOME, for the commands it runs and for ``daskfleet.connect`` in it."""
    path = tmp_path_factory.mktemp("daskfleet-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DASKFLEET_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def beta(home):
    """Local cluster ``beta`` (one worker, never idle) with member ``bob``, as a user makes them."""
    up = daskfleet_cli(home, "local", "up", "--cluster", CLUSTER, "--workers", "1", "--idle-timeout", "0",
                       "--no-client-timeout", "0")
    try:
        assert up.returncode == 0, up.stderr
        assert f'daskfleet.connect("{CLUSTER}")' in up.stdout and f"local down --cluster {CLUSTER}" in up.stdout
        issued = daskfleet_cli(home, "local", "issue", "--user", "bob", "--cluster", CLUSTER, timeout=60)
        assert issued.returncode == 0, issued.stderr
        assert f'daskfleet.connect("{CLUSTER}", user="bob")' in issued.stdout
        yield LocalCluster.load(home / CLUSTER)
    finally:
        down = daskfleet_cli(home, "local", "down", "--cluster", CLUSTER)
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def bob(beta):
    with daskfleet.connect(CLUSTER, user="bob", timeout=30) as client:
        yield client


def refused_to_bob(state_dir, op: str) -> list[dict]:
    return [e for e in audit(state_dir) if e["event"] == "operation-refused" and e.get("op") == op and e["identity"] == "bob"]


# --- several local clusters -------------------------------------------------------------------


def test_cluster_names_are_checked_and_a_missing_cluster_or_member_is_named(tmp_path, monkeypatch):
    home = tmp_path / "home"
    bad = daskfleet_cli(home, "local", "up", "--cluster", "Bad_Name", timeout=60)
    assert bad.returncode == ExitCode.CONFIG
    assert bad.stderr.strip() == f"daskfleet: error: --cluster: 'Bad_Name' does not match {CLUSTER_NAME_PATTERN}"
    missing = daskfleet_cli(home, "local", "issue", "--user", "bob", "--cluster", "gamma", timeout=60)
    assert missing.returncode == ExitCode.CONFIG and "start it first with `daskfleet local up --cluster gamma`" in missing.stderr
    assert not home.exists()
    # Which names are local: 'local', a state directory, or a cluster `local up --cluster` made under $DASKFLEET_HOME.
    monkeypatch.setenv("DASKFLEET_HOME", str(home))
    assert find_state_dir(None) == find_state_dir("local") == home / "local"
    assert find_state_dir("gamma") is None  # an AWS cluster's name
    assert find_state_dir("gamma", tmp_path / "elsewhere") == tmp_path / "elsewhere"
    (home / "gamma" / "client").mkdir(parents=True)
    (home / "gamma" / "client" / "cert.pem").write_text("")
    assert find_state_dir("gamma") == home / "gamma"


def test_each_local_cluster_has_its_own_state_ca_trust_domain_and_ports(home, beta, bob, local_cluster):
    state = home / CLUSTER
    assert Path(beta.state_dir) == state and beta.cluster == CLUSTER
    for private in (state / "ca" / "ca-key.pem", state / "users" / "bob" / "key.pem", state / "client" / "key.pem"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    admin = pki.identity_of((state / "client" / "cert.pem").read_text())
    member = pki.identity_of((state / "users" / "bob" / "cert.pem").read_text())
    assert (admin.cluster, admin.role, admin.common_name) == (CLUSTER, "admin", beta.user)
    assert (member.cluster, member.role, member.common_name) == (CLUSTER, "client", "bob")
    assert (state / "ca" / "ca.pem").read_text() != (Path(local_cluster.state_dir) / "ca" / "ca.pem").read_text()
    assert beta.address != local_cluster.address
    # connect("beta") finds beta by its name, and checked that it answered as beta's scheduler.
    with daskfleet.connect(CLUSTER, timeout=30) as client:
        assert client.scheduler.address == beta.address
    assert bob.scheduler.address == beta.address
    status = daskfleet_cli(home, "local", "status", "--cluster", CLUSTER, timeout=60)
    assert beta.address in status.stdout and status.stdout.count("running") == 2
    # Commands that name a cluster find beta by its name too.
    environment = daskfleet_cli(home, "env", "status", CLUSTER, "--json", timeout=120)
    assert environment.returncode == 0, environment.stderr
    assert list(json.loads(environment.stdout)["roll"]["workers"]) == ["worker-0"]


def test_a_certificate_of_one_local_cluster_is_refused_by_another(home, beta, local_cluster, cluster_ca):
    since = time.time()
    # beta's certificate, sent to the session cluster's address: refused at the handshake, in one line.
    with pytest.raises(DaskfleetError) as refused:
        daskfleet.connect(CLUSTER, address=local_cluster.address, timeout=10)
    assert refused.value.exit_code == ExitCode.SCHEDULER_UNREACHABLE
    assert refused.value.message == (
        f"the server at {local_cluster.address} is not the scheduler of 'beta': its certificate is not from that "
        "cluster's CA (another cluster's, or a wrong address?); TLS: self-signed certificate in certificate chain")
    # Even trusting the other cluster's CA, beta's admin certificate does not get in: that cluster refuses it.
    state = home / CLUSTER
    admin = pki.IssuedCert((state / "client" / "cert.pem").read_text(), (state / "client" / "key.pem").read_text())
    with pytest.raises((OSError, TimeoutError)):
        Client(local_cluster.address, security=security_for(cluster_ca.cert_pem, admin), timeout=10)

    def refusals() -> str:
        """What the session cluster's scheduler audited of the TLS handshakes it refused since the test began."""
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))
        return " | ".join(e["reason"] for e in audit(local_cluster.state_dir) if e["event"] == "tls-refused" and e["time"] >= started)

    wait_until(lambda: "unknown ca" in refusals() and "certificate verify failed" in refusals(), 30,
               "the session cluster's audit lines of both refusals")


# --- members and admins -----------------------------------------------------------------------


def _by_value():
    """Plugins the nodes cannot import by name (this module is not theirs): cloudpickle sends them whole."""

    class Plugin(SchedulerPlugin):
        pass

    class QuietWorkerPlugin(WorkerPlugin):
        pass

    return Plugin, QuietWorkerPlugin


_Plugin, _WorkerPlugin = _by_value()


def _upload(client, tmp_path: Path):
    module = tmp_path / "daskfleet_members_upload.py"
    module.write_text("VALUE = 1\n")
    return client.upload_file(str(module))


#: What only admins may do, as a member would try it: the client call and the scheduler operation it reaches.
ADMIN_ONLY = {
    "restart": (lambda c, tmp: c.restart(), "restart"),
    "restart_workers": (lambda c, tmp: c.sync(c.scheduler.restart_workers, workers=list(c.scheduler_info()["workers"])),
                        "restart_workers"),
    "retire_workers": (lambda c, tmp: c.retire_workers(), "retire_workers"),
    "run": (lambda c, tmp: c.run(os.getpid), "broadcast"),
    "run_on_scheduler": (lambda c, tmp: c.run_on_scheduler(os.getpid), "run_function"),
    "scheduler plugin": (lambda c, tmp: c.register_plugin(_Plugin(), name="members-test"), "register_scheduler_plugin"),
    "worker plugin": (lambda c, tmp: c.register_plugin(_WorkerPlugin(), name="members-test"), "register_worker_plugin"),
    "unregister plugin": (lambda c, tmp: c.unregister_worker_plugin("members-test"), "unregister_worker_plugin"),
    "upload_file": (_upload, "register_scheduler_plugin"),
    "rebalance": (lambda c, tmp: c.rebalance(), "rebalance"),
    "replicate": (lambda c, tmp: c.replicate([c.submit(len, "replicate-me")]), "replicate"),
    "memory manager": (lambda c, tmp: c.amm.start(), "amm_handler"),
    "benchmark_hardware": (lambda c, tmp: c.benchmark_hardware(), "benchmark_hardware"),
    "dump from the scheduler": (lambda c, tmp: c.dump_cluster_state(str(tmp / "dump"), write_from_scheduler=True),
                                "dump_cluster_state_to_url"),
}


@pytest.mark.parametrize("call", ADMIN_ONLY.values(), ids=ADMIN_ONLY.keys())
def test_a_member_may_not_administer_and_the_refusal_is_audited(beta, bob, call, tmp_path):
    attempt, op = call
    before = len(refused_to_bob(beta.state_dir, op))
    with pytest.raises(PermissionError, match=r"refused operation bob .* is for the cluster's admins \(it .*\); "
                                              r"certificate role is 'client' \(a member\)"):
        attempt(bob, tmp_path)
    refused = refused_to_bob(beta.state_dir, op)
    assert len(refused) == before + 1 and refused[-1]["role"] == "client" and "admins" in refused[-1]["reason"]


def test_a_member_may_not_shut_the_cluster_down(beta):
    with daskfleet.connect(CLUSTER, user="bob", timeout=30) as client:
        with pytest.raises(PermissionError, match="'terminate' is for the cluster's admins"):
            client.shutdown()
    assert refused_to_bob(beta.state_dir, "terminate")
    with daskfleet.connect(CLUSTER, user="bob", timeout=30) as client:
        assert client.submit(len, "still up").result(timeout=30) == 8


@pytest.fixture(scope="module")
def member_of_local(local_cluster):
    """``bob``, made a member of the session's cluster too (its workers may have imported pandas already)."""
    from daskfleet.local.members import issue_member

    issue_member(Path(local_cluster.state_dir), "bob", "local")
    with daskfleet.connect("local", state_dir=local_cluster.state_dir, user="bob", timeout=30) as client:
        yield client


def test_a_members_ordinary_work_runs(member_of_local):
    import dask.dataframe as dd
    import pandas as pd

    bob = member_of_local
    assert pki.identity_of(bob.security.tls_client_cert).common_name == "bob"  # a member's certificate

    frame = pd.DataFrame({"team": ["a", "b", "c"] * 40, "hours": range(120)})
    totals = bob.compute(dd.from_pandas(frame, npartitions=3).groupby("team").hours.sum()).result(timeout=120)
    assert totals.to_dict() == frame.groupby("team").hours.sum().to_dict()
    assert bob.gather(bob.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]

    def nested(n: int) -> int:
        with Lock("members-lock"), worker_client() as inner:
            return sum(inner.gather(inner.map(lambda x: x + 1, range(n))))

    assert bob.submit(nested, 3).result(timeout=60) == 6
    with bob.as_current(), Lock("members-lock"):
        bob.publish_dataset(members_answer=bob.submit(int, "42"))
    assert bob.get_dataset("members_answer").result(timeout=30) == 42
    bob.unpublish_dataset("members_answer")
    assert set(bob.get_versions()["workers"])  # a read-only broadcast


def test_the_admin_split_is_no_security_boundary(beta, bob, tmp_path):
    # distributed unpickles a message before any handler (or daskfleet's guard) sees it: a member's object runs
    # inside the scheduler even on an operation that is refused (README, "Security model").
    marker = tmp_path / "ran-in"

    class Payload:
        def __reduce__(self):
            return exec, (f"import os; open({str(marker)!r}, 'w').write(str(os.getpid()))",)

    with pytest.raises(PermissionError, match="'run_function' is for the cluster's admins"):
        bob.sync(bob.scheduler.run_function, function=ToPickle(Payload()))
    scheduler = next(node for node in LocalCluster.load(Path(beta.state_dir)).nodes if node.name == "scheduler")
    assert marker.read_text() == str(scheduler.pid)


def test_a_user_without_a_certificate_is_told_the_command_that_makes_one(beta):
    with pytest.raises(DaskfleetError, match="local cluster 'beta' has no certificate for user 'carol': "
                                             "`daskfleet local issue --user carol --cluster beta` makes one"):
        daskfleet.connect(CLUSTER, user="carol")


def test_the_admin_administers(beta, tmp_path):
    with daskfleet.connect(CLUSTER, timeout=30) as admin:
        assert set(admin.run(os.getpid)) == set(admin.scheduler_info()["workers"])
        assert admin.run_on_scheduler(os.getpid) == next(n.pid for n in LocalCluster.load(Path(beta.state_dir)).nodes
                                                          if n.name == "scheduler")
        admin.register_plugin(_WorkerPlugin(), name="members-test")
        admin.unregister_worker_plugin("members-test")
        _upload(admin, tmp_path)
        assert admin.submit(lambda: __import__("daskfleet_members_upload").VALUE).result(timeout=30) == 1
        admin.rebalance()
        # Last: restart takes every worker down and back.
        admin.restart()
        assert admin.submit(len, "after restart").result(timeout=60) == 13
    assert not [e for e in audit(beta.state_dir) if e["event"] == "operation-refused" and e["role"] == "admin"]
