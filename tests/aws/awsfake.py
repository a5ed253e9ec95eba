"""What the Pulumi program would have put into AWS, stored into the tests' moto server."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

import boto3
import pytest

from daskfleet import conventions
from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.trust.tls import TlsMaterial

CLUSTER = "analytics"
REGION = "us-east-1"
PRIVATE_IPV4 = "10.0.1.23"
SCHEDULER_ADDRESS = f"tls://scheduler.{CLUSTER}.internal.example:{conventions.SCHEDULER_PORT}"


@dataclass
class Moto:
    """The tests' moto server, and how to store into it what the Pulumi program declares."""

    endpoint: str
    region: str = REGION

    def client(self, service: str, **kwargs):
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint, **kwargs)

    def put_spec(self, cluster: str, role: str, spec: dict | str) -> str:
        name = conventions.spec_parameter_name(cluster, role)
        text = spec if isinstance(spec, str) else json.dumps(spec)
        self.client("ssm").put_parameter(Name=name, Value=text, Type="String")
        return name

    def put_secret(self, name: str, text: str) -> None:
        self.client("secretsmanager").create_secret(Name=name, SecretString=text)

    def create_node_groups(self, cluster: str, *, schedulers: int = 1, workers: int = 0, max_workers: int = 4) -> None:
        """The stack's two groups: a scheduler group (at most 1) and a scale-in protected worker group, each from
        its own launch template (so instances carry its aws:ec2launchtemplate tags), tagged with the cluster."""
        ec2, autoscaling = self.client("ec2"), self.client("autoscaling")
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        tags = [{"Key": conventions.TAG_CLUSTER, "Value": cluster, "PropagateAtLaunch": True}]
        for role, most, desired in (("scheduler", 1, schedulers), ("worker", max_workers, workers)):
            template = conventions.resource_name(cluster, role)
            ec2.create_launch_template(LaunchTemplateName=template, LaunchTemplateData={"ImageId": "ami-12c6146b"})
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=conventions.node_group_name(cluster, role), MinSize=0, MaxSize=most,
                DesiredCapacity=desired, LaunchTemplate={"LaunchTemplateName": template}, VPCZoneIdentifier=subnet,
                NewInstancesProtectedFromScaleIn=role == "worker", Tags=tags,
            )

    def group(self, cluster: str, role: str) -> dict:
        name = conventions.node_group_name(cluster, role)
        return self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]

    def enforce_iam(self) -> None:
        """From now on moto authenticates every request and evaluates IAM policies."""
        post(f"{self.endpoint}/moto-api/reset-auth", b"0")

    def iam_user(self, name: str, allow: list[str]) -> dict[str, str]:
        """An IAM user allowed exactly ``allow`` (actions, on any resource); returns its credentials."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allow, "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def post(url: str, data: bytes = b"") -> None:
    headers = {"Content-Type": "application/octet-stream"}  # moto reads the raw body
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def secret_texts(material: TlsMaterial) -> list[str]:
    """Pieces of PEM text that must never appear in a message or a log."""
    texts = ["PRIVATE KEY"]
    for pem in (material.key_pem, material.cert_pem):
        texts += [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return texts


def assert_fails(call, exit_code: ExitCode, *names: str, never: list[str] = ()) -> DaskfleetError:
    """``call`` raises one DaskfleetError line of ``exit_code`` naming every one of ``names``."""
    with pytest.raises(DaskfleetError) as info:
        call()
    error = info.value
    assert error.exit_code == exit_code, str(error)
    assert "\n" not in str(error)
    for name in names:
        assert name in str(error), f"{name!r} not named in: {error}"
    for text in never:
        assert text not in str(error)
    return error
