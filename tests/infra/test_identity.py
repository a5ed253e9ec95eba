"""Identity: two node roles, each allowed only its own cluster's things; the scheduler alone scales workers.

(The scheduler's DNS record is kept by the SchedulerDns component's own role: test_scheduler_dns.py.)
"""

from __future__ import annotations

import json

import pytest

from infra.helpers import allowing, allows, statements

from daskfleet import conventions

ACCOUNT = "123456789012"
REGION = "eu-west-1"
#: Actions that touch data or secrets: never granted on "*".
DATA_ACTION_PREFIXES = ("s3:", "secretsmanager:", "ssm:", "kms:", "logs:", "route53:", "autoscaling:Set", "autoscaling:Terminate", "autoscaling:Complete")
#: Session Manager's instance-side actions: no resource-level permissions, no data (identity.SESSION_MANAGER_ACTIONS).
SESSION_MANAGER_ACTIONS = {
    "ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
}


def policy_of(record, role):
    return json.loads(record.one("aws:iam/rolePolicy:RolePolicy", f"identity-{role}").inputs["policy"])


def node_roles(record):
    return {role.name: role for role in record.of_type("aws:iam/role:Role") if role.name.startswith("identity-")}


def test_each_node_role_has_its_own_role_and_instance_profile_assumable_by_ec2(example):
    roles = node_roles(example)
    assert set(roles) == {"identity-scheduler", "identity-worker"}
    for node_role in conventions.NODE_ROLES:
        role = roles[f"identity-{node_role}"]
        assert role.inputs["name"] == f"daskfleet-analytics-{node_role}"
        (trust,) = statements(role.inputs["assumeRolePolicy"])
        assert trust == {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        profile = example.one("aws:iam/instanceProfile:InstanceProfile", f"identity-{node_role}")
        assert profile.inputs["role"] == role.outputs["name"]


def test_no_managed_policy_is_attached_to_a_node_role(every_record):
    """AmazonSSMManagedInstanceCore would let a node read every SSM parameter of the account."""
    names = {role.outputs["name"] for role in node_roles(every_record).values()}
    for attachment in every_record.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"):
        assert attachment.inputs["role"] not in names, attachment.inputs
    for role in node_roles(every_record).values():
        assert not role.inputs.get("managedPolicyArns"), role.name
    inline = [p.inputs["role"] for p in every_record.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] in names]
    assert sorted(inline) == sorted(names)  # one inline policy per role is everything it may do


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_nodes_get_only_what_session_manager_needs_and_read_no_parameter_outside_the_cluster(example, role):
    policy = policy_of(example, role)
    (session,) = allowing(policy, "ssmmessages:OpenDataChannel", "*")
    assert session["Sid"] == "SessionManager" and sorted(session["Action"]) == sorted(SESSION_MANAGER_ACTIONS)
    for action in SESSION_MANAGER_ACTIONS:
        assert allows(policy, action, "*"), action
    parameter = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter"
    for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"):
        assert allows(policy, action, f"{parameter}/daskfleet/analytics/spec/{role}")
        # The scheduler polls its cluster's deny-list; never another cluster's, never writes it.
        assert allows(policy, action, f"{parameter}{conventions.deny_list_parameter_name('analytics')}")
        assert not allows(policy, action, f"{parameter}{conventions.deny_list_parameter_name('other')}")
        assert not allows(policy, "ssm:PutParameter", f"{parameter}{conventions.deny_list_parameter_name('analytics')}")
        for elsewhere in ("/daskfleet/other/spec/worker", "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
                          "/prod/database/password", "/daskfleet/analyticsx/spec/worker", "/AmazonCloudWatch-linux"):
            assert not allows(policy, action, f"{parameter}{elsewhere}"), (action, elsewhere)
        assert not allows(policy, action, "*")
    assert not allows(policy, "ec2messages:GetMessages", "*")  # no Run Command
    assert not allows(policy, "ssm:SendCommand", "*") and not allows(policy, "ssm:GetDocument", "*")


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_no_data_or_secret_action_is_granted_on_every_resource(every_record, role):
    for statement in statements(policy_of(every_record, role)):
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in statement["Action"]:
            if action.startswith(DATA_ACTION_PREFIXES) and action not in SESSION_MANAGER_ACTIONS:
                assert "*" not in resources, (statement["Sid"], action)
                assert all(resource.startswith("arn:aws:") for resource in resources), statement["Sid"]


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_nodes_read_and_write_only_the_clusters_prefix_and_read_extra_buckets(adopted, role):
    policy = policy_of(adopted, role)
    bucket = adopted.one("aws:s3/bucket:Bucket").outputs["arn"]
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allows(policy, action, f"{bucket}/clusters/analytics/part-0.parquet")
        assert not allows(policy, action, f"{bucket}/scratch/part-0.parquet")  # the rest of the bucket is no cluster's
        assert not allows(policy, action, f"{bucket}/clusters/other/part-0.parquet")
        assert not allows(policy, action, "arn:aws:s3:::some-other-bucket/x")
    assert allows(policy, "s3:GetObject", f"{bucket}/envs/packages/0a1b")
    assert not allows(policy, "s3:PutObject", f"{bucket}/envs/packages/0a1b")
    (listing,) = allowing(policy, "s3:ListBucket", bucket)
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["clusters/analytics/*", "envs/*"]}}
    assert allows(policy, "s3:GetObject", "arn:aws:s3:::shared-reference-data/genome.fa")
    assert allows(policy, "s3:ListBucket", "arn:aws:s3:::shared-reference-data")
    assert not allows(policy, "s3:PutObject", "arn:aws:s3:::shared-reference-data/genome.fa")
    assert not allows(policy, "s3:DeleteObject", "arn:aws:s3:::shared-reference-data/genome.fa")


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_a_node_reads_no_secret_asks_the_vendor_and_reads_the_clusters_parameters_only(example, role):
    policy = policy_of(example, role)
    actions = [action for statement in policy["Statement"]
               for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])]
    assert "ssm:GetParameter" in actions and not [action for action in actions if action.startswith("secretsmanager:")]
    vendor = example.one("aws:lambda/function:Function", "cert-vendor-function").outputs["arn"]
    assert allows(policy, "lambda:InvokeFunction", vendor)
    assert not allows(policy, "lambda:InvokeFunction", "arn:aws:lambda:eu-west-1:123456789012:function:other")
    assert not allows(policy, "lambda:UpdateFunctionCode", vendor)
    own_spec = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{conventions.spec_parameter_name('analytics', role)}"
    assert allows(policy, "ssm:GetParameter", own_spec)
    assert not allows(policy, "ssm:PutParameter", own_spec)
    assert not allows(policy, "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/daskfleet/other/spec/{role}")
    for secret in example.of_type("aws:secretsmanager/secret:Secret"):  # the CA and the membership records
        assert not allows(policy, "secretsmanager:GetSecretValue", secret.outputs["arn"]), secret.inputs["name"]


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_nodes_use_the_cluster_key_through_s3_only_and_write_only_the_cluster_log_group(example, role):
    policy = policy_of(example, role)
    key = example.one("aws:kms/key:Key").outputs["arn"]
    bucket = example.one("aws:s3/bucket:Bucket").outputs["arn"]
    grants = {grant["Sid"]: grant for grant in allowing(policy, "kms:Decrypt", key)}
    assert all(grant["Resource"] == [key] for grant in grants.values())
    # Through S3, for the cluster's objects (its prefix read-write; the environments, and older objects, read).
    writes = grants["ClusterFleetKeyForOwnPrefixesThroughS3"]["Condition"]
    assert writes == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"},
                      "StringLike": {"kms:EncryptionContext:aws:s3:arn": [f"{bucket}/clusters/analytics/*"]}}
    reads = grants["ClusterFleetKeyReadsEnvironmentsAndDataThroughS3"]
    assert reads["Action"] == ["kms:Decrypt"]
    assert reads["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"] == [f"{bucket}/envs/*", bucket]
    assert all(grant["Condition"]["StringEquals"]["kms:ViaService"] == "s3.eu-west-1.amazonaws.com"
               for grant in grants.values())
    assert not allows(policy, "kms:Decrypt", "arn:aws:kms:eu-west-1:123456789012:key/another")
    log_group = example.one("aws:cloudwatch/logGroup:LogGroup", "observability-logs").outputs["arn"]
    assert allows(policy, "logs:PutLogEvents", f"{log_group}:log-stream:i-0123")
    assert not allows(policy, "logs:PutLogEvents", "arn:aws:logs:eu-west-1:123456789012:log-group:/other:log-stream:x")


