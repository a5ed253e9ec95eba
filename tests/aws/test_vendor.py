"""The certificate vendor on moto's STS and IAM: who gets which certificate, and which proofs are refused."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading

import boto3
import pytest
from aws.awsfake import CLUSTER, REGION, Moto
from aws.e2e import VendorLambda

from daskfleet import conventions
from click.testing import CliRunner

from daskfleet import cli as daskfleet_cli
from daskfleet.aws.login import make_proof, request_certificate, vended_from_answer
from daskfleet.aws.vendor_lambda import answer, make_vendor
from daskfleet.errors import DaskfleetError
from daskfleet.trust import pki
from daskfleet.trust.denylist import DenyList
from daskfleet.trust.vendor import CertificateRequest, VendorPolicy, VendorRefusal

FUNCTION = conventions.vendor_function_name(CLUSTER)
WORKER_ROLE = conventions.iam_role_name(CLUSTER, "worker")


@pytest.fixture
def stack(aws: Moto) -> dict:
    """What the Pulumi program declares for the vendor: alice and bob as users (bob an admin), the node roles,
    the vendor's policy parameter and the CA secret; prometheus is a metrics scraper; mallory has an AWS login
    but is not in the stack."""
    iam = aws.client("iam")
    keys = {}
    for name in ("alice", "bob", "mallory", "prometheus"):
        arn = iam.create_user(UserName=name)["User"]["Arn"]
        key = iam.create_access_key(UserName=name)["AccessKey"]
        keys[name] = (arn, key["AccessKeyId"], key["SecretAccessKey"])
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}
    role_arn = iam.create_role(RoleName=WORKER_ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    policy = VendorPolicy(cluster=CLUSTER, users={"alice": keys["alice"][0], "bob": keys["bob"][0]},
                          admins=frozenset({"bob"}), node_roles={"worker": role_arn},
                          metrics_principals=(keys["prometheus"][0],))
    ca = pki.create_ca(CLUSTER)
    aws.client("ssm").put_parameter(Name=conventions.vendor_policy_parameter_name(CLUSTER), Value=policy.to_json(),
                                    Type="String")
    aws.put_secret(conventions.ca_secret_name(CLUSTER), json.dumps({"cert": ca.cert_pem, "key": ca.key_pem}))
    aws.put_spec(CLUSTER, "worker", {"cluster": CLUSTER, "role": "worker", "vendor_function": FUNCTION})
    vendor = make_vendor(boto3.session.Session(region_name=REGION), frozenset({CLUSTER}), aws.endpoint)
    return {"keys": keys, "role_arn": role_arn, "ca": ca, "vendor": vendor}


def session_of(stack: dict, name: str) -> boto3.session.Session:
    _, key_id, secret = stack["keys"][name]
    return boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=REGION)


def in_process(stack: dict):
    """The Lambda invocation, without Lambda: the request through JSON to the handler's ``answer``."""
    def transport(session, function, request: CertificateRequest):
        assert function == FUNCTION  # found in the worker spec
        return vended_from_answer(json.dumps(answer(stack["vendor"], json.loads(request.to_json()))), function)

    return transport


def key_and_csr() -> tuple[str, str]:
    key = pki.new_private_key_pem()
    return key, pki.make_csr(key)


def test_alice_gets_a_member_certificate_of_12_hours_for_her_own_key(stack: dict) -> None:
    key, csr = key_and_csr()
    before = dt.datetime.now(dt.timezone.utc)
    vended = request_certificate(session_of(stack, "alice"), CLUSTER, csr, transport=in_process(stack))
    identity = pki.identity_of(vended.cert_pem)
    assert (identity.common_name, identity.role, identity.cluster) == ("alice", conventions.MEMBER_ROLE, CLUSTER)
    assert identity.not_after <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=12)
    assert identity.not_after >= before + dt.timedelta(hours=11, minutes=59)
    assert pki.public_key_der(vended.cert_pem) == pki.public_key_der(key)
    assert vended.ca_pem == stack["ca"].cert_pem
    bob = pki.identity_of(request_certificate(session_of(stack, "bob"), CLUSTER, key_and_csr()[1],
                                              transport=in_process(stack)).cert_pem)
    assert (bob.common_name, bob.role) == ("bob", conventions.ADMIN_ROLE)


def test_a_proof_replayed_with_another_csr_is_refused(stack: dict) -> None:
    _, csr = key_and_csr()
    _, other_csr = key_and_csr()
    proof = make_proof(session_of(stack, "alice"), CLUSTER, csr)
    with pytest.raises(VendorRefusal, match="made for another CSR"):
        stack["vendor"].issue(CertificateRequest(CLUSTER, other_csr, proof=proof))
    with pytest.raises(VendorRefusal, match="made for another cluster"):
        make_vendor_for(stack, "other-team").issue(CertificateRequest("other-team", csr, proof=proof))


def make_vendor_for(stack: dict, cluster: str):
    """The same vendor, also signing for ``cluster`` (with alice's policy): a proof for CLUSTER must not count there."""
    vendor = stack["vendor"]
    policy = vendor.policy_of(CLUSTER)
    other = VendorPolicy(cluster=cluster, users=dict(policy.users), admins=policy.admins)
    return type(vendor)(sts_endpoint=vendor.sts_endpoint, send=vendor.send,
                        policy_of=lambda name: other if name == cluster else vendor.policy_of(name),
                        ca_of=lambda name: stack["ca"], deny_list_of=lambda name: DenyList())


