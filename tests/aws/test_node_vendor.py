"""A node of a stack with a certificate vendor gets its certificate there at boot, proving its instance role (moto's
STS and IAM; the vendor's handler runs in process, as Lambda would run it); a stack without one keeps Secrets Manager."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from aws.awsfake import CLUSTER, REGION, SCHEDULER_ADDRESS
from aws.e2e import VendorLambda
from aws.test_vendor import FUNCTION, in_process, stack  # noqa: F401  (the vendor's stack fixture)

from daskfleet import conventions
from daskfleet.aws.source import AwsSource
from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.node.agent import prepare_node
from daskfleet.node.renewal import vend_material
from daskfleet.node.spec import parse_spec
from daskfleet.trust import pki

WORKER_SPEC = {"cluster": CLUSTER, "role": "worker", "scheduler_address": SCHEDULER_ADDRESS, "vendor_function": FUNCTION}


def put_worker_spec(aws, spec: dict) -> None:
    """Replace the stack fixture's worker spec."""
    aws.client("ssm").put_parameter(Name=conventions.spec_parameter_name(CLUSTER, "worker"), Value=json.dumps(spec),
                                    Type="String", Overwrite=True)


def as_instance_role(aws, monkeypatch, role_arn: str) -> None:
    """This process's default credentials become an instance's of ``role_arn`` (as IMDS serves them)."""
    assumed = aws.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="i-0abc123")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", assumed["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", assumed["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", assumed["SessionToken"])


def test_a_worker_proves_its_instance_role_and_gets_a_24_hour_certificate(stack, aws, imds, monkeypatch):  # noqa: F811
    put_worker_spec(aws, WORKER_SPEC)
    as_instance_role(aws, monkeypatch, stack["role_arn"])
    source = AwsSource(CLUSTER, vendor_transport=in_process(stack))
    spec = parse_spec(source.fetch_spec("worker"), origin="test")

    material = vend_material(source.certificate_issuer("worker", spec))

    identity = pki.check_node_certificate(material.ca_pem, material.cert_pem, material.key_pem, cluster=CLUSTER,
                                          role="worker", origin="test")
    assert material.ca_pem == stack["ca"].cert_pem
    assert identity.not_after <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=conventions.NODE_CERT_VALIDITY_HOURS)
    # Renewal asks again for the same key.
    again = vend_material(source.certificate_issuer("worker", spec), material.key_pem)
    assert pki.public_key_der(again.cert_pem) == pki.public_key_der(material.key_pem)


def test_a_stack_without_a_vendor_keeps_its_secrets_manager_certificates(stack, aws, imds):  # noqa: F811
    put_worker_spec(aws, {key: value for key, value in WORKER_SPEC.items() if key != "vendor_function"})
    source = AwsSource(CLUSTER, vendor_transport=in_process(stack))
    assert source.certificate_issuer("worker", parse_spec(source.fetch_spec("worker"), origin="test")) is None


def test_a_node_the_vendor_refuses_stops_with_its_configuration_exit_code(stack, aws, imds, monkeypatch, tmp_path):  # noqa: F811
    """A worker whose instance runs as a role the vendor does not know (here: alice's login) stops at boot."""
    put_worker_spec(aws, WORKER_SPEC)
    _, key_id, secret = stack["keys"]["alice"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    source = AwsSource(CLUSTER, vendor_transport=in_process(stack))
    with pytest.raises(DaskfleetError) as refused:
        prepare_node("worker", source, tmp_path / "run")
    assert refused.value.exit_code == ExitCode.CONFIG
    assert refused.value.message == (f"certificate refused: user 'alice' may not get a worker certificate of cluster "
                                     f"{CLUSTER!r}: node certificates go to the worker nodes' IAM role only")
    assert not (tmp_path / "run").exists()  # nothing half-done


def test_a_node_boots_through_a_throttled_vendor_within_its_deadline(stack, aws, imds, monkeypatch):  # noqa: F811
    """Lambda answers 429 when the account's concurrency is spent: more than botocore's own attempts, here. The
    node keeps asking within its deadline, through the real lambda:Invoke, and boots with its certificate."""
    put_worker_spec(aws, WORKER_SPEC)
    as_instance_role(aws, monkeypatch, stack["role_arn"])
    with VendorLambda(aws.endpoint, REGION, FUNCTION, {CLUSTER}) as vendor:
        for name, value in vendor.env.items():
            monkeypatch.setenv(name, value)
        vendor.throttle_next = 5
        source = AwsSource(CLUSTER)
        material = vend_material(source.certificate_issuer("worker", parse_spec(source.fetch_spec("worker"), origin="test")))
    assert vendor.throttled == 5 and [role for _, role in vendor.invocations] == ["worker"]
    identity = pki.check_node_certificate(material.ca_pem, material.cert_pem, material.key_pem, cluster=CLUSTER,
                                          role="worker", origin="test")
    assert identity.common_name == conventions.common_name(CLUSTER, "worker")
