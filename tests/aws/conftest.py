"""AWS without AWS: a moto server and a local IMDSv2 endpoint, both on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aws.awsfake import CLUSTER, PRIVATE_IPV4, REGION, Moto, post
from aws.imds import ImdsServer

from daskfleet import conventions
from daskfleet.trust import pki
from daskfleet.aws.source import IMDS_ENDPOINT_ENV
from daskfleet.trust.tls import TlsMaterial


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    """A fresh moto state, reached by every boto3 client through AWS_ENDPOINT_URL with fake credentials.

    The environment is set per test, so nothing leaks into tests outside this directory.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # botocore never probes 169.254.169.254 here
    post(f"{moto_endpoint}/moto-api/reset")
    yield Moto(moto_endpoint)
    post(f"{moto_endpoint}/moto-api/reset-auth", b"inf")


@pytest.fixture(scope="session")
def cluster_pki() -> dict[str, TlsMaterial]:
    """Real PEMs for the test cluster: one TlsMaterial per role (client issued to ``alice``)."""
    ca = pki.create_ca(CLUSTER)
    material = {}
    for role in conventions.ROLES:
        issued = pki.issue_certificate(ca, CLUSTER, role, user="alice" if role in conventions.USER_ROLES else None)
        material[role] = TlsMaterial(ca_pem=ca.cert_pem, cert_pem=issued.cert_pem, key_pem=issued.key_pem)
    return material


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImdsServer]:
    """A worker instance of the test cluster, its metadata served over IMDSv2 and pointed to by the override."""
    server = ImdsServer(
        private_ipv4=PRIVATE_IPV4,
        region=REGION,
        tags={conventions.TAG_CLUSTER: CLUSTER, conventions.TAG_ROLE: "worker", "Name": "analytics-worker"},
    )
    with server:
        monkeypatch.setenv(IMDS_ENDPOINT_ENV, server.url)
        yield server