def test_only_the_scheduler_scales_and_only_its_own_worker_group(example):
    scheduler, worker = policy_of(example, "scheduler"), policy_of(example, "worker")
    wake = json.loads(example.one("aws:iam/policy:Policy", "wake-policy").inputs["policy"])
    workers = example.one("aws:autoscaling/group:Group", "compute-worker").outputs["arn"]
    schedulers = example.one("aws:autoscaling/group:Group", "compute-scheduler").outputs["arn"]
    for action in ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
                   "autoscaling:SetInstanceProtection", "autoscaling:CompleteLifecycleAction"):
        (grant,) = allowing(scheduler, action, workers)
        assert grant["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/daskfleet:cluster": "analytics"}}
        assert not allows(wake, action, workers)  # users never change the worker group
        if action != "autoscaling:SetDesiredCapacity":
            assert not allows(scheduler, action, schedulers)
        if action != "autoscaling:CompleteLifecycleAction":
            assert not allows(worker, action, workers)
    other_cluster = workers.replace("daskfleet-analytics-worker", "daskfleet-other-worker")
    assert not allows(scheduler, "autoscaling:SetDesiredCapacity", other_cluster)


def test_the_scheduler_may_set_its_own_group_to_zero_when_idle_and_no_other(example):
    scheduler = policy_of(example, "scheduler")
    schedulers = example.one("aws:autoscaling/group:Group", "compute-scheduler").outputs["arn"]
    (grant,) = allowing(scheduler, "autoscaling:SetDesiredCapacity", schedulers)
    assert grant["Action"] == ["autoscaling:SetDesiredCapacity"]
    assert grant["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/daskfleet:cluster": "analytics"}}
    other = schedulers.replace("daskfleet-analytics-scheduler", "daskfleet-other-scheduler")
    assert not allows(scheduler, "autoscaling:SetDesiredCapacity", other)
    assert not allows(policy_of(example, "worker"), "autoscaling:SetDesiredCapacity", schedulers)


