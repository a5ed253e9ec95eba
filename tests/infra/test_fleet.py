"""A fleet under mocks: two private clusters and a team cluster, each its own trust boundary (scenarios.fleet_config).

Who may do what is asked of the declared policies themselves (identity policies, the bucket, key and
secret policies) through infra.policy_sim, as AWS would combine them.
"""

from __future__ import annotations

import json
import re

import pytest
from cryptography import x509

from infra.access_model import AccessModel
from infra.helpers import all_strings, statements

from daskfleet import conventions
from daskfleet.trust.vendor import VendorPolicy
from daskfleet_infra.dns_updater import handler as updater

CLUSTERS = ("alice", "bob", "team")
REGION = "eu-west-1"
VIA_S3 = f"s3.{REGION}.amazonaws.com"


@pytest.fixture(scope="module")
def model(fleet) -> AccessModel:
    return AccessModel(fleet)


def _cluster_resources(record, cluster):
    return record.descendants(record.one("daskfleet:aws:Cluster", cluster))


def test_the_fleet_is_the_declared_cluster_and_one_private_cluster_per_user(fleet):
    clusters = fleet.outputs["clusters"]
    assert sorted(clusters) == list(CLUSTERS)
    assert {name: (out["members"], out["admins"], out["private"]) for name, out in clusters.items()} == {
        "alice": ([], ["alice"], True), "bob": ([], ["bob"], True), "team": (["bob"], ["alice"], False),
    }
    # The stack's own cluster (analytics) only names the shared resources here; no output speaks for it.
    assert fleet.outputs["cluster"] == "analytics" and "schedulerAddress" not in fleet.outputs
    assert fleet.outputs["bucketName"].startswith(conventions.bucket_name_prefix("analytics"))
    for name, out in clusters.items():
        assert out["schedulerAddress"] == f"tls://scheduler.{name}.daskfleet.internal:{conventions.SCHEDULER_PORT}"
        assert out["dataUrl"] == f"s3://{fleet.outputs['bucketName']}/clusters/{name}/"
        assert out["memberPolicyArn"].endswith(f":policy/{conventions.member_policy_name(name)}")


def test_each_cluster_owns_its_roles_groups_specs_secrets_log_group_and_budget_under_its_name(fleet):
    for name in CLUSTERS:
        mine = _cluster_resources(fleet, name)
        names = {r.inputs.get("name") for r in mine if r.custom}
        for role in conventions.NODE_ROLES:
            assert {conventions.iam_role_name(name, role), conventions.node_group_name(name, role),
                    conventions.spec_parameter_name(name, role)} <= names
        assert {conventions.ca_secret_name(name), conventions.log_group_name(name), conventions.budget_name(name),
                conventions.scheduler_dns_function_name(name), conventions.member_policy_name(name)} <= names
        # Nothing of a cluster names another cluster.
        for resource in mine:
            for other in set(CLUSTERS) - {name}:
                for text in all_strings(resource.inputs):
                    assert f"daskfleet-{other}-" not in text and f"/daskfleet/{other}/" not in text, (resource.name, text)
    # One network, bucket and key for the whole fleet.
    for token in ("aws:ec2/vpc:Vpc", "aws:s3/bucket:Bucket", "aws:kms/key:Key", "aws:ec2/securityGroup:SecurityGroup"):
        assert all(r.parent and "daskfleet:aws:Cluster" not in r.urn for r in fleet.of_type(token)), token


def test_each_cluster_has_its_own_ca_and_admins_are_admins_of_its_vendor_policy(fleet):
    roles = {}
    cas = {}
    for name in CLUSTERS:
        policy = VendorPolicy.from_json(fleet.parameters[conventions.vendor_policy_parameter_name(name)])
        for user in ("alice", "bob"):
            secret = conventions.client_tls_secret_name(name, user)
            if secret not in fleet.secrets:
                assert user not in policy.users
                continue
            record = json.loads(fleet.secrets[secret])
            assert user in policy.users and (user in policy.admins) == (record["role"] == conventions.ADMIN_ROLE)
            roles[name, user] = (name, record["role"])
            cas.setdefault(name, set()).add(record["ca"])
        cas[name].add(json.loads(fleet.secrets[conventions.ca_secret_name(name)])["cert"])
    assert roles == {
        ("alice", "alice"): ("alice", conventions.ADMIN_ROLE), ("bob", "bob"): ("bob", conventions.ADMIN_ROLE),
        ("team", "alice"): ("team", conventions.ADMIN_ROLE), ("team", "bob"): ("team", conventions.MEMBER_ROLE),
    }
    assert all(len(found) == 1 for found in cas.values()) and len({ca for found in cas.values() for ca in found}) == 3


