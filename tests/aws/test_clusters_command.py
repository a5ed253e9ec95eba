"""``daskfleet clusters``: the clusters a user can reach and their state, from their own login (moto server) and locally."""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from daskfleet import conventions
from daskfleet.aws.fleet import aws_clusters
from daskfleet.cli import cli
from daskfleet.client.clusters import aws_state, local_state
from daskfleet.local.state import LocalCluster, NodeProcess


def group(desired: int, *states: str) -> dict:
    return {"DesiredCapacity": desired, "Instances": [{"InstanceId": f"i-{n}", "LifecycleState": s} for n, s in enumerate(states)]}


@pytest.mark.parametrize(("scheduler", "workers", "expected"), [
    (group(0), group(0), ("asleep", 0)),
    (group(1, "Pending"), group(0), ("waking", 0)),
    (group(1, "InService"), group(3, "InService", "InService", "Pending"), ("running", 2)),
    (group(0, "Terminating"), group(0), ("asleep", 0)),
    (None, None, ("unknown", None)),
])
def test_an_aws_clusters_state_comes_from_its_two_groups(scheduler, workers, expected):
    assert aws_state(scheduler, workers)[:2] == expected


def _node(name: str, role: str, pid: int) -> NodeProcess:
    import psutil

    create = psutil.Process(pid).create_time() if pid > 0 else 0.0
    return NodeProcess(name=name, role=role, pid=pid, create_time=create, log="")


def test_a_local_clusters_state_comes_from_its_live_processes(tmp_path):
    me = os.getpid()
    running = LocalCluster(str(tmp_path), nodes=[_node("scheduler", "scheduler", me), _node("w1", "worker", me),
                                                 _node("w2", "worker", 0)])
    assert local_state(running)[:2] == ("running", 1)
    stopped = LocalCluster(str(tmp_path), nodes=[_node("scheduler", "scheduler", 0)])
    assert local_state(stopped)[:2] == ("stopped", 0)


@pytest.fixture
def fleet_of_alice(aws, monkeypatch, tmp_path):
    """alice holds certificates in her private cluster (asleep) and the team cluster (running, two workers);
    bob holds one in his; a local cluster was started once here and is stopped."""
    secrets = aws.client("secretsmanager")
    for cluster, user in (("alice", "alice"), ("team", "alice"), ("team", "bob"), ("bob", "bob")):
        secrets.create_secret(Name=conventions.client_tls_secret_name(cluster, user), SecretString="{}",
                              Tags=[{"Key": conventions.TAG_USER, "Value": user},
                                    {"Key": conventions.TAG_CLUSTER, "Value": cluster}])
    secrets.create_secret(Name=conventions.node_tls_secret_name("team", "worker"), SecretString="{}",
                          Tags=[{"Key": conventions.TAG_CLUSTER, "Value": "team"}])
    aws.create_node_groups("alice", schedulers=0, workers=0)
    aws.create_node_groups("team", schedulers=1, workers=2)
    aws.create_node_groups("bob", schedulers=1, workers=0)
    home = tmp_path / "home"
    (home / "local").mkdir(parents=True)
    LocalCluster(str(home / "local")).save()
    monkeypatch.setenv(conventions.HOME_ENV, str(home))
    credentials = aws.iam_user("alice", allow=["sts:GetCallerIdentity", "secretsmanager:ListSecrets",
                                                "autoscaling:DescribeAutoScalingGroups"])
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    return aws


def _wait_in_service(aws, cluster: str, role: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while sum(i["LifecycleState"] == "InService" for i in aws.group(cluster, role)["Instances"]) < count:
        assert time.monotonic() < deadline, f"{cluster} {role}: fewer than {count} instances in service"
        time.sleep(0.2)


def test_a_user_sees_the_clusters_they_hold_a_certificate_for_and_nothing_of_others(fleet_of_alice):
    _wait_in_service(fleet_of_alice, "team", "worker", 2)
    fleet_of_alice.enforce_iam()  # her login may list secrets' names and describe groups, nothing more
    found = {c.name: (c.state, c.workers) for c in aws_clusters()}
    assert found == {"alice": ("asleep", 0), "team": ("running", 2)}  # not bob's, though it exists


def test_the_command_prints_a_table_and_json_with_aws_and_local_clusters(fleet_of_alice):
    _wait_in_service(fleet_of_alice, "team", "worker", 2)
    fleet_of_alice.enforce_iam()
    runner = CliRunner()
    table = runner.invoke(cli, ["clusters"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["CLUSTER", "WHERE", "STATE", "WORKERS"]
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert rows["alice"][1:4] == ["aws", fleet_of_alice.region, "asleep"]
    assert rows["team"][1:5] == ["aws", fleet_of_alice.region, "running", "2"]
    assert rows["local"][1:4] == ["local", "stopped", "0"]
    assert 'daskfleet.connect("NAME")' in table.output
    document = json.loads(runner.invoke(cli, ["clusters", "--json"]).output)
    assert [(c["name"], c["where"], c["state"]) for c in document["clusters"]] == [
        ("alice", f"aws {fleet_of_alice.region}", "asleep"), ("team", f"aws {fleet_of_alice.region}", "running"),
        ("local", "local", "stopped")]
    assert document["notes"] == []


def test_without_an_aws_login_the_local_clusters_are_listed_and_a_note_says_why(fleet_of_alice, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    result = CliRunner().invoke(cli, ["clusters", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert [c["name"] for c in document["clusters"]] == ["local"]
    (note,) = document["notes"]
    assert note.startswith("AWS clusters not listed: no AWS region")
