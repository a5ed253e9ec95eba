"""The pack as the Pulumi CLI runs it: a process serving the analyzer protocol over gRPC on 127.0.0.1.

The requests are shaped as the engine sends them: resource inputs to Analyze, outputs with
property dependencies to AnalyzeStack, and unknown values as the preview sentinel.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from policy.conftest import POLICY_PACK_DIR
from policy.harness import UNKNOWN
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from daskfleet.trust import pki
from daskfleet_policies import PACK_NAME, POLICIES

STARTUP_SECONDS = 30
BUCKET_URN = "urn:pulumi:dev::daskfleet::aws:s3/bucket:Bucket::data"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack started as the CLI's python analyzer starts it (``python -m pulumi.policy <engine> <pack dir>``)."""
    command = [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(POLICY_PACK_DIR)]
    process = subprocess.Popen(command, cwd=POLICY_PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = _read_port(process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=STARTUP_SECONDS)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _read_port(process: subprocess.Popen) -> int:
    """The pack prints its port on its first stdout line."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=STARTUP_SECONDS):
            process.kill()
            pytest.fail(f"the pack printed no port within {STARTUP_SECONDS}s: {process.stderr.read1().decode()}")
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.wait(timeout=10)
        pytest.fail(f"the pack did not start: {line!r} {process.stderr.read().decode()}")
    return int(line)


def struct(props: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(props)
    return message


def analyze(analyzer, resource_type: str, name: str, props: dict) -> list:
    request = analyzer_pb2.AnalyzeRequest(
        type=resource_type, name=name, urn=f"urn:pulumi:dev::daskfleet::{resource_type}::{name}", properties=struct(props)
    )
    return list(analyzer.Analyze(request).diagnostics)


def stack_resource(resource_type: str, name: str, props: dict, bucket_from: str | None = None):
    resource = analyzer_pb2.AnalyzerResource(
        type=resource_type, name=name, urn=f"urn:pulumi:dev::daskfleet::{resource_type}::{name}", properties=struct(props)
    )
    if bucket_from:
        resource.dependencies.append(bucket_from)
        resource.propertyDependencies["bucket"].urns.append(bucket_from)
    return resource


def test_the_pack_announces_every_policy_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == PACK_NAME
    assert [policy.name for policy in info.policies] == [policy.name for policy in POLICIES]
    assert {policy.enforcementLevel for policy in info.policies} == {analyzer_pb2.MANDATORY}


def test_a_world_open_ssh_rule_is_a_mandatory_violation(analyzer):
    props = {"securityGroupId": "sg-1", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "0.0.0.0/0"}
    diagnostics = analyze(analyzer, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "ssh", props)
    assert sorted(d.policyName for d in diagnostics) == ["no-ssh-ingress", "no-world-open-ingress"]
    assert {d.enforcementLevel for d in diagnostics} == {analyzer_pb2.MANDATORY}


def test_at_preview_unknown_fields_are_left_for_later_and_known_ones_still_judged(analyzer):
    props = {
        "metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 1},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "kmsKeyId": UNKNOWN}}],
        "userData": UNKNOWN,
    }
    diagnostics = analyze(analyzer, "aws:ec2/launchTemplate:LaunchTemplate", "worker", props)
    assert [(d.policyName, d.enforcementLevel) for d in diagnostics] == [("imdsv2-required", analyzer_pb2.MANDATORY)]


def test_at_preview_a_new_bucket_is_paired_with_its_guards_through_property_dependencies(analyzer):
    flags = dict.fromkeys(("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"), True)
    rules = [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": UNKNOWN}}]
    bucket = stack_resource("aws:s3/bucket:Bucket", "data", {"bucket": "team-a-data-1a2b3c", "id": UNKNOWN})
    encryption_type = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    public_access_type = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"

    paired = [
        bucket,
        stack_resource(encryption_type, "data-encryption", {"bucket": UNKNOWN, "rules": rules}, bucket_from=BUCKET_URN),
        stack_resource(public_access_type, "data-public-access", {"bucket": UNKNOWN, **flags}, bucket_from=BUCKET_URN),
    ]
    assert list(analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=paired)).diagnostics) == []

    unpaired = [
        bucket,
        stack_resource(encryption_type, "data-encryption", {"bucket": UNKNOWN, "rules": rules}),
        stack_resource(public_access_type, "data-public-access", {"bucket": UNKNOWN, **flags}),
    ]
    diagnostics = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=unpaired)).diagnostics
    assert sorted((d.policyName, d.urn, d.enforcementLevel) for d in diagnostics) == [
        ("s3-bucket-encrypted-with-kms", BUCKET_URN, analyzer_pb2.MANDATORY),
        ("s3-bucket-public-access-blocked", BUCKET_URN, analyzer_pb2.MANDATORY),
    ]


def test_user_data_marked_secret_is_still_searched(analyzer):
    """The engine wraps a secret value in its secret signature; the SDK unwraps it for the policy."""
    key = pki.create_ca("test").key_pem  # a real key, made now
    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": f"#!/bin/sh\n{key}"}
    props = {"ami": "ami-1", "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
             "rootBlockDevice": {"encrypted": True}, "userData": secret}
    diagnostics = analyze(analyzer, "aws:ec2/instance:Instance", "bastion", props)
    assert [d.policyName for d in diagnostics] == ["no-secrets-in-user-data"]