def test_no_principal_reaches_a_resource_of_a_cluster_it_does_not_belong_to(model):
    """alice's resources are out of reach of every principal of bob's (his login, his cluster's roles), and so on."""
    reached = []
    for principal in model.principals:
        for cluster in CLUSTERS:
            if cluster in principal.clusters:
                continue
            for what, requests in model.operations(cluster):
                done, why = model.succeeds(principal, requests)
                if done:
                    reached.append(f"{principal.label}: {what} of {cluster} ({why})")
                # Nor do its own policies grant any single step of it (the bucket's and secrets' policies aside).
                for action, resource, context in requests:
                    decision = model.decide_by_identity(principal, action, resource, **context)
                    if decision.allowed:
                        reached.append(f"{principal.label}: {action} {resource} of {cluster} ({decision.why})")
    assert reached == []


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_a_clusters_node_roles_reach_its_own_data_specs_and_the_vendor_and_no_secret(model, cluster):
    """The check above can fail: the same model lets each cluster's roles at their own things."""
    obj = f"{model.bucket}/clusters/{cluster}/part-0.parquet"
    for role in conventions.NODE_ROLES:
        principal = model.principal(f"{role} role of {cluster}")
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert model.decide(principal, action, obj).allowed, (role, action)
        assert model.decide(principal, "s3:ListBucket", model.bucket, **{"s3:prefix": f"clusters/{cluster}/"}).allowed
        assert not model.decide(principal, "s3:ListBucket", model.bucket).allowed  # not the whole bucket
        assert not model.decide(principal, "s3:ListBucket", model.bucket, **{"s3:prefix": "clusters/"}).allowed
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            assert model.decide(principal, action, model.key, **{
                "kms:ViaService": VIA_S3, "kms:EncryptionContext:aws:s3:arn": obj}).allowed
        for name, secret in model.secrets(cluster).items():  # its CA (the vendor's) and its people's records
            assert not model.decide(principal, "secretsmanager:GetSecretValue", secret).allowed, (role, name)
        vendor = f"arn:aws:lambda:{REGION}:123456789012:function:{conventions.vendor_function_name('analytics')}"
        assert model.decide(principal, "lambda:InvokeFunction", vendor).allowed
        parameter = f"arn:aws:ssm:{REGION}:123456789012:parameter{conventions.spec_parameter_name(cluster, role)}"
        assert model.decide(principal, "ssm:GetParameter", parameter).allowed


def test_data_entries_reach_exactly_what_they_declare(model):
    team, alice = model.principal("worker role of team"), model.principal("worker role of alice")
    in_bucket = lambda key: f"{model.bucket}/{key}"  # noqa: E731
    assert model.decide(team, "s3:PutObject", in_bucket("shared/team/result.csv")).allowed
    assert model.decide(team, "s3:GetObject", "arn:aws:s3:::lab-raw-data/2024/run.csv").allowed
    assert not model.decide(team, "s3:GetObject", "arn:aws:s3:::lab-raw-data/2023/run.csv").allowed
    assert not model.decide(team, "s3:PutObject", "arn:aws:s3:::lab-raw-data/2024/run.csv").allowed
    assert not model.decide(team, "s3:GetObject", in_bucket("shared/reference/genome.fa")).allowed  # its own data replaces
    assert model.decide(alice, "s3:GetObject", in_bucket("shared/reference/genome.fa")).allowed  # the stack-wide data
    assert not model.decide(alice, "s3:PutObject", in_bucket("shared/reference/genome.fa")).allowed
    assert not model.decide(alice, "s3:GetObject", in_bucket("shared/team/result.csv")).allowed
    for principal in (team, alice):  # the published environments: read by every node, written by none
        package = in_bucket("envs/packages/0123abcd")
        assert model.decide(principal, "s3:GetObject", package).allowed
        assert not model.decide(principal, "s3:PutObject", package).allowed
        assert not model.decide(principal, "s3:GetObject", in_bucket("scratch/old.csv")).allowed  # nothing else


