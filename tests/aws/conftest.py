"""AWS without AWS: a moto server and a local IMDSv2 endpoint, both on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aws.awsfake import CLUSTER, PRIVATE_IPV4, REGION, Moto, post
from aws.imds import ImdsServer
from moto.server import ThreadedMotoServer

from daskfleet import conventions, pki
from daskfleet.aws_source import IMDS_ENDPOINT_ENV
from daskfleet.sources import TlsMaterial


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server for the session; every boto3 client in the tests reaches it through AWS_ENDPOINT_URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        env.setenv("AWS_REGION", REGION)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # botocore never probes 169.254.169.254 here
        yield endpoint
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[Moto]:
    """A fresh moto state for one test, and helpers that store what the Pulumi program would."""
    post(f"{moto_endpoint}/moto-api/reset")
    yield Moto(moto_endpoint)
    post(f"{moto_endpoint}/moto-api/reset-auth", b"inf")


@pytest.fixture(scope="session")
def cluster_pki() -> dict[str, TlsMaterial]:
    """Real PEMs for the test cluster: one TlsMaterial per role (client issued to ``alice``)."""
    ca = pki.create_ca(CLUSTER)
    material = {}
    for role in conventions.ROLES:
        issued = pki.issue_certificate(ca, CLUSTER, role, user="alice" if role == "client" else None)
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
