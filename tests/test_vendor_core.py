"""The vendor's pure decisions: which proofs count, whom an ARN stands for, how long a certificate lives."""

from __future__ import annotations

import datetime as dt

import pytest

from daskfleet import conventions
from daskfleet.trust import pki
from daskfleet.trust.denylist import DenyList
from daskfleet.trust.vendor import (
    PROOF_BODY, CertificateRequest, IdentityProof, VendorPolicy, VendorRefusal, check_proof, csr_sha256, decide,
    needs_renewal, principal_of, validity_window,
)

NOW = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.timezone.utc)
STS = "https://sts.eu-west-1.amazonaws.com"
CSR = pki.make_csr(pki.new_private_key_pem())


def proof(signed: str = "content-type;host;x-amz-date;x-daskfleet-cluster;x-daskfleet-csr-sha256", **headers: str) -> IdentityProof:
    base = {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIA/20261202/eu-west-1/sts/aws4_request, SignedHeaders={signed}, "
                         "Signature=00",
        "X-Amz-Date": "20261202T115900Z", conventions.PROOF_CLUSTER_HEADER: "analytics",
        conventions.PROOF_CSR_HEADER: csr_sha256(CSR),
    }
    return IdentityProof("POST", STS + "/", {**base, **headers}, PROOF_BODY)


def check(p: IdentityProof, cluster: str = "analytics") -> None:
    check_proof(p, cluster=cluster, csr_hash=csr_sha256(CSR), sts_endpoint=STS, now=NOW)


def test_a_well_formed_proof_passes_and_each_flaw_is_refused_by_name() -> None:
    check(proof())
    with pytest.raises(VendorRefusal, match="does not sign the X-Daskfleet-Csr-Sha256 header"):
        check(proof(signed="host;x-amz-date;x-daskfleet-cluster"))  # the hash header added after signing
    with pytest.raises(VendorRefusal, match="made for another cluster"):
        check(proof(), cluster="finance")
    with pytest.raises(VendorRefusal, match="more than 15 minutes"):
        check(proof(**{"X-Amz-Date": "20261202T100000Z"}))
    with pytest.raises(VendorRefusal, match="not a POST of sts:GetCallerIdentity"):
        check(IdentityProof("POST", STS + "/", proof().headers, "Action=AssumeRole&Version=2011-06-15"))
    with pytest.raises(VendorRefusal, match="no SigV4 signature for sts"):
        check(proof(Authorization="AWS4-HMAC-SHA256 Credential=AKIA/20261202/eu-west-1/s3/aws4_request, "
                                  "SignedHeaders=host, Signature=00"))


def test_an_arn_maps_to_its_principal_and_a_shared_role_to_the_session_s_person() -> None:
    assumed = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_DataScientist_ab12/Alice@example.com"
    role = "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_DataScientist_ab12"
    assert principal_of(assumed) == principal_of(role) == "arn:aws:iam::123456789012:role/AWSReservedSSO_DataScientist_ab12"
    policy = VendorPolicy(cluster="analytics", users={"alice": role, "bob": role}, admins=frozenset({"bob"}))
    grant = decide(policy, assumed, "user", DenyList(), NOW)
    assert (grant.user, grant.role) == ("alice", conventions.MEMBER_ROLE)
    with pytest.raises(VendorRefusal, match="several users"):
        decide(policy, assumed.replace("Alice@", "Carol@"), "user", DenyList(), NOW)


def test_certificates_are_as_short_as_asked_and_never_longer_than_the_policy() -> None:
    policy = VendorPolicy(cluster="analytics", users={"alice": "local:alice"})
    grant = decide(policy, "local:alice", "user", DenyList(), NOW, valid_seconds=2)
    assert grant.not_after == NOW + dt.timedelta(seconds=2) and grant.not_before <= NOW
    assert decide(policy, "local:alice", "user", DenyList(), NOW, valid_seconds=10**9).not_after == NOW + dt.timedelta(hours=12)
    start, end = validity_window(dt.timedelta(hours=12), NOW)
    assert (start, end) == (NOW - dt.timedelta(minutes=5), NOW + dt.timedelta(hours=12))
    with pytest.raises(Exception, match="at most 24 h"):
        VendorPolicy(cluster="analytics", users={}, client_validity=dt.timedelta(hours=25))


def test_a_certificate_is_renewed_once_less_than_a_third_of_its_life_is_left() -> None:
    ca = pki.create_ca("analytics")
    issued = pki.issue_certificate(ca, "analytics", "client", user="alice", valid_hours=12, not_before=NOW)
    fraction = conventions.RENEW_CLIENT_AT_FRACTION
    assert not needs_renewal(issued.cert_pem, fraction, NOW + dt.timedelta(hours=7, minutes=59))
    assert needs_renewal(issued.cert_pem, fraction, NOW + dt.timedelta(hours=8, minutes=1))
    assert needs_renewal(None, fraction, NOW)


def test_a_request_with_an_unknown_key_or_role_is_refused_by_name() -> None:
    with pytest.raises(VendorRefusal, match="unknown key.*lifetime"):
        CertificateRequest.from_json('{"cluster": "analytics", "csr_pem": "x", "lifetime": 5}')
    with pytest.raises(VendorRefusal, match="role 'admin'"):
        CertificateRequest.from_json('{"cluster": "analytics", "csr_pem": "x", "role": "admin"}')


def test_only_the_stack_s_metrics_scrapers_get_a_read_only_metrics_certificate() -> None:
    scraper = "arn:aws:iam::123456789012:role/prometheus"
    policy = VendorPolicy(cluster="analytics", users={"alice": "arn:aws:iam::123456789012:user/alice"},
                          metrics_principals=(scraper,))
    grant = decide(policy, "arn:aws:sts::123456789012:assumed-role/prometheus/i-0abc", "metrics", DenyList(), NOW)
    assert (grant.role, grant.user, grant.cluster) == ("metrics", None, "analytics")
    assert grant.not_after == NOW + policy.client_validity
    with pytest.raises(VendorRefusal, match="user/alice may not get a metrics certificate .* metricsScrapers do not list"):
        decide(policy, "arn:aws:iam::123456789012:user/alice", "metrics", DenyList(), NOW)
    with pytest.raises(VendorRefusal, match="is a metrics scraper of cluster 'analytics'; only its users"):
        decide(policy, scraper, "user", DenyList(), NOW)
    assert VendorPolicy.from_json(policy.to_json()).metrics_principals == (scraper,)
    assert CertificateRequest.from_json({"cluster": "analytics", "csr_pem": CSR, "role": "metrics"}).role == "metrics"
