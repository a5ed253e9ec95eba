"""Auto scaling groups: changed only when named, a cluster's workers by its scheduler's role alone."""

import json

import pytest
from policy.harness import UNKNOWN, resource_violations, stack_resource, stack_violations

POLICY = "aws:iam/policy:Policy"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
NAMED = "autoscaling-changes-name-their-group"
OWNER = "worker-group-changed-only-by-its-scheduler"


def group_arn(name: str, uuid: str = "*") -> str:
    return f"arn:aws:autoscaling:eu-west-1:111122223333:autoScalingGroup:{uuid}:autoScalingGroupName/{name}"


WORKERS = group_arn("daskfleet-team-a-worker")
SCHEDULERS = group_arn("daskfleet-team-a-scheduler")
TAGGED = {"StringEquals": {"autoscaling:ResourceTag/daskfleet:cluster": "team-a"}}


def document(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource, sid="Grant"):
    return {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resource, "Condition": TAGGED}


SCHEDULER_POLICY = document(
    allow(["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"], [WORKERS]),
    allow(["autoscaling:SetDesiredCapacity"], [SCHEDULERS]),
    {"Effect": "Allow", "Action": ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"], "Resource": "*"},
)


@pytest.mark.parametrize("resource_type", [POLICY, ROLE_POLICY, "aws:iam/userPolicy:UserPolicy"])
def test_changes_on_named_groups_and_reads_on_everything_pass(resource_type):
    assert resource_violations(NAMED, resource_type, {"policy": SCHEDULER_POLICY}) == []
    assert resource_violations(NAMED, resource_type, {"policy": UNKNOWN}) == []


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("autoscaling:SetDesiredCapacity", "*"),
        ("autoscaling:TerminateInstanceInAutoScalingGroup", group_arn("*")),
        ("autoscaling:Set*", group_arn("daskfleet-*-worker")),
        ("autoscaling:*", "*"),
        ("*", group_arn("daskfleet-team-?-worker")),
        ("AUTOSCALING:UPDATEAUTOSCALINGGROUP", "arn:aws:autoscaling:*:*:*"),
    ],
)
def test_changes_on_unnamed_groups_fail(action, resource):
    [message] = resource_violations(NAMED, POLICY, {"policy": document(allow(action, resource, sid="Broad"))})
    assert message.startswith("Statement[0] (Broad) allows ") and repr(resource) in message
    assert "name the cluster's own auto scaling group by ARN" in message


def test_not_resource_counts_as_everything():
    statement = {"Effect": "Allow", "Action": "autoscaling:SetDesiredCapacity", "NotResource": WORKERS}
    [message] = resource_violations(NAMED, POLICY, {"policy": document(statement)})
    assert "every resource but those under NotResource" in message


def role_policy(name, role, policy):
    return stack_resource(ROLE_POLICY, name, {"role": role, "policy": policy})


def test_the_schedulers_role_changes_its_workers_and_users_wake_the_scheduler_group():
    wake = stack_resource(POLICY, "wake", {"policy": document(allow("autoscaling:SetDesiredCapacity", [SCHEDULERS]))})
    worker = role_policy("worker", "daskfleet-team-a-worker", document(allow("autoscaling:CompleteLifecycleAction", [WORKERS])))
    resources = [role_policy("scheduler", "daskfleet-team-a-scheduler", SCHEDULER_POLICY), wake, worker]
    assert stack_violations(OWNER, resources) == []


@pytest.mark.parametrize(
    "resource",
    [
        role_policy("worker", "daskfleet-team-a-worker", document(allow("autoscaling:SetDesiredCapacity", [WORKERS]))),
        role_policy("other", "daskfleet-team-b-scheduler", document(allow("autoscaling:Terminate*", [WORKERS]))),
        stack_resource(POLICY, "users", {"policy": document(allow("autoscaling:SetDesiredCapacity", [WORKERS]))}),
    ],
)
def test_anyone_but_the_clusters_scheduler_changing_its_workers_fails(resource):
    [(urn, message)] = stack_violations(OWNER, [resource])
    assert urn == resource.urn
    assert "on worker group daskfleet-team-a-worker: only the role daskfleet-team-a-scheduler" in message


def test_a_scheduler_group_only_has_its_capacity_set():
    grant = document(allow(["autoscaling:SetDesiredCapacity", "autoscaling:UpdateAutoScalingGroup"], [SCHEDULERS]))
    [(_, message)] = stack_violations(OWNER, [stack_resource(POLICY, "wake", {"policy": grant})])
    assert "allows updateautoscalinggroup on scheduler group daskfleet-team-a-scheduler" in message


def test_a_role_not_known_at_preview_is_judged_later():
    resource = role_policy("later", UNKNOWN, document(allow("autoscaling:SetDesiredCapacity", [WORKERS])))
    assert stack_violations(OWNER, [resource]) == []


def test_each_node_role_may_mark_instances_of_its_own_group_unhealthy():
    """A node that cannot start marks its own instance unhealthy, so its group replaces it."""
    unhealthy = "autoscaling:SetInstanceHealth"
    resources = [
        role_policy("worker", "daskfleet-team-a-worker", document(allow(unhealthy, [WORKERS]))),
        role_policy("scheduler", "daskfleet-team-a-scheduler", document(allow([unhealthy, "autoscaling:SetDesiredCapacity"],
                                                                              [SCHEDULERS]))),
    ]
    assert stack_violations(OWNER, resources) == []


@pytest.mark.parametrize(
    ("holder", "group"),
    [("daskfleet-team-a-worker", SCHEDULERS), ("daskfleet-team-b-worker", WORKERS), (None, WORKERS)],
)
def test_marking_another_groups_instances_unhealthy_fails(holder, group):
    grant = document(allow("autoscaling:SetInstanceHealth", [group]))
    resource = role_policy("x", holder, grant) if holder else stack_resource(POLICY, "users", {"policy": grant})
    [(_, message)] = stack_violations(OWNER, [resource])
    assert "allows setinstancehealth on" in message