def test_members_logins_reach_their_clusters_and_their_own_certificate_only(model):
    alice, bob = model.principal("alice's login"), model.principal("bob's login")
    assert alice.clusters == {"alice", "team"} and bob.clusters == {"bob", "team"}
    for person, name in ((alice, "alice"), (bob, "bob")):
        for cluster in person.clusters:
            obj = f"{model.bucket}/clusters/{cluster}/upload.csv"
            assert model.decide(person, "s3:PutObject", obj).allowed and model.decide(person, "s3:GetObject", obj).allowed
            assert model.decide(person, "kms:GenerateDataKey", model.key, **{
                "kms:ViaService": VIA_S3, "kms:EncryptionContext:aws:s3:arn": obj}).allowed
            mine = model.secrets(cluster)[conventions.client_tls_secret_name(cluster, name)]
            assert model.decide(person, "secretsmanager:GetSecretValue", mine).allowed
            group = (f"arn:aws:autoscaling:{REGION}:123456789012:autoScalingGroup:1:autoScalingGroupName/"
                     f"{conventions.node_group_name(cluster, 'scheduler')}")
            assert model.decide(person, "autoscaling:SetDesiredCapacity", group,
                                **{f"autoscaling:ResourceTag/{conventions.TAG_CLUSTER}": cluster}).allowed
        # The team cluster's data entry in the fleet bucket is its members' too; nothing else of the bucket is.
        assert model.decide(person, "s3:PutObject", f"{model.bucket}/shared/team/result.csv").allowed
        assert not model.decide(person, "s3:GetObject", f"{model.bucket}/scratch/old.csv").allowed
        assert not model.decide(person, "s3:ListBucket", model.bucket, **{"s3:prefix": "clusters/"}).allowed
        # Other buckets' entries are for the nodes: a login's access there is its own administrators' to grant.
        assert not model.decide(person, "s3:GetObject", "arn:aws:s3:::lab-raw-data/2024/run.csv").allowed
    # Within the team cluster, each certificate is its holder's alone.
    assert not model.decide(bob, "secretsmanager:GetSecretValue",
                            model.secrets("team")[conventions.client_tls_secret_name("team", "alice")]).allowed


def test_every_node_and_member_grant_names_only_its_own_clusters_resources(fleet):
    """Static, whatever the evaluator models: no ARN in a cluster's policies names another cluster's resource."""
    named = re.compile(r"(?:daskfleet-|/daskfleet/|daskfleet/|clusters/|scheduler\.)(?P<cluster>[a-z][a-z0-9-]*[a-z0-9])")
    bucket = fleet.outputs["bucketName"]  # the fleet's: named after the stack's own cluster
    vendor = fleet.outputs["certificateVendor"]
    for name in CLUSTERS:
        for resource in _cluster_resources(fleet, name):
            if resource.type not in ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy"):
                continue
            for statement in statements(resource.inputs["policy"]):
                for text in all_strings([statement.get("Resource"), statement.get("Condition")]):
                    # The fleet's bucket and certificate vendor are named after the stack's own cluster.
                    for match in named.finditer(text.replace(bucket, "").replace(vendor, "")):
                        assert match["cluster"] == name or match["cluster"].startswith(f"{name}-"), (resource.name, text)


