"""PKI: real certificates from the mocked pulumi-tls resources, stored per node role, each readable by one principal;
the CA for the certificate vendor alone, and for each user a membership record with no key."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from infra.helpers import statements
from infra.scenarios import OPERATOR

from daskfleet import conventions
from daskfleet.trust import pki
from daskfleet.trust.denylist import DenyList
from daskfleet.trust.tls import TlsMaterial
from daskfleet.trust.vendor import VendorPolicy, decide, sign

DEPLOYER = "arn:aws:iam::123456789012:role/platform-deployer"


def material(record, secret_name) -> TlsMaterial:
    text = record.secrets[secret_name]
    assert tuple(json.loads(text)) == conventions.TLS_SECRET_KEYS
    return TlsMaterial.from_secret_json(text, secret_name)


def test_the_ca_is_a_p256_ca_with_the_conventional_uses(example):
    ca_inputs = example.one("tls:index/selfSignedCert:SelfSignedCert").inputs
    assert ca_inputs["allowedUses"] == list(conventions.CA_ALLOWED_USES)
    assert ca_inputs["validityPeriodHours"] == conventions.CA_VALIDITY_HOURS
    ca = x509.load_pem_x509_certificate(material(example, conventions.node_tls_secret_name("analytics", "worker")).ca_pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    for key in example.of_type("tls:index/privateKey:PrivateKey"):
        assert (key.inputs["algorithm"], key.inputs["ecdsaCurve"]) == ("ECDSA", "P256")


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_node_secrets_pass_the_agents_own_certificate_check(example, role):
    tls = material(example, conventions.node_tls_secret_name("analytics", role))
    identity = pki.check_node_certificate(tls.ca_pem, tls.cert_pem, tls.key_pem, cluster="analytics", role=role, origin="test")
    assert identity.common_name == conventions.common_name("analytics", role)
    cert = x509.load_pem_x509_certificate(tls.cert_pem.encode())
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert validity.total_seconds() == conventions.CERT_VALIDITY_HOURS * 3600
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [conventions.role_uri("analytics", role)]
    expected_dns = ["scheduler.analytics.daskfleet.internal"] if role == "scheduler" else []
    assert sans.get_values_for_type(x509.DNSName) == expected_dns


def test_no_user_private_key_exists_and_each_user_has_a_keyless_membership_record(example):
    keys = example.of_type("tls:index/privateKey:PrivateKey")
    assert sorted(key.name for key in keys) == ["pki-ca", "pki-scheduler", "pki-worker"]  # the CA and the nodes'
    for user, role in (("alice", conventions.MEMBER_ROLE), ("bob", conventions.MEMBER_ROLE)):
        record = json.loads(example.secrets[conventions.client_tls_secret_name("analytics", user)])
        assert record == {"ca": record["ca"], "user": user, "role": role}
        assert "PRIVATE KEY" not in record["ca"]
    for request in example.of_type("tls:index/locallySignedCert:LocallySignedCert"):
        assert request.inputs["allowedUses"] == list(conventions.CERT_ALLOWED_USES)


def test_the_vendor_policy_names_the_people_by_principal_and_the_node_roles(example):
    policy = VendorPolicy.from_json(example.parameters[conventions.vendor_policy_parameter_name("analytics")])
    assert dict(policy.users) == {"alice": "arn:aws:iam::123456789012:role/alice", "bob": "arn:aws:iam::123456789012:user/bob"}
    roles = {role: example.one("aws:iam/role:Role", f"identity-{role}").outputs["arn"] for role in conventions.NODE_ROLES}
    assert dict(policy.node_roles) == roles
    assert policy.client_validity == dt.timedelta(hours=conventions.CLIENT_CERT_VALIDITY_HOURS)
    assert policy.node_validity == dt.timedelta(hours=conventions.NODE_CERT_VALIDITY_HOURS)


def _handshake(server: TlsMaterial, client: TlsMaterial, tmp_path) -> str:
    """Mutual TLS over a socket pair, each side verifying the other against the cluster CA; the client's CN."""
    def context(purpose, tls: TlsMaterial, name: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(purpose, cadata=tls.ca_pem)
        (tmp_path / f"{name}.pem").write_text(tls.cert_pem + tls.key_pem)
        ctx.load_cert_chain(tmp_path / f"{name}.pem")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    server_ctx = context(ssl.Purpose.CLIENT_AUTH, server, "server")
    client_ctx = context(ssl.Purpose.SERVER_AUTH, client, "client")
    left, right = socket.socketpair()
    seen = {}

    def serve():
        with server_ctx.wrap_socket(left, server_side=True) as tls_socket:
            seen["client"] = dict(part[0] for part in tls_socket.getpeercert()["subject"])["commonName"]
            tls_socket.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(right) as tls_socket:
        assert tls_socket.recv(2) == b"ok"
    thread.join(timeout=10)
    return seen["client"]


def test_a_certificate_the_vendor_signs_with_the_stacks_ca_opens_a_mutual_tls_connection(example, tmp_path):
    """What the vendor does with the CA secret and the policy parameter the program stores: alice's key, made here."""
    scheduler = material(example, conventions.node_tls_secret_name("analytics", "scheduler"))
    ca = json.loads(example.secrets[conventions.ca_secret_name("analytics")])
    policy = VendorPolicy.from_json(example.parameters[conventions.vendor_policy_parameter_name("analytics")])
    key = pki.new_private_key_pem()
    csr = pki.make_csr(key)
    grant = decide(policy, "arn:aws:sts::123456789012:assumed-role/alice/alice", "user", DenyList(),
                   dt.datetime.now(dt.timezone.utc))
    cert = sign(pki.IssuedCert(ca["cert"], ca["key"]), csr, grant, policy)
    assert _handshake(scheduler, TlsMaterial(ca["cert"], cert, key), tmp_path) == "alice"


def test_secrets_are_named_by_convention_and_encrypted_with_the_cluster_key(example):
    key_arn = example.one("aws:kms/key:Key").outputs["arn"]
    secrets = example.of_type("aws:secretsmanager/secret:Secret")
    assert sorted(secret.inputs["name"] for secret in secrets) == sorted([
        conventions.node_tls_secret_name("analytics", "scheduler"), conventions.node_tls_secret_name("analytics", "worker"),
        conventions.client_tls_secret_name("analytics", "alice"), conventions.client_tls_secret_name("analytics", "bob"),
        conventions.ca_secret_name("analytics"),
    ])
    assert all(secret.inputs["kmsKeyId"] == key_arn for secret in secrets)
    for version in example.of_type("aws:secretsmanager/secretVersion:SecretVersion"):
        assert version.secret_inputs == ["secretString"]


def _secret_policy(record, secret_name):
    secret = next(s for s in record.of_type("aws:secretsmanager/secret:Secret") if s.inputs["name"] == secret_name)
    return next(p for p in record.of_type("aws:secretsmanager/secretPolicy:SecretPolicy") if p.inputs["secretArn"] == secret.outputs["arn"])


def _policy_for(record, secret_name):
    policy = _secret_policy(record, secret_name)
    assert policy.inputs["blockPublicPolicy"] is True
    allow, deny = statements(policy.inputs["policy"])
    return allow, deny


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_a_node_secret_is_readable_by_its_role_alone(adopted, role):
    allow, deny = _policy_for(adopted, conventions.node_tls_secret_name("analytics", role))
    role_arn = adopted.one("aws:iam/role:Role", f"identity-{role}").outputs["arn"]
    assert allow["Principal"] == {"AWS": [role_arn]} and allow["Effect"] == "Allow"
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "secretsmanager:GetSecretValue"
    assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": sorted([role_arn, DEPLOYER, OPERATOR])}}


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_a_node_secrets_policy_waits_for_the_role_it_names(example, role):
    """Secrets Manager refuses a principal IAM has not propagated; the provider's retry only helps once the role exists."""
    policy = _secret_policy(example, conventions.node_tls_secret_name("analytics", role))
    assert example.one("aws:iam/role:Role", f"identity-{role}").urn in policy.dependencies


def test_a_users_secret_is_readable_by_their_principal_alone(example):
    for user, principal in (("alice", "arn:aws:iam::123456789012:role/alice"), ("bob", "arn:aws:iam::123456789012:user/bob")):
        allow, deny = _policy_for(example, conventions.client_tls_secret_name("analytics", user))
        assert allow["Principal"] == {"AWS": [principal]}
        assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": sorted([principal, DEPLOYER])}}


def test_the_ca_secret_is_readable_by_the_certificate_vendor_alone(example):
    allow, deny = _policy_for(example, conventions.ca_secret_name("analytics"))
    vendor_role = example.one("aws:iam/role:Role", "cert-vendor-role").outputs["arn"]
    assert allow["Principal"] == {"AWS": [vendor_role]}
    assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": sorted([vendor_role, DEPLOYER])}}


def test_client_secret_arns_are_exported_per_user(example):
    arns = {s.inputs["name"]: s.outputs["arn"] for s in example.of_type("aws:secretsmanager/secret:Secret")}
    assert example.outputs["clientSecretArns"] == {
        user: arns[conventions.client_tls_secret_name("analytics", user)] for user in ("alice", "bob")
    }


def test_ephemeral_secrets_are_deleted_at_once(example, adopted):
    assert {s.inputs["recoveryWindowInDays"] for s in example.of_type("aws:secretsmanager/secret:Secret")} == {7}
    assert {s.inputs["recoveryWindowInDays"] for s in adopted.of_type("aws:secretsmanager/secret:Secret")} == {0}