def test_users_may_wake_only_their_clusters_scheduler_group(example):
    """The wake policy: SetDesiredCapacity on the scheduler group (at most 1 instance), Describe to see it sleeps."""
    wake = example.one("aws:iam/policy:Policy", "wake-policy")
    assert wake.inputs["name"] == "daskfleet-analytics-wake"
    document = json.loads(wake.inputs["policy"])
    schedulers = example.one("aws:autoscaling/group:Group", "compute-scheduler").outputs["arn"]
    workers = example.one("aws:autoscaling/group:Group", "compute-worker").outputs["arn"]
    (grant,) = allowing(document, "autoscaling:SetDesiredCapacity", schedulers)
    assert grant["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/daskfleet:cluster": "analytics"}}
    assert not allows(document, "autoscaling:SetDesiredCapacity", workers)
    assert not allows(document, "autoscaling:UpdateAutoScalingGroup", schedulers)
    assert allows(document, "autoscaling:DescribeAutoScalingGroups", "*")
    actions = {action for statement in statements(document) for action in statement["Action"]}
    assert actions == {"autoscaling:SetDesiredCapacity", "autoscaling:DescribeAutoScalingGroups"}
    # attached to each configured user's role or user in this account
    roles = {a.inputs["role"] for a in example.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
             if a.inputs["policyArn"] == wake.outputs["arn"]}
    users = {a.inputs["user"] for a in example.of_type("aws:iam/userPolicyAttachment:UserPolicyAttachment")
             if a.inputs["policyArn"] == wake.outputs["arn"]}
    assert (roles, users) == ({"alice"}, {"bob"})
    assert example.outputs["wakePolicyArn"] == wake.outputs["arn"]


