"""PKI: a real CA from the mocked pulumi-tls resources, for the certificate vendor alone; the only private key the stack
makes. Every node's and person's certificate is the vendor's, for a key made where it is used; each user has a
membership record with no key."""

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


def stack_ca(record) -> pki.IssuedCert:
    ca = json.loads(record.secrets[conventions.ca_secret_name("analytics")])
    assert set(ca) == {"cert", "key"}
    return pki.IssuedCert(ca["cert"], ca["key"])


def vendor_signed(record, role: str, principal: str, key_pem: str) -> str:
    """What the vendor signs with the CA secret and the policy parameter the program stores, for ``principal``."""
    policy = VendorPolicy.from_json(record.parameters[conventions.vendor_policy_parameter_name("analytics")])
    grant = decide(policy, principal, role, DenyList(), dt.datetime.now(dt.timezone.utc))
    return sign(stack_ca(record), pki.make_csr(key_pem), grant, policy)


def node_principal(record, role: str) -> str:
    """An instance of ``role``: a session of its node role (what STS answers for the instance's credentials)."""
    role_name = record.one("aws:iam/role:Role", f"identity-{role}").outputs["arn"].rsplit("/", 1)[1]
    return f"arn:aws:sts::123456789012:assumed-role/{role_name}/i-0123456789abcdef0"


def test_the_ca_is_a_p256_ca_with_the_conventional_uses(example):
    ca_inputs = example.one("tls:index/selfSignedCert:SelfSignedCert").inputs
    assert ca_inputs["allowedUses"] == list(conventions.CA_ALLOWED_USES)
    assert ca_inputs["validityPeriodHours"] == conventions.CA_VALIDITY_HOURS
    ca = x509.load_pem_x509_certificate(stack_ca(example).cert_pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    for key in example.of_type("tls:index/privateKey:PrivateKey"):
        assert (key.inputs["algorithm"], key.inputs["ecdsaCurve"]) == ("ECDSA", "P256")


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_a_node_certificate_the_vendor_signs_for_its_role_passes_the_agents_own_check(example, role):
    key = pki.new_private_key_pem()
    cert_pem = vendor_signed(example, role, node_principal(example, role), key)
    identity = pki.check_node_certificate(stack_ca(example).cert_pem, cert_pem, key, cluster="analytics", role=role,
                                          origin="test")
    assert identity.common_name == conventions.common_name("analytics", role)
    assert identity.not_after <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=conventions.NODE_CERT_VALIDITY_HOURS)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [conventions.role_uri("analytics", role)]
    expected_dns = ["scheduler.analytics.daskfleet.internal"] if role == "scheduler" else []
    assert sans.get_values_for_type(x509.DNSName) == expected_dns


def test_no_private_key_but_the_cas_exists_and_each_user_has_a_keyless_membership_record(example):
    """No node or user key is made by the stack, so none sits in Secrets Manager or the Pulumi state, and no
    certificate of a year is issued (the node roles read no secret: test_identity)."""
    keys = example.of_type("tls:index/privateKey:PrivateKey")
    assert [key.name for key in keys] == ["pki-ca"]
    assert example.of_type("tls:index/locallySignedCert:LocallySignedCert") == []
    assert example.of_type("tls:index/certRequest:CertRequest") == []
    for user, role in (("alice", conventions.MEMBER_ROLE), ("bob", conventions.MEMBER_ROLE)):
        record = json.loads(example.secrets[conventions.client_tls_secret_name("analytics", user)])
        assert record == {"ca": record["ca"], "user": user, "role": role}
        assert "PRIVATE KEY" not in record["ca"]
    holding_keys = [name for name, text in example.secrets.items() if "PRIVATE KEY" in text]
    assert holding_keys == [conventions.ca_secret_name("analytics")]


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
    """The scheduler's and alice's certificates as the vendor signs them: each key made here."""
    ca = stack_ca(example).cert_pem
    scheduler_key, alice_key = pki.new_private_key_pem(), pki.new_private_key_pem()
    scheduler = TlsMaterial(ca, vendor_signed(example, "scheduler", node_principal(example, "scheduler"), scheduler_key),
                            scheduler_key)
    alice = TlsMaterial(ca, vendor_signed(example, "user", "arn:aws:sts::123456789012:assumed-role/alice/alice",
                                          alice_key), alice_key)
    assert _handshake(scheduler, alice, tmp_path) == "alice"


def test_secrets_are_named_by_convention_and_encrypted_with_the_cluster_key(example):
    key_arn = example.one("aws:kms/key:Key").outputs["arn"]
    secrets = example.of_type("aws:secretsmanager/secret:Secret")
    assert sorted(secret.inputs["name"] for secret in secrets) == sorted([
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


def test_configured_operators_may_read_the_ca_back_for_break_glass_and_no_node_role_may(adopted):
    allow, deny = _policy_for(adopted, conventions.ca_secret_name("analytics"))
    vendor_role = adopted.one("aws:iam/role:Role", "cert-vendor-role").outputs["arn"]
    assert allow["Principal"] == {"AWS": [vendor_role]}
    readers = deny["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
    assert readers == sorted([vendor_role, DEPLOYER, OPERATOR])
    for role in conventions.NODE_ROLES:
        assert adopted.one("aws:iam/role:Role", f"identity-{role}").outputs["arn"] not in readers


def test_client_secret_arns_are_exported_per_user(example):
    arns = {s.inputs["name"]: s.outputs["arn"] for s in example.of_type("aws:secretsmanager/secret:Secret")}
    assert example.outputs["clientSecretArns"] == {
        user: arns[conventions.client_tls_secret_name("analytics", user)] for user in ("alice", "bob")
    }


def test_ephemeral_secrets_are_deleted_at_once(example, adopted):
    assert {s.inputs["recoveryWindowInDays"] for s in example.of_type("aws:secretsmanager/secret:Secret")} == {7}
    assert {s.inputs["recoveryWindowInDays"] for s in adopted.of_type("aws:secretsmanager/secret:Secret")} == {0}
