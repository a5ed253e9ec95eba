"""Asking an AWS cluster's certificate vendor for a certificate, with the caller's own AWS login.

The proof of identity is a ``sts:GetCallerIdentity`` request signed with the caller's credentials (SigV4)
and never sent by the caller: the vendor sends it to STS itself. Its signed headers carry the cluster and
the CSR's SHA-256 (conventions.PROOF_CLUSTER_HEADER, PROOF_CSR_HEADER), so it proves nothing for another
request. A person's laptop and a node's agent (its instance role) build it the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..trust.vendor import PROOF_BODY, USER_REQUEST, CertificateRequest, IdentityProof, VendedCertificate, csr_sha256
from .calls import BOTO_CONFIG, Caller, Deadline, call_aws
from .user import LOGIN_HINT, YOUR_IDENTITY, _check_name, user_session

log = logging.getLogger(__name__)

#: Sends a request to the cluster's vendor and returns its certificate (a Lambda invocation; tests call the
#: handler in process).
Transport = Callable[[Any, str, CertificateRequest], VendedCertificate]


def make_proof(session: Any, cluster: str, csr_pem: str) -> IdentityProof:
    """A signed sts:GetCallerIdentity for the STS endpoint of ``session``'s region, bound to ``cluster`` and the CSR."""
    credentials = session.get_credentials()
    if credentials is None:
        raise DaskfleetError(f"no AWS credentials: {LOGIN_HINT}", ExitCode.CONFIG)
    sts = session.client("sts", config=BOTO_CONFIG)
    request = AWSRequest(
        method="POST", url=sts.meta.endpoint_url.rstrip("/") + "/", data=PROOF_BODY,
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            conventions.PROOF_CLUSTER_HEADER: cluster,
            conventions.PROOF_CSR_HEADER: csr_sha256(csr_pem),
        },
    )
    SigV4Auth(credentials.get_frozen_credentials(), "sts", sts.meta.region_name).add_auth(request)
    return IdentityProof("POST", request.url, {k: str(v) for k, v in request.headers.items()}, PROOF_BODY)


def vendor_function(session: Any, cluster: str, caller: Caller = YOUR_IDENTITY) -> str | None:
    """The vendor function of ``cluster``, as its worker spec names it (a cluster of a fleet shares the fleet's);
    None for a stack from before vendors, which still issues certificates into Secrets Manager."""
    name = conventions.spec_parameter_name(cluster, "worker")
    try:
        response = call_aws(session.client("ssm", config=BOTO_CONFIG), "GetParameter", f"SSM parameter {name}", caller,
                            missing=ExitCode.CONFIG, Name=name, WithDecryption=True)
    except DaskfleetError as error:  # unreadable here (no spec, no permission): the stack-issued path says more
        log.debug("no vendor found in %s: %s", name, error)
        return None
    try:
        spec = json.loads(response["Parameter"]["Value"])
    except json.JSONDecodeError:
        spec = None
    function = spec.get("vendor_function") if isinstance(spec, dict) else None
    return function if isinstance(function, str) and function else None


def invoke_lambda(
    session: Any, function: str, request: CertificateRequest, caller: Caller = YOUR_IDENTITY, deadline: Deadline | None = None,
) -> VendedCertificate:
    """The vendor's answer through lambda:Invoke; its refusal as one error. With a ``deadline`` (a node's boot or
    renewal), a throttled or failing invocation is tried again until it runs out."""
    response = call_aws(session.client("lambda", config=BOTO_CONFIG), "Invoke", f"certificate vendor {function}", caller,
                        missing=ExitCode.CONFIG, deadline=deadline, FunctionName=function,
                        Payload=request.to_json().encode())
    return vended_from_answer(response["Payload"].read(), function, response.get("FunctionError"))


def vended_from_answer(payload: bytes | str, function: str, function_error: str | None = None) -> VendedCertificate:
    try:
        answer = json.loads(payload)
    except json.JSONDecodeError:
        answer = None
    if function_error or not isinstance(answer, dict):
        raise DaskfleetError(f"certificate vendor {function} failed ({function_error or 'unreadable answer'})",
                             ExitCode.CONFIG)
    if "error" in answer:
        raise DaskfleetError(str(answer["error"]), ExitCode.CONFIG)
    if not isinstance(answer.get("certificate"), str) or not isinstance(answer.get("ca"), str):
        raise DaskfleetError(f"certificate vendor {function}: answer without certificate and ca", ExitCode.CONFIG)
    return VendedCertificate(answer["certificate"], answer["ca"])


def request_certificate(
    session: Any, cluster: str, csr_pem: str, *, role: str = USER_REQUEST, ttl: float | None = None,
    caller: Caller = YOUR_IDENTITY, transport: Transport | None = None, function: str | None = None,
    deadline: Deadline | None = None,
) -> VendedCertificate:
    """A certificate from ``cluster``'s vendor (``function``, else the one its worker spec names) for the CSR,
    proving ``session``'s identity (through lambda:Invoke within ``deadline``, unless ``transport`` is given)."""
    request = CertificateRequest(cluster, csr_pem, role, make_proof(session, cluster, csr_pem), ttl)
    function = function or vendor_function(session, cluster, caller)
    if function is None:
        raise DaskfleetError(f"cluster {cluster!r} has no certificate vendor (its worker spec names no "
                             "vendor_function): its stack predates vendors; `pulumi up` with this version adds one",
                             ExitCode.CONFIG)
    if transport is not None:
        return transport(session, function, request)
    return invoke_lambda(session, function, request, caller, deadline)


def aws_issuer(cluster: str, session: Any, function: str, transport: Transport | None = None, role: str = USER_REQUEST):
    """An Issuer (daskfleet.client.login) for a user of AWS cluster ``cluster`` (``role`` ``metrics``: a metrics
    scraper's certificate), with their own AWS login."""
    _check_name("cluster", cluster, conventions.CLUSTER_NAME_PATTERN)

    def issue(csr_pem: str, ttl: float | None) -> VendedCertificate:
        return request_certificate(session, cluster, csr_pem, role=role, ttl=ttl, transport=transport, function=function)

    return issue


def cluster_issuer(cluster: str, *, region: str | None = None, profile: str | None = None, role: str = USER_REQUEST):
    """(Issuer for ``cluster`` with the user's own login, or None when its stack has no vendor yet)."""
    _check_name("cluster", cluster, conventions.CLUSTER_NAME_PATTERN)
    session = user_session(region, profile)
    function = vendor_function(session, cluster)
    return None if function is None else aws_issuer(cluster, session, function, role=role)