@pytest.mark.parametrize(
    ("principal", "attached"),
    [
        ("arn:aws:iam::123456789012:role/team/alice", ("role", "alice")),
        ("arn:aws:iam::123456789012:user/bob", ("user", "bob")),
        ("arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_DS_0123", None),
        ("arn:aws:iam::999999999999:role/alice", None),
    ],
)
def test_the_wake_policy_is_attached_where_this_stack_may_change_the_principal(principal, attached):
    from daskfleet_infra.lookups import Account
    from daskfleet_infra.wake import attachable

    account = Account("123456789012", "aws", "amazonaws.com", "eu-west-1", "arn:aws:iam::123456789012:role/deployer")
    assert attachable(principal, account) == attached


def test_a_worker_may_only_complete_its_own_groups_drain_hook(example):
    worker = policy_of(example, "worker")
    workers = example.one("aws:autoscaling/group:Group", "compute-worker").outputs["arn"]
    schedulers = example.one("aws:autoscaling/group:Group", "compute-scheduler").outputs["arn"]
    (grant,) = allowing(worker, "autoscaling:CompleteLifecycleAction", workers)
    assert grant["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/daskfleet:cluster": "analytics"}}
    assert not allows(worker, "autoscaling:CompleteLifecycleAction", schedulers)


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_no_node_may_change_dns(example, role):
    """Without NAT a node cannot reach Route 53 anyway; the scheduler's record is the DNS updater's job."""
    zone = example.one("aws:route53/zone:Zone").outputs["zoneId"]
    for statement in statements(policy_of(example, role)):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(action.startswith("route53") for action in actions), statement["Sid"]
    assert not allows(policy_of(example, role), "route53:ChangeResourceRecordSets", f"arn:aws:route53:::hostedzone/{zone}")


def test_only_the_scheduler_reads_back_the_usage_records_of_its_own_log_group(example):
    log_group = example.one("aws:cloudwatch/logGroup:LogGroup", "observability-logs").outputs["arn"]
    assert allows(policy_of(example, "scheduler"), "logs:FilterLogEvents", log_group)
    assert not allows(policy_of(example, "worker"), "logs:FilterLogEvents", log_group)
    assert not allows(policy_of(example, "scheduler"), "logs:FilterLogEvents",
                      "arn:aws:logs:eu-west-1:123456789012:log-group:/daskfleet/other")


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_a_node_may_mark_only_instances_of_its_own_group_unhealthy(example, role):
    """A node that cannot start marks its own instance unhealthy (IAM cannot name the instance: its group is the scope)."""
    policy = policy_of(example, role)
    own = example.one("aws:autoscaling/group:Group", f"compute-{role}").outputs["arn"]
    other_role = "worker" if role == "scheduler" else "scheduler"
    other = example.one("aws:autoscaling/group:Group", f"compute-{other_role}").outputs["arn"]
    (grant,) = allowing(policy, "autoscaling:SetInstanceHealth", own)
    assert grant["Action"] == ["autoscaling:SetInstanceHealth"]
    assert grant["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/daskfleet:cluster": "analytics"}}
    assert not allows(policy, "autoscaling:SetInstanceHealth", other)
    assert not allows(policy, "autoscaling:SetInstanceHealth", own.replace("daskfleet-analytics-", "daskfleet-other-"))
    assert not allows(policy, "autoscaling:SetInstanceHealth", "*")
    # what it reports first: its failure line, into the cluster's log group
    log_group = example.one("aws:cloudwatch/logGroup:LogGroup", "observability-logs").outputs["arn"]
    assert allows(policy, "logs:PutLogEvents", f"{log_group}:log-stream:{conventions.FAILURE_STREAM_PREFIX}i-0123")