class RecordingListener:
    """A TCP listener on 127.0.0.1 that counts the connections made to it (a host a proof might name)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_a_proof_for_another_host_is_refused_without_a_request_to_it(stack: dict, aws: Moto, monkeypatch) -> None:
    listener = RecordingListener()
    try:
        _, csr = key_and_csr()
        monkeypatch.setenv("AWS_ENDPOINT_URL", listener.url)  # alice's proof is signed for the listener
        proof = make_proof(session_of(stack, "alice"), CLUSTER, csr)
        assert proof.url.startswith(listener.url)
        with pytest.raises(VendorRefusal, match=f"signed for {listener.url}/, not this vendor's STS endpoint"):
            stack["vendor"].issue(CertificateRequest(CLUSTER, csr, proof=proof))
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
        honest = make_proof(session_of(stack, "alice"), CLUSTER, csr)
        host = listener.url.removeprefix("http://")
        forged = type(honest)(honest.method, honest.url, {**honest.headers, "Host": host}, honest.body)
        with pytest.raises(VendorRefusal, match="Host header"):
            stack["vendor"].issue(CertificateRequest(CLUSTER, csr, proof=forged))
        # Had the vendor contacted it, the listener would have accepted by now: it polls every 0.2 s.
        listener._stop.set()
        listener._thread.join(5)
        assert listener.connections == 0
    finally:
        listener.close()


def test_a_user_not_in_the_stack_is_refused(stack: dict) -> None:
    with pytest.raises(Exception, match=r"certificate refused: arn:aws:iam::\d{12}:user/mallory is no user of cluster"):
        request_certificate(session_of(stack, "mallory"), CLUSTER, key_and_csr()[1], transport=in_process(stack))


def test_a_revoked_user_is_refused_at_once(stack: dict, aws: Moto) -> None:
    denied = DenyList().with_entry("alice", by="bob", reason="left the team", at=1_800_000_000)
    aws.client("ssm").put_parameter(Name=conventions.deny_list_parameter_name(CLUSTER), Value=denied.to_json(),
                                    Type="String")
    with pytest.raises(Exception, match="user 'alice' of cluster 'analytics' is revoked .*left the team"):
        request_certificate(session_of(stack, "alice"), CLUSTER, key_and_csr()[1], transport=in_process(stack))


def test_the_node_role_gets_a_node_certificate_and_a_user_login_cannot(stack: dict, aws: Moto) -> None:
    assumed = aws.client("sts").assume_role(RoleArn=stack["role_arn"], RoleSessionName="i-0abc123")["Credentials"]
    node = boto3.session.Session(aws_access_key_id=assumed["AccessKeyId"], aws_secret_access_key=assumed["SecretAccessKey"],
                                 aws_session_token=assumed["SessionToken"], region_name=REGION)
    key, csr = key_and_csr()
    vended = request_certificate(node, CLUSTER, csr, role="worker", transport=in_process(stack))
    identity = pki.identity_of(vended.cert_pem)
    assert (identity.role, identity.cluster, identity.common_name) == ("worker", CLUSTER, f"worker.{CLUSTER}")
    assert identity.not_after <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=24)
    pki.check_node_certificate(stack["ca"].cert_pem, vended.cert_pem, key, cluster=CLUSTER, role="worker", origin="t")
    with pytest.raises(Exception, match="user 'alice' may not get a worker certificate"):
        request_certificate(session_of(stack, "alice"), CLUSTER, key_and_csr()[1], role="worker",
                            transport=in_process(stack))
    with pytest.raises(Exception, match="scheduler"):
        request_certificate(node, CLUSTER, key_and_csr()[1], role="scheduler", transport=in_process(stack))
    with pytest.raises(Exception, match="only its users"):
        request_certificate(node, CLUSTER, key_and_csr()[1], transport=in_process(stack))


def test_daskfleet_login_metrics_writes_the_files_a_prometheus_scrape_config_names(stack, aws, home, monkeypatch,
                                                                                    request) -> None:
    """`daskfleet login CLUSTER --metrics` with the scraper's own AWS login, through lambda:Invoke."""
    vendor = VendorLambda(aws.endpoint, REGION, FUNCTION, {CLUSTER})
    request.addfinalizer(vendor.close)
    for name, value in vendor.env.items():
        monkeypatch.setenv(name, value)
    _, key_id, secret = stack["keys"]["prometheus"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    result = CliRunner().invoke(daskfleet_cli.cli, ["login", CLUSTER, "--metrics"])
    assert result.exit_code == 0, result.output
    directory = home / ".credentials" / CLUSTER / "metrics"
    for name in ("ca_file", "cert_file", "key_file"):
        assert f"{name}: {directory}/" in result.output
    assert "run this command again before it expires" in result.output
    identity = pki.identity_of((directory / "cert.pem").read_text())
    assert (identity.role, identity.cluster, identity.common_name) == ("metrics", CLUSTER, f"metrics.{CLUSTER}")
    assert pki.public_key_der((directory / "cert.pem").read_text()) == pki.public_key_der((directory / "key.pem").read_text())
    assert oct((directory / "key.pem").stat().st_mode & 0o777) == "0o600"
    assert (directory / "ca.pem").read_text() == stack["ca"].cert_pem
    # A member's login gets none.
    _, key_id, secret = stack["keys"]["alice"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    refused = CliRunner().invoke(daskfleet_cli.cli, ["login", CLUSTER, "--metrics"])
    assert isinstance(refused.exception, DaskfleetError)  # printed as one line by daskfleet's entry point
    assert "user/alice may not get a metrics certificate of cluster 'analytics'" in refused.exception.message
