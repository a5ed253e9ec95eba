"""A fleet's data reach, enforced by IAM: alice's cluster, booted from what the program declares, on a moto server.

The fleet is two private clusters (alice, bob) and a team cluster, evaluated under the program's
mocks (infra.program). alice's cluster boots as in test_end_to_end, each node with the credentials
of its own node role (assumed through moto's STS), whose inline policy is the one the program
declares for it, and its certificate from the fleet's vendor (aws.e2e.VendorLambda). With IAM
enforcement on, a task running on alice's worker reads the objects under
``clusters/alice/`` and gets AccessDenied under ``clusters/team/`` and ``clusters/bob/``; bob's own
login, holding exactly the managed policies the program attaches to it, cannot read alice's membership
record.

What moto enforces (moto/iam/access_control.py, moto 5): the caller's identity policies only (a
user's inline, attached and group policies; an assumed role's inline and attached ones), with
Action/Resource matching (``*`` wildcards) and explicit Deny. S3 requests are checked against the
object's ARN (``arn:aws:s3:::bucket/key``), which is what this test relies on. What it does not:
resource-based policies (the bucket policy's node-role backstop, the secret's policy, the key
policy), KMS at all when S3 reads an encrypted object, condition keys other than StringEquals
against request values (conditions such as ``s3:prefix`` or ``kms:ViaService`` count as met),
``NotResource``, ``?`` in ARNs, and resource ARNs for most other services: Secrets Manager
requests are checked against ``*``, so bob's denial below shows that no identity grant the
program gives him reaches alice's secret (a grant on every secret would let him through here).
Those parts are decided by the declared policies themselves, under mocks: tests/infra/test_fleet.py
asks the bucket, key and secret policies with identity policies, as AWS combines them.

Emulated besides: DNS (the worker spec's host is 127.0.0.1) and free ports for the scheduler. The
client is a member of alice's cluster with a certificate signed by its CA (alice's own is an admin
certificate, which the client and gatekeeper learn to accept with the admin role, issue 15 §3): who
submits the task does not matter here, whose credentials the worker holds does.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from aws.e2e import (Instance, VendorLambda, declared, exec_start, free_port, load_into_moto, node_environment,
                     node_role_credentials)
from aws.imds import ImdsServer
from infra.program import evaluate_program
from infra.scenarios import fleet_config

from distributed import Client

from daskfleet import conventions
from daskfleet.environments.records import current_fingerprint
from daskfleet.node.sources import SCHEDULER_INFO_FILE
from daskfleet.trust import pki
from daskfleet.trust.tls import TlsMaterial, client_security

NODE_ADDRESS = "127.0.0.1"
CLUSTER = "alice"
OBJECTS = {cluster: f"{conventions.cluster_data_prefix(cluster)}input.csv" for cluster in ("alice", "team", "bob")}


@pytest.fixture(scope="module")
def stack():
    # The image's environment is this one: its fingerprint is what the stack pins.
    return evaluate_program({**fleet_config(), "environmentFingerprint": current_fingerprint()})


def _login_with_the_programs_policies(iam, stack, user: str) -> dict[str, str]:
    """``user``'s IAM user with every managed policy the program attaches to it, and its access key."""
    iam.create_user(UserName=user)
    for attachment in declared(stack, "aws:iam/userPolicyAttachment:UserPolicyAttachment", user=user):
        (policy,) = [p for p in stack.of_type("aws:iam/policy:Policy") if p.outputs["arn"] == attachment.inputs["policyArn"]]
        created = iam.create_policy(PolicyName=policy.inputs["name"], PolicyDocument=policy.inputs["policy"])
        iam.attach_user_policy(UserName=user, PolicyArn=created["Policy"]["Arn"])
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def _membership_record(aws, region: str, login: dict[str, str], cluster: str, user: str) -> str:
    """``user``'s membership record of ``cluster`` (its CA and their role), read with ``login``'s credentials."""
    secrets = boto3.client("secretsmanager", region_name=region, endpoint_url=aws.endpoint,
                           aws_access_key_id=login["AWS_ACCESS_KEY_ID"], aws_secret_access_key=login["AWS_SECRET_ACCESS_KEY"])
    return secrets.get_secret_value(SecretId=conventions.client_tls_secret_name(cluster, user))["SecretString"]


