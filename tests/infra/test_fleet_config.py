"""The fleet's configuration: clusters, private clusters, admins and data, resolved purely and checked at the edge."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from infra.program import encode_config_value, example_config

from daskfleet_infra.config import StackConfig, StackConfigError, parse_stack_config
from daskfleet_infra.data_access import bucket_policy_backstop, shared_data_prefixes
from daskfleet_infra.identity import node_policy
from daskfleet_infra.limits import BUCKET_POLICY_LIMIT, check_policy_sizes, policy_size
from daskfleet_infra.lookups import Account
from daskfleet_infra.membership import member_policy
from daskfleet_infra.storage import bucket_policy, key_policy

from daskfleet import conventions

ACCOUNT = Account("123456789012", "aws", "amazonaws.com", "eu-west-1", "arn:aws:iam::123456789012:role/platform-deployer")
USERS = ["alice=arn:aws:iam::123456789012:role/alice", "bob=arn:aws:iam::123456789012:user/bob",
         "carol=arn:aws:iam::123456789012:role/carol"]


def parse(**changes: Any) -> StackConfig:
    config = {**example_config(), "users": USERS, "userComputeHoursPerDay": ["bob=40"], **changes}
    return parse_stack_config({key: encode_config_value(value) for key, value in config.items()})


def fleet_of(config: StackConfig) -> dict[str, tuple[list[str], list[str], bool]]:
    return {c.name: ([u.name for u in c.members], [u.name for u in c.admins], c.private) for c in config.fleet}


def problem(**changes: Any) -> str:
    with pytest.raises(StackConfigError) as caught:
        parse(**changes)
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def test_without_clusters_the_fleet_is_the_stacks_own_cluster_of_every_user():
    assert fleet_of(parse()) == {"analytics": (["alice", "bob", "carol"], [], False)}
    assert fleet_of(parse(admins=["carol"])) == {"analytics": (["alice", "bob"], ["carol"], False)}
    (cluster,) = parse().fleet
    assert cluster.settings is not None and cluster.settings.cluster == "analytics"


def test_private_clusters_add_one_cluster_per_user_of_which_they_are_the_admin():
    config = parse(privateClusters=True)
    assert fleet_of(config) == {
        "alice": ([], ["alice"], True), "analytics": (["alice", "bob", "carol"], [], False),
        "bob": ([], ["bob"], True), "carol": ([], ["carol"], True),
    }
    private = {c.name: c.settings for c in config.fleet}
    assert [u.name for u in private["bob"].user_list] == ["bob"]
    assert private["bob"].user_compute_hours_per_day == ["bob=40"]  # the stack-wide limit naming bob
    assert private["alice"].user_compute_hours_per_day == []  # ...does not reach alice's cluster


def test_declared_clusters_take_their_own_settings_and_the_stacks_for_the_rest():
    config = parse(clusters={"team": {"members": ["bob", "carol"], "admins": ["alice"], "workerMaxSize": 3,
                                      "userMaxWorkers": ["bob=1"], "data": [{"prefix": "shared/team/",
                                                                              "access": "read-write"}]}},
                   data=[{"prefix": "shared/reference/"}])
    (team,) = config.fleet
    assert (team.name, [u.name for u in team.members], [u.name for u in team.admins]) == ("team", ["bob", "carol"], ["alice"])
    assert team.settings.worker_max_size == 3 and team.settings.user_max_workers == ["bob=1"]
    assert team.settings.scheduler_instance_type == "m7i.large"  # the stack's
    assert [entry.prefix for entry in team.data] == ["shared/team/"]
    assert team.settings.scheduler_dns_name == "scheduler.team.daskfleet.internal"
    assert sorted(team.settings.publisher_arns) == sorted(arn.split("=", 1)[1] for arn in USERS)


def test_an_admin_listed_as_member_too_holds_the_admin_certificate_only():
    (team,) = parse(clusters={"team": {"members": ["alice", "bob"], "admins": ["alice"]}}).fleet
    assert [u.name for u in team.members] == ["bob"] and team.role_of(team.admins[0]) == conventions.ADMIN_ROLE


@pytest.mark.parametrize(("changes", "expected"), [
    ({"privateClusters": True, "clusters": {"alice": {"members": ["bob"]}}},
     "privateClusters: the private cluster of user alice and clusters.alice are both named alice; rename one of them"),
    ({"privateClusters": True, "cluster": "carol"},
     "privateClusters: the private cluster of user carol and the stack's own cluster (cluster) are both named carol"),
    ({"privateClusters": True, "users": [*USERS, "j.doe=arn:aws:iam::123456789012:role/jdoe"]},
     "privateClusters: user 'j.doe' cannot name a private cluster"),
    ({"clusters": {"team": {"members": ["dave"]}}}, "clusters.team.members: dave not among users (alice, bob, carol)"),
    ({"clusters": {"team": {"admins": ["dave"]}}}, "clusters.team.admins: dave not among users"),
    ({"clusters": {"team": {}}}, "clusters.team: no members and no admins; name at least one user"),
    ({"clusters": {"Team_1": {"members": ["bob"]}}}, "clusters: 'Team_1' is not a cluster name"),
    ({"clusters": {"team": {"members": ["bob"], "workerMinSize": 20}}},
     "clusters.team: workerMinSize: 20 is more than workerMaxSize (10)"),
    ({"clusters": {"team": {"members": ["bob"], "userMaxWorkers": ["alice=2"]}}},
     "clusters.team: userMaxWorkers: alice not among users (bob)"),
    ({"clusters": {"team": {"members": ["bob"], "workerMaxSise": 3}}},
     "clusters.team.workerMaxSise: unknown key (did you mean workerMaxSize?"),
    ({"clusters": {"team": {"members": ["bob"], "workerMaxSize": "many"}}}, "clusters.team.workerMaxSize: "),
    ({"clusters": {"team": {"members": ["bob"]}}, "admins": ["alice"]},
     "admins: only for a stack without clusters; each entry of clusters names its own admins"),
    ({"admins": ["dave"]}, "admins: dave not among users"),
    ({"data": [{"prefix": "clusters/bob/"}]}, "where each cluster owns its own prefix"),
    ({"data": [{"prefix": "envs/"}]}, "the published environments every node reads already"),
    ({"data": [{"prefix": ""}]}, "prefix: required for the fleet's bucket"),
    ({"data": [{"prefix": "shared/*/"}]}, "data[0].prefix: does not have the accepted form"),
    ({"data": [{"prefix": "shared/", "access": "write"}]}, "data[0].access: "),
    ({"data": [{"prefix": "shared/", "acess": "read"}]}, "data[0].acess: unknown key (did you mean access?"),
])
def test_a_bad_fleet_gives_one_error_naming_the_key_and_both_sides(changes, expected):
    assert expected in problem(**changes)


def test_the_fleet_and_its_policies_do_not_depend_on_the_order_of_the_configuration():
    """Whatever order users, clusters and their lists come in, the same clusters and the same grants."""
    clusters = {"team": {"members": ["bob", "carol"], "admins": ["alice"]},
                "lab": {"members": ["carol", "alice"], "data": [{"prefix": "shared/a/"}, {"prefix": "shared/b/"}]}}

    def rendered(config: StackConfig) -> str:
        bucket = "arn:aws:s3:::daskfleet-analytics-0000000"
        documents = {"key": key_policy(ACCOUNT, sorted(u.principal_arn for c in config.fleet for u in c.people)),
                     "bucket": bucket_policy(bucket, account=ACCOUNT, shared_prefixes=shared_data_prefixes(
                         [e for c in config.fleet for e in c.data]))}
        for cluster in config.fleet:
            documents[f"{cluster.name}-member"] = member_policy(cluster.name, ACCOUNT, bucket_arn=bucket, key_arn="k",
                                                                log_group_arn="l", data=cluster.data,
                                                              vendor_function="v")
            documents[f"{cluster.name}-worker"] = node_policy(cluster=cluster.name, role="worker", account=ACCOUNT,
                                                              bucket_arn=bucket, extra_read_buckets=[], key_arn="k",
                                                              log_group_arn="l", data=cluster.data,
                                                              vendor_function="v")
            documents[f"{cluster.name}-people"] = [(u.name, cluster.role_of(u)) for u in cluster.people]
        return json.dumps(documents, sort_keys=True)

    first = parse(privateClusters=True, clusters=clusters)
    shuffle = random.Random(15)
    for _ in range(3):
        users = shuffle.sample(USERS, len(USERS))
        mixed = {name: {key: shuffle.sample(value, len(value)) for key, value in entry.items()}
                 for name, entry in shuffle.sample(list(clusters.items()), len(clusters))}
        again = parse(privateClusters=True, clusters=mixed, users=users)
        assert [c.name for c in again.fleet] == [c.name for c in first.fleet]
        assert rendered(again) == rendered(first)


def test_the_bucket_policy_backstop_is_the_same_for_one_cluster_or_two_hundred():
    bucket = "arn:aws:s3:::daskfleet-analytics-0000000"
    assert bucket_policy_backstop(ACCOUNT, bucket, []) == bucket_policy_backstop(ACCOUNT, bucket, [])
    one = parse()
    many = parse(privateClusters=True, users=[f"user{i:03d}=arn:aws:iam::123456789012:role/user{i:03d}"
                                               for i in range(200)], userComputeHoursPerDay=[])
    assert len(many.fleet) == 201
    for config in (one, many):
        check_policy_sizes(config, ACCOUNT)  # 200 private clusters fit every limit
    sizes = [policy_size(bucket_policy(bucket, account=ACCOUNT, deployer=ACCOUNT.deployer_arn)) for _ in (one, many)]
    assert sizes[0] == sizes[1]


def test_a_fleet_whose_bucket_policy_would_not_fit_stops_before_anything_is_declared():
    publishers = [f"arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Publisher{i:03d}"
                  for i in range(250)]
    config = parse(environmentPublishers=publishers)
    with pytest.raises(StackConfigError) as caught:
        check_policy_sizes(config, ACCOUNT)
    (message,) = caught.value.problems
    assert message.startswith("environmentPublishers: the bucket policy would be ")
    assert f"more than S3's {BUCKET_POLICY_LIMIT}" in message and "250 publishers" in message
