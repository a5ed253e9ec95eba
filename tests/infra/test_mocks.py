"""The mocks themselves: pulumi-tls resources are computed as their inputs say, invokes are answered as AWS would."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra.mocks import ProgramMocks


def create(mocks, type_, name, inputs):
    return mocks.new_resource(MockResourceArgs(type_, name, inputs, custom=True))[1]


def test_tls_resources_honour_curve_subject_uris_uses_and_validity(mocks):
    key = create(mocks, "tls:index/privateKey:PrivateKey", "k", {"algorithm": "ECDSA", "ecdsaCurve": "P384"})
    assert "BEGIN EC PRIVATE KEY" in key["privateKeyPem"] and "BEGIN PRIVATE KEY" in key["privateKeyPemPkcs8"]
    ca = create(mocks, "tls:index/selfSignedCert:SelfSignedCert", "ca", {
        "privateKeyPem": key["privateKeyPem"], "subject": {"commonName": "test CA"}, "isCaCertificate": True,
        "validityPeriodHours": 48, "allowedUses": ["cert_signing"], "setSubjectKeyId": True,
    })
    leaf_key = create(mocks, "tls:index/privateKey:PrivateKey", "leaf", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    request = create(mocks, "tls:index/certRequest:CertRequest", "leaf", {
        "privateKeyPem": leaf_key["privateKeyPem"], "subject": {"commonName": "leaf", "organization": "o"},
        "uris": ["spiffe://c/role/worker"], "dnsNames": ["w.example"],
    })
    leaf = create(mocks, "tls:index/locallySignedCert:LocallySignedCert", "leaf", {
        "certRequestPem": request["certRequestPem"], "caPrivateKeyPem": key["privateKeyPem"], "caCertPem": ca["certPem"],
        "validityPeriodHours": 5, "allowedUses": ["digital_signature", "client_auth"],
    })
    ca_cert = x509.load_pem_x509_certificate(ca["certPem"].encode())
    cert = x509.load_pem_x509_certificate(leaf["certPem"].encode())
    assert isinstance(ca_cert.public_key(), ec.EllipticCurvePublicKey) and ca_cert.public_key().curve.name == "secp384r1"
    cert.verify_directly_issued_by(ca_cert)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 5 * 3600
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://c/role/worker"]
    assert sans.get_values_for_type(x509.DNSName) == ["w.example"]
    assert cert.subject.rfc4514_string() == "O=o,CN=leaf"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_an_allowed_use_the_provider_does_not_know_is_refused(mocks):
    key = create(mocks, "tls:index/privateKey:PrivateKey", "k", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    with pytest.raises(ValueError, match="key_encipher"):
        create(mocks, "tls:index/selfSignedCert:SelfSignedCert", "ca", {
            "privateKeyPem": key["privateKeyPem"], "subject": {"commonName": "x"}, "validityPeriodHours": 1,
            "allowedUses": ["key_encipher"],
        })


def test_ami_lookups_filter_by_owner_and_tag():
    mocks = ProgramMocks(images=[{"id": "ami-1", "tags": {"daskfleet:env-fingerprint": "sha256:a"}}])
    def ids(owners, value):
        args = {"owners": owners, "filters": [{"name": "tag:daskfleet:env-fingerprint", "values": [value]}]}
        return mocks.call(MockCallArgs("aws:ec2/getAmiIds:getAmiIds", args, ""))[0]["ids"]
    assert ids(["self"], "sha256:a") == ["ami-1"]
    assert ids(["self"], "sha256:b") == []
    with pytest.raises(ValueError, match="no results"):
        mocks.call(MockCallArgs("aws:ec2/getAmi:getAmi", {"owners": ["self"], "filters": [{"name": "image-id", "values": ["ami-2"]}]}, ""))


def test_an_invoke_the_mocks_do_not_know_fails_loudly(mocks):
    with pytest.raises(NotImplementedError, match="aws:rds/getInstance:getInstance"):
        mocks.call(MockCallArgs("aws:rds/getInstance:getInstance", {}, ""))