def _objects_reader():
    """What the task runs on a worker (defined here so it travels by value, not by this test module's name)."""

    def read_objects(bucket: str, keys: dict[str, str]) -> dict[str, str]:
        """Read each object with the worker's own credentials: its first line, or the error code."""
        import boto3 as worker_boto3
        from botocore.exceptions import ClientError

        s3 = worker_boto3.client("s3")
        found = {}
        for cluster, key in keys.items():
            try:
                found[cluster] = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()[0]
            except ClientError as exc:
                found[cluster] = exc.response["Error"]["Code"]
        return found

    return read_objects


def _member_security(stack, cluster: str, user: str):
    """A member certificate for ``cluster``, signed by the CA the mocked program made for it."""
    (key,) = [r for r in stack.of_type("tls:index/privateKey:PrivateKey") if r.name == f"{cluster}-pki-ca"]
    (cert,) = [r for r in stack.of_type("tls:index/selfSignedCert:SelfSignedCert") if r.name == f"{cluster}-pki-ca"]
    ca = pki.IssuedCert(cert.outputs["certPem"], key.outputs["privateKeyPem"])
    issued = pki.issue_certificate(ca, cluster, conventions.MEMBER_ROLE, user=user)
    return client_security(TlsMaterial(ca.cert_pem, issued.cert_pem, issued.key_pem), cluster)


def _wait_for(path: Path, node: Instance, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"{node.role} exited {process.returncode}:\n{node.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path.name}:\n{node.log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_a_task_on_alices_cluster_reads_only_alices_data_and_bob_cannot_read_her_certificate(aws, stack, tmp_path,
                                                                                           monkeypatch, request):
    region = stack.outputs["region"]
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, region)
    ports = {"scheduler": free_port(), "dashboard": free_port(), "worker": free_port()}
    load_into_moto(aws.endpoint, stack, CLUSTER, region, scheduler_host=NODE_ADDRESS, ports=ports)
    client = lambda service: boto3.client(service, region_name=region, endpoint_url=aws.endpoint)  # noqa: E731
    bucket = stack.outputs["bucketName"]
    client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    for cluster, key in OBJECTS.items():
        client("s3").put_object(Bucket=bucket, Key=key, Body=f"{cluster}'s data\n".encode())
    roles = {role: node_role_credentials(aws.endpoint, stack, CLUSTER, role, region) for role in conventions.NODE_ROLES}
    bob = _login_with_the_programs_policies(client("iam"), stack, "bob")
    vendor = VendorLambda.of_stack(aws.endpoint, stack, {CLUSTER})  # each node proves its role there for its certificate
    request.addfinalizer(vendor.close)
    for name, value in vendor.env.items():
        monkeypatch.setenv(name, value)
    assert json.loads(_membership_record(aws, region, bob, "bob", "bob"))["user"] == "bob"  # nothing enforced yet

    processes, imds_servers = [], []
    try:
        nodes = {}
        for index, role in enumerate(conventions.NODE_ROLES):
            imds = ImdsServer(instance_id=f"i-0{index}23456789abcdef", region=region, private_ipv4=NODE_ADDRESS,
                              tags=stack.instance_tags_of(CLUSTER)[role], user_data=stack.user_data_of(CLUSTER)[role].encode())
            imds_servers.append(imds.start())
            unit_role, argv = exec_start(stack.user_data_of(CLUSTER)[role])
            assert unit_role == role
            environment = {**node_environment(), **roles[role], "AWS_REGION": region, "AWS_DEFAULT_REGION": region}
            nodes[role] = Instance(role, imds, tmp_path / role, argv, environment)
        processes.append(nodes["scheduler"].start())
        _wait_for(nodes["scheduler"].directory("run") / SCHEDULER_INFO_FILE, nodes["scheduler"], processes[0])
        processes.append(nodes["worker"].start())
        address = f"tls://{NODE_ADDRESS}:{ports['scheduler']}"
        with Client(address, security=_member_security(stack, CLUSTER, "carol"), timeout=60) as dask_client:
            dask_client.wait_for_workers(1, timeout=120)
            aws.enforce_iam()  # from here every request is authenticated and checked against its caller's policies
            read = dask_client.submit(_objects_reader(), bucket, OBJECTS, pure=False).result(timeout=120)
        assert read == {"alice": "alice's data", "team": "AccessDenied", "bob": "AccessDenied"}

        with pytest.raises(ClientError) as denied:
            _membership_record(aws, region, bob, CLUSTER, "alice")
        assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, denied.value.response
        assert "secretsmanager:GetSecretValue" in str(denied.value) and "user/bob" in str(denied.value)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for imds in imds_servers:
            imds.stop()
