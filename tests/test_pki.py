"""The per-cluster PKI: role URIs, both TLS usages, P-256, explicit validity, private files."""

from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from daskfleet import conventions
from daskfleet.trust import pki
from daskfleet.errors import DaskfleetError, ExitCode


@pytest.fixture(scope="module")
def ca():
    return pki.create_ca("analytics")


def test_client_certificate_carries_role_uri_and_user_identity(ca):
    issued = pki.issue_certificate(ca, "analytics", "client", user="alice")
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://analytics/role/client"]
    identity = pki.identity_of(issued.cert_pem)
    assert (identity.cluster, identity.role, identity.common_name) == ("analytics", "client", "alice")
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() == conventions.CERT_VALIDITY_HOURS * 3600


def test_ca_is_a_path_limited_ca(ca):
    cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0


def test_role_uri_round_trips_and_rejects_strangers():
    assert conventions.parse_role_uri(conventions.role_uri("a-b", "worker")) == ("a-b", "worker")
    assert conventions.parse_role_uri(conventions.role_uri("a-b", "admin")) == ("a-b", "admin")
    assert conventions.parse_role_uri("spiffe://a/role/root") is None
    assert conventions.parse_role_uri("https://a/role/worker") is None


def test_client_certificates_need_a_user(ca):
    with pytest.raises(ValueError, match="needs a user"):
        pki.issue_certificate(ca, "analytics", "client")


def test_check_rejects_a_key_that_does_not_match(ca):
    one = pki.issue_certificate(ca, "analytics", "worker")
    two = pki.issue_certificate(ca, "analytics", "worker")
    with pytest.raises(DaskfleetError) as failure:
        pki.check_node_certificate(ca.cert_pem, one.cert_pem, two.key_pem, cluster="analytics", role="worker", origin="t")
    assert failure.value.exit_code == ExitCode.CERT_UNREADABLE and "does not match" in str(failure.value)


def test_check_rejects_garbage(ca):
    with pytest.raises(DaskfleetError) as failure:
        pki.check_node_certificate(ca.cert_pem, "junk", "junk", cluster="analytics", role="worker", origin="t")
    assert failure.value.exit_code == ExitCode.CERT_UNREADABLE


def test_private_files_are_0600_in_0700_directories(tmp_path):
    target = tmp_path / "secrets" / "deeper" / "key.pem"
    pki.write_private(target, "x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


def test_issued_certificates_never_print_their_key(ca):
    assert "PRIVATE" not in repr(pki.issue_certificate(ca, "analytics", "worker"))
