"""Compute: hardened launch templates, a scheduler group of one, a spot-friendly worker group, the image lookup."""

from __future__ import annotations

import pytest

from infra.program import MOCK_AMI_ID
from infra.scenarios import OVERRIDE_AMI

from daskfleet import conventions
from daskfleet.aws.userdata import render_user_data

TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
GROUP = "aws:autoscaling/group:Group"


def template(record, role):
    return record.one(TEMPLATE, f"compute-{role}")


def group(record, role):
    return record.one(GROUP, f"compute-{role}")


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_launch_templates_require_imdsv2_with_tags_and_hop_limit_one(every_record, role):
    assert template(every_record, role).inputs["metadataOptions"] == {
        "httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1, "instanceMetadataTags": "enabled",
    }


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_nodes_get_an_encrypted_root_volume_no_public_address_and_no_key_pair(every_record, role):
    inputs = template(every_record, role).inputs
    (volume,) = inputs["blockDeviceMappings"]
    root_device = "/dev/sda1" if every_record.config.get("amiId") else "/dev/xvda"
    assert volume["deviceName"] == root_device  # the image's own root device, so the mapping applies to it
    assert volume["ebs"] == {"encrypted": "true", "volumeType": "gp3", "volumeSize": 100, "deleteOnTermination": "true"}
    (interface,) = inputs["networkInterfaces"]
    assert interface["associatePublicIpAddress"] == "false" and interface["deviceIndex"] == 0
    security_group = every_record.one("aws:ec2/securityGroup:SecurityGroup", f"security-groups-{role}")
    assert interface["securityGroups"] == [security_group.id]
    assert "keyName" not in inputs and "vpcSecurityGroupIds" not in inputs
    profile = every_record.one("aws:iam/instanceProfile:InstanceProfile", f"identity-{role}")
    assert inputs["iamInstanceProfile"] == {"arn": profile.outputs["arn"]}


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_user_data_is_the_rendered_one_for_the_role(example, role):
    assert example.user_data[role] == render_user_data("analytics", role)


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_instances_volumes_and_interfaces_are_tagged_at_launch(every_record, role):
    config = every_record.config
    expected = {
        "daskfleet:cluster": config["cluster"], "daskfleet:role": role, "team": config["team"],
        "owner": config["owner"], "cost-center": config["costCenter"], "Name": f"daskfleet-{config['cluster']}-{role}",
    }
    if config.get("ephemeral"):
        expected["expires"] = config["expires"]
    specifications = template(every_record, role).inputs["tagSpecifications"]
    assert sorted(spec["resourceType"] for spec in specifications) == ["instance", "network-interface", "volume"]
    assert all(spec["tags"] == expected for spec in specifications)
    group_tags = {tag["key"]: tag["value"] for tag in group(every_record, role).inputs["tags"]}
    assert group_tags == expected
    assert all(tag["propagateAtLaunch"] is True for tag in group(every_record, role).inputs["tags"])


def test_the_scheduler_group_runs_one_instance_at_most_may_sleep_at_zero_and_replaces_it_on_change(example):
    """Idle, the scheduler sets its own group to 0; a user's connect sets it back to 1, never more."""
    scheduler = group(example, "scheduler").inputs
    assert (scheduler["minSize"], scheduler["maxSize"], scheduler["desiredCapacity"]) == (0, 1, 1)
    assert scheduler["name"] == conventions.node_group_name("analytics", "scheduler")
    lt = template(example, "scheduler")
    assert scheduler["launchTemplate"] == {"id": lt.id, "version": "1"}
    assert lt.inputs["instanceType"] == "m7i.large" and lt.inputs["imageId"] == MOCK_AMI_ID
    assert scheduler["instanceRefresh"]["strategy"] == "Rolling"
    assert sorted(scheduler["vpcZoneIdentifiers"]) == sorted(s.id for s in example.of_type("aws:ec2/subnet:Subnet"))


def test_the_worker_group_mixes_spot_types_protects_instances_and_drains(adopted):
    workers = adopted.one(GROUP, "compute-worker").inputs
    assert workers["name"] == conventions.node_group_name("analytics", "worker")
    assert (workers["minSize"], workers["maxSize"]) == (0, 40) and "desiredCapacity" not in workers
    assert workers["capacityRebalance"] is True and workers["protectFromScaleIn"] is True
    policy = workers["mixedInstancesPolicy"]
    assert policy["instancesDistribution"] == {
        "onDemandBaseCapacity": 2, "onDemandPercentageAboveBaseCapacity": 25, "spotAllocationStrategy": "price-capacity-optimized",
    }
    lt = template(adopted, "worker")
    assert policy["launchTemplate"]["launchTemplateSpecification"] == {"launchTemplateId": lt.id, "version": "1"}
    assert [o["instanceType"] for o in policy["launchTemplate"]["overrides"]] == ["m7i.xlarge", "m6i.xlarge", "m7a.xlarge", "m6a.xlarge"]
    hook = adopted.one("aws:autoscaling/lifecycleHook:LifecycleHook").inputs
    assert hook["autoscalingGroupName"] == workers["name"]
    assert hook["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["heartbeatTimeout"] == 900 and hook["defaultResult"] == "CONTINUE"


def test_the_image_is_found_by_the_environment_fingerprint_tag(example):
    lookups = [call for call in example.calls if call["token"] in ("aws:ec2/getAmiIds:getAmiIds", "aws:ec2/getAmi:getAmi")]
    assert lookups and all(call["args"]["owners"] == ["self"] for call in lookups)
    for call in lookups:
        assert call["args"]["filters"] == [{"name": "tag:daskfleet:env-fingerprint", "values": [example.config["environmentFingerprint"]]}]
    assert {template(example, role).inputs["imageId"] for role in conventions.NODE_ROLES} == {MOCK_AMI_ID}


def test_an_explicit_ami_overrides_the_lookup(adopted):
    assert "aws:ec2/getAmiIds:getAmiIds" not in [call["token"] for call in adopted.calls]
    assert {template(adopted, role).inputs["imageId"] for role in conventions.NODE_ROLES} == {OVERRIDE_AMI}


def test_no_image_for_the_fingerprint_is_a_clear_error_before_anything_is_declared(evaluations, example):
    error = evaluations.failure("no-ami")
    assert error.kind == "StackConfigError"
    assert error.message.startswith("daskfleet stack configuration: environmentFingerprint: no AMI")
    assert f"daskfleet:env-fingerprint={example.config['environmentFingerprint']}" in error.message
    assert "set amiId" in error.message
    assert "make image ENV=<env> REGION=eu-west-1" in error.message and "images/README.md" in error.message
    assert error.declared == ["pulumi:providers:aws"]
