"""The certificate vendor as a Lambda function: ``daskfleet.trust.vendor`` bound to STS, SSM and Secrets Manager.

The stack declares one per fleet (conventions.vendor_function_name), packaged from this same code, with its
own role: the only reader of the clusters' CA keys (conventions.ca_secret_name) besides break-glass operators.
Per cluster it reads whom it signs for (conventions.vendor_policy_parameter_name) and the deny-list
(conventions.deny_list_parameter_name), at every request, so a removed or revoked user is refused at once.
The event is a ``CertificateRequest`` (JSON object); the answer ``{"certificate", "ca"}`` or ``{"error"}``.

Environment: ``DASKFLEET_VENDOR_CLUSTERS`` (comma-separated clusters it signs for) and, optionally,
``DASKFLEET_STS_ENDPOINT`` (default: the regional STS endpoint botocore resolves for the function's region):
the only place a proof is ever sent.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import boto3

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..trust.denylist import DenyList
from ..trust.pki import IssuedCert
from ..trust.vendor import CertificateRequest, Vendor, VendorPolicy, VendorRefusal
from .calls import BOTO_CONFIG, Caller, call_aws

CLUSTERS_ENV = "DASKFLEET_VENDOR_CLUSTERS"
STS_ENDPOINT_ENV = "DASKFLEET_STS_ENDPOINT"
STS_TIMEOUT_S = 10.0
VENDOR_ROLE = Caller(who="the certificate vendor's role", login_hint="check the vendor function's role",
                     credentials_exit=ExitCode.SOURCE_UNAVAILABLE)
#: Headers not forwarded to STS (the connection's own).
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


def send_to_sts(endpoint: str, headers: Mapping[str, str], body: str) -> tuple[int, str]:
    """POST the proof to ``endpoint`` (the vendor's own configuration, never the request's): (status, body)."""
    forwarded = {name: value for name, value in headers.items() if name.lower() not in _HOP_HEADERS}
    request = urllib.request.Request(endpoint.rstrip("/") + "/", data=body.encode(), headers=forwarded, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=STS_TIMEOUT_S) as response:  # noqa: S310  (our own endpoint)
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, TimeoutError) as exc:
        raise DaskfleetError(f"STS at {endpoint} unreachable: {exc}", ExitCode.SOURCE_UNAVAILABLE) from None


class AwsVendorStore:
    """Where the vendor reads each cluster's policy, CA and deny-list."""

    def __init__(self, session: Any, clusters: frozenset[str]):
        self.clusters = clusters
        self.ssm = session.client("ssm", config=BOTO_CONFIG)
        self.secrets = session.client("secretsmanager", config=BOTO_CONFIG)
        self._cas: dict[str, IssuedCert] = {}

    def policy(self, cluster: str) -> VendorPolicy | None:
        if cluster not in self.clusters:
            return None
        name = conventions.vendor_policy_parameter_name(cluster)
        response = call_aws(self.ssm, "GetParameter", f"SSM parameter {name}", VENDOR_ROLE,
                            missing=ExitCode.CONFIG, Name=name, WithDecryption=True)
        return VendorPolicy.from_json(response["Parameter"]["Value"])

    def ca(self, cluster: str) -> IssuedCert:
        if cluster not in self._cas:
            name = conventions.ca_secret_name(cluster)
            response = call_aws(self.secrets, "GetSecretValue", f"secret {name}", VENDOR_ROLE,
                                missing=ExitCode.CONFIG, SecretId=name)
            try:
                doc = json.loads(response["SecretString"])
                self._cas[cluster] = IssuedCert(doc["cert"], doc["key"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DaskfleetError(f"secret {name}: not a CA document with keys cert, key", ExitCode.CONFIG) from None
        return self._cas[cluster]

    def deny_list(self, cluster: str) -> DenyList:
        name = conventions.deny_list_parameter_name(cluster)
        try:
            response = self.ssm.get_parameter(Name=name, WithDecryption=True)
        except self.ssm.exceptions.ParameterNotFound:
            return DenyList()
        return DenyList.from_json(response["Parameter"]["Value"])


def make_vendor(session: Any, clusters: frozenset[str], sts_endpoint: str | None = None) -> Vendor:
    store = AwsVendorStore(session, clusters)
    endpoint = sts_endpoint or session.client("sts", config=BOTO_CONFIG).meta.endpoint_url
    return Vendor(sts_endpoint=endpoint, send=send_to_sts, policy_of=store.policy, ca_of=store.ca,
                  deny_list_of=store.deny_list)


@lru_cache(maxsize=1)
def _vendor() -> Vendor:
    clusters = frozenset(name for name in os.environ.get(CLUSTERS_ENV, "").split(",") if name)
    return make_vendor(boto3.session.Session(), clusters, os.environ.get(STS_ENDPOINT_ENV) or None)


def answer(vendor: Vendor, event: Any) -> dict[str, Any]:
    """The vendor's answer to one event: the certificate, or the one line of its refusal."""
    try:
        request = CertificateRequest.from_json(event if isinstance(event, (str, dict)) else {})
        return vendor.issue(request).to_dict()
    except VendorRefusal as refusal:
        return {"error": refusal.message}
    except DaskfleetError as error:
        return {"error": f"certificate vendor: {error.message}"}


def handler(event: Any, context: Any) -> dict[str, Any]:  # noqa: ARG001  (Lambda's signature)
    return answer(_vendor(), event)