def test_the_fleet_key_is_granted_only_for_each_clusters_own_prefixes(fleet, model):
    for principal in model.principals:
        for document in principal.identity:
            for statement in document["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if not any(action.startswith("kms:") for action in actions):
                    continue
                condition = statement["Condition"]["StringLike"]
                contexts = condition.get("kms:EncryptionContext:aws:s3:arn") or [condition["kms:EncryptionContext:SecretARN"]]
                for context in contexts:
                    key = context.removeprefix(model.bucket).removeprefix("/")
                    assert not key.startswith("clusters/") or any(
                        key.startswith(f"clusters/{c}/") for c in principal.clusters), (principal.label, context)


def test_the_bucket_uses_no_bucket_key_so_the_encryption_context_names_each_object(fleet):
    (rule,) = fleet.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").inputs["rules"]
    assert rule["bucketKeyEnabled"] is False


def test_the_bucket_policy_names_no_cluster_and_denies_every_node_role_outside_its_prefix(fleet):
    policy = fleet.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"]
    for name in CLUSTERS:
        assert f"clusters/{name}" not in policy and f"daskfleet-{name}" not in policy
    backstop = {s["Sid"]: s for s in statements(policy)}["NodeRolesOnlyTheirClustersObjects"]
    assert backstop["Effect"] == "Deny" and "${aws:PrincipalTag/daskfleet:cluster}" in json.dumps(backstop["NotResource"])


def test_node_roles_carry_their_clusters_tag_which_the_bucket_policy_reads(model):
    for cluster in CLUSTERS:
        for role in conventions.NODE_ROLES:
            assert model.principal(f"{role} role of {cluster}").tags[conventions.TAG_CLUSTER] == cluster


def test_a_node_role_whose_own_policy_were_widened_is_still_kept_out_by_the_bucket(model):
    """The bucket policy's backstop: a mistake in one role policy does not open another cluster's data."""
    alice = model.principal("worker role of alice")
    widened = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": f"{model.bucket}/*"}]}
    from dataclasses import replace
    careless = replace(alice, identity=(*alice.identity, widened))
    assert model.decide(careless, "s3:GetObject", f"{model.bucket}/scratch/x").allowed is False
    assert not model.decide(careless, "s3:GetObject", f"{model.bucket}/clusters/bob/secret.csv").allowed
    assert model.decide(careless, "s3:GetObject", f"{model.bucket}/clusters/alice/mine.csv").allowed


def test_every_cluster_gets_its_own_log_group_zone_record_and_scratch_expiry(fleet):
    groups = {g.inputs["name"] for g in fleet.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert {conventions.log_group_name(name) for name in CLUSTERS} <= groups
    assert conventions.log_group_name("analytics") not in groups
    (zone,) = fleet.of_type("aws:route53/zone:Zone")  # the fleet's zone; analytics.<zone> is not a cluster here
    assert zone.inputs["name"] == "daskfleet.internal"
    for name in CLUSTERS:
        (function,) = [f for f in fleet.of_type("aws:lambda/function:Function")
                       if f.inputs["name"] == conventions.scheduler_dns_function_name(name)]
        variables = function.inputs["environment"]["variables"]
        assert variables[updater.RECORD_NAME_ENV] == f"scheduler.{name}.daskfleet.internal"
        assert variables[updater.ZONE_ID_ENV] == zone.outputs["zoneId"]
    rules = {rule["id"]: rule["filter"].get("prefix") for rule in
             fleet.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]}
    for name in CLUSTERS:
        assert rules[f"expire-scratch-{name}"] == f"clusters/{name}/scratch/"


def test_a_fleets_clusters_start_asleep_until_a_member_connects(fleet):
    for name in CLUSTERS:
        (scheduler,) = [g for g in fleet.of_type("aws:autoscaling/group:Group")
                        if g.inputs["name"] == conventions.node_group_name(name, "scheduler")]
        assert (scheduler.inputs["desiredCapacity"], scheduler.inputs["maxSize"]) == (0, 1)


def test_a_cluster_takes_its_own_settings_and_the_stacks_for_the_rest(fleet):
    sizes = {g.inputs["name"]: g.inputs["maxSize"] for g in fleet.of_type("aws:autoscaling/group:Group")}
    assert sizes[conventions.node_group_name("team", "worker")] == 4
    assert sizes[conventions.node_group_name("alice", "worker")] == 10
    budgets = {b.inputs["name"]: b.inputs["costFilters"][0]["values"] for b in fleet.of_type("aws:budgets/budget:Budget")}
    assert budgets[conventions.budget_name("team")] == [f"user:{conventions.TAG_CLUSTER}$team"]
    specs = {name: json.loads(value) for name, value in fleet.parameters.items()}
    worker = specs[conventions.spec_parameter_name("team", "worker")]
    assert worker["bucket"] == fleet.outputs["bucketName"] and worker["kms_key"].startswith("arn:aws:kms:")
    scheduler = specs[conventions.spec_parameter_name("team", "scheduler")]
    assert scheduler["scaling"]["max_workers"] == 4
    assert specs[conventions.spec_parameter_name("bob", "scheduler")]["usage"]["user_compute_hours_per_day"] == {"bob": 40.0}
    assert specs[conventions.spec_parameter_name("alice", "scheduler")]["usage"]["user_compute_hours_per_day"] == {}


# --- the policy pack holds the fleet to its scopes -------------------------------------------------


def _pack():
    import sys

    from infra.program import INFRA_DIR

    if str(INFRA_DIR / "policy") not in sys.path:
        sys.path.insert(0, str(INFRA_DIR / "policy"))
    from daskfleet_policies import check_resources

    return check_resources


def test_the_fleet_passes_the_policy_pack(fleet):
    violations = _pack()(fleet.resources)
    assert violations == [], "\n".join(map(str, violations))


@pytest.mark.parametrize(("holder", "sid", "widened"), [
    ("daskfleet-alice-worker", "ClusterReadWriteOwnPrefixes", "/clusters/*"),
    ("daskfleet-alice-scheduler", "ClusterReadEnvironmentsAndData", "/*"),
    ("daskfleet-alice-member", "MemberReadWriteOwnPrefixes", "/clusters/bob/*"),
])
def test_the_policy_pack_refuses_a_hand_widened_cluster_policy(fleet, holder, sid, widened):
    import copy

    resources = copy.deepcopy(fleet.resources)
    (policy,) = [r for r in resources if r.type in ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy")
                 and holder in (r.inputs.get("role"), r.inputs.get("name"))]
    document = json.loads(policy.inputs["policy"])
    (statement,) = [s for s in document["Statement"] if s["Sid"] == sid]
    statement["Resource"].append(fleet.one("aws:s3/bucket:Bucket").outputs["arn"] + widened)
    policy.inputs["policy"] = policy.outputs["policy"] = json.dumps(document)
    (violation,) = _pack()(resources)
    assert (violation.policy, violation.urn) == ("cluster-data-access-in-scope", policy.urn)
    assert violation.message.startswith("cluster alice: ") and widened in violation.message


@pytest.mark.parametrize("invariant", [
    "test_every_aws_resource_goes_through_the_one_explicit_provider",
    "test_only_pulumi_aws_v7_resources_none_deprecated_and_no_warnings",
    "test_no_private_key_outside_the_tls_resources_and_the_secrets",
    "test_nobody_may_write_resource_star",
])
def test_the_programs_invariants_hold_for_a_fleet(fleet, invariant):
    """What every single-cluster scenario is held to (test_program, test_environments), held to the fleet too."""
    from infra import test_environments, test_program

    check = getattr(test_program, invariant, None) or getattr(test_environments, invariant)
    check(fleet)


def test_every_resource_of_a_fleet_sits_in_a_component_and_each_cluster_tags_its_own(fleet):
    from infra.helpers import PROVIDER_TYPE, aws_resources, is_taggable

    components = {r.urn: r for r in fleet.resources if r.type.startswith("daskfleet:")}
    clusters = {r.urn: r.name for r in components.values() if r.type == "daskfleet:aws:Cluster"}
    for resource in fleet.resources:
        if resource.type != PROVIDER_TYPE and not resource.type.startswith("daskfleet:"):
            assert resource.parent in components and resource.parent not in clusters, resource.name
    for resource in aws_resources(fleet):
        owner = components[resource.parent].parent
        if owner in clusters and is_taggable(resource.type) and resource.type != "aws:autoscaling/group:Group":
            assert (resource.inputs.get("tags") or {}).get(conventions.TAG_CLUSTER) == clusters[owner], resource.name


def test_each_clusters_concerns_sit_under_its_cluster_component(fleet):
    from infra.test_program import CLUSTER_COMPONENTS

    clusters = {c.name: c.urn for c in fleet.of_type("daskfleet:aws:Cluster")}
    assert sorted(clusters) == ["alice", "bob", "team"]
    for name, urn in clusters.items():
        own = [c.type for c in fleet.resources if c.parent == urn]
        assert sorted(own) == sorted(CLUSTER_COMPONENTS - {"daskfleet:aws:Wake"}), name  # no stack from before
