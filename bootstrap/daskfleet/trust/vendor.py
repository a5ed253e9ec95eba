"""The certificate vendor: signs a cluster's short-lived certificates for callers who prove who they are.

A request is a CSR (only its public key counts, and its signature proves the caller holds the key) and a
proof of the caller's IAM identity: a signed ``sts:GetCallerIdentity`` request (method, URL, headers, body)
as Vault's AWS auth and aws-iam-authenticator take it. Two of its *signed* headers bind it to this request
(conventions.PROOF_CLUSTER_HEADER: the cluster; PROOF_CSR_HEADER: the CSR's SHA-256), so a proof cannot be
replayed for another key or cluster. The vendor checks the proof, then sends it to the STS endpoint of its
own configuration only (a proof naming another host is refused before anything is sent), reads the ARN STS
answers, maps it to one of the cluster's people (``users``: members and admins) or node roles, checks the
deny-list, and signs: a user's certificate names the user (CN), the cluster and the role (admin or member)
and lasts ``client_validity`` (12 h by default); a node's names its role and lasts ``node_validity`` (24 h); a
``metrics`` certificate (Prometheus: it reads the dashboard's ``/metrics`` only) goes to the principals the stack
lists as ``metricsScrapers`` and lasts ``client_validity``.

Everything here is pure but ``Vendor``, which is given how to reach STS, the CA, the policy and the deny-list
(the Lambda function on AWS, ``daskfleet.local.vendor`` in process for a local cluster, where the caller's OS
identity stands in for the proof).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from .denylist import DenyList
from .pki import IssuedCert, sign_public_key

#: The only body a proof may carry.
PROOF_ACTION = {"Action": ["GetCallerIdentity"], "Version": ["2011-06-15"]}
PROOF_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
#: How old a proof may be (STS's own window for a signed request).
PROOF_MAX_AGE = dt.timedelta(minutes=15)
#: What a request asks for: a person's certificate, a metrics scraper's, or one of the node roles'.
USER_REQUEST = "user"
REQUESTABLE = (USER_REQUEST, conventions.METRICS_ROLE, *conventions.NODE_ROLES)
#: Certificates start a little before they are signed (clock skew), at most this much, and at most a sixth of
#: their life (a 2-second certificate must not look two-thirds used when it arrives).
BACKDATE = dt.timedelta(minutes=5)
#: A principal that stands for a local OS user (``daskfleet login local``): ``local:<user name>``.
LOCAL_PRINCIPAL_PREFIX = "local:"

_ASSUMED_ROLE = re.compile(r"^arn:(?P<partition>aws[a-z-]*):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/(?P<session>.+)$")
_IAM_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):(?P<kind>user|role)/(?:.*/)?(?P<name>[^/]+)$")
_SIGNED_HEADERS = re.compile(r"SignedHeaders=([a-z0-9;-]+)")
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[a-z0-9-]+/(?P<service>[a-z0-9-]+)/aws4_request")


class VendorRefusal(DaskfleetError):
    """The vendor will not sign: one line saying why."""

    def __init__(self, message: str):
        super().__init__(f"certificate refused: {message}", ExitCode.CONFIG)


@dataclass(frozen=True)
class IdentityProof:
    """A signed sts:GetCallerIdentity request, as the caller built it (never sent by the caller)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: str

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "headers": dict(self.headers), "body": self.body}

    @classmethod
    def from_dict(cls, doc: Any) -> IdentityProof:
        if not isinstance(doc, dict):
            raise VendorRefusal("proof: expected {method, url, headers, body}")
        values = {key: doc.get(key) for key in ("method", "url", "headers", "body")}
        if not all(isinstance(values[key], str) for key in ("method", "url", "body")):
            raise VendorRefusal("proof: method, url and body must be strings")
        headers = values["headers"]
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise VendorRefusal("proof: headers must map names to strings")
        return cls(values["method"], values["url"], dict(headers), values["body"])


@dataclass(frozen=True)
class CertificateRequest:
    """What a caller sends the vendor: the cluster, a CSR, what it asks for and the proof of who it is."""

    cluster: str
    csr_pem: str
    #: ``user`` (a person's certificate: the vendor says which role), ``metrics`` or a node role (scheduler, worker).
    role: str = USER_REQUEST
    proof: IdentityProof | None = None
    #: A shorter life than the cluster's (``daskfleet login --ttl``); never a longer one.
    valid_seconds: float | None = None

    def to_json(self) -> str:
        doc = asdict(self)
        doc["proof"] = self.proof.to_dict() if self.proof else None
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> CertificateRequest:
        try:
            doc = json.loads(text) if isinstance(text, str) else dict(text)
        except json.JSONDecodeError as exc:
            raise VendorRefusal(f"request: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise VendorRefusal("request: expected a JSON object")
        unknown = sorted(set(doc) - {"cluster", "csr_pem", "role", "proof", "valid_seconds"})
        if unknown:
            raise VendorRefusal(f"request: unknown key(s) {', '.join(unknown)}")
        for key in ("cluster", "csr_pem"):
            if not isinstance(doc.get(key), str):
                raise VendorRefusal(f"request: {key} must be a string")
        role = doc.get("role", USER_REQUEST)
        if role not in REQUESTABLE:
            raise VendorRefusal(f"request: role {role!r} (accepted: {', '.join(REQUESTABLE)})")
        seconds = doc.get("valid_seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0):
            raise VendorRefusal(f"request: valid_seconds {seconds!r} must be a positive number")
        proof = IdentityProof.from_dict(doc["proof"]) if doc.get("proof") is not None else None
        return cls(doc["cluster"], doc["csr_pem"], role, proof, seconds)


@dataclass(frozen=True)
class VendorPolicy:
    """Whom the vendor signs for in one cluster, and for how long."""

    cluster: str
    #: user name -> the principal whose login stands for them (an IAM user or role ARN; ``local:<os user>``).
    users: Mapping[str, str]
    admins: frozenset[str] = frozenset()
    #: node role -> the IAM role ARN its instances run as.
    node_roles: Mapping[str, str] = field(default_factory=dict)
    #: The principals (IAM user or role ARNs) that may get a read-only ``metrics`` certificate (Prometheus).
    metrics_principals: tuple[str, ...] = ()
    client_validity: dt.timedelta = dt.timedelta(hours=conventions.CLIENT_CERT_VALIDITY_HOURS)
    node_validity: dt.timedelta = dt.timedelta(hours=conventions.NODE_CERT_VALIDITY_HOURS)
    #: Names the scheduler's certificate carries (its stable DNS name).
    scheduler_dns_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        most = dt.timedelta(hours=conventions.CLIENT_CERT_MAX_VALIDITY_HOURS)
        if not dt.timedelta(0) < self.client_validity <= most:
            raise DaskfleetError(f"client certificate validity {self.client_validity} must be more than 0 and at most "
                                 f"{conventions.CLIENT_CERT_MAX_VALIDITY_HOURS} h", ExitCode.CONFIG)
        unknown = sorted(set(self.admins) - set(self.users))
        if unknown:
            raise DaskfleetError(f"admins: {', '.join(unknown)} not among users", ExitCode.CONFIG)

    def to_json(self) -> str:
        return json.dumps({
            "cluster": self.cluster, "users": dict(self.users), "admins": sorted(self.admins),
            "node_roles": dict(self.node_roles), "metrics_principals": list(self.metrics_principals),
            "client_validity_seconds": self.client_validity.total_seconds(),
            "node_validity_seconds": self.node_validity.total_seconds(),
            "scheduler_dns_names": list(self.scheduler_dns_names),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VendorPolicy:
        try:
            doc = json.loads(text)
            return cls(
                cluster=doc["cluster"], users=dict(doc["users"]), admins=frozenset(doc.get("admins", ())),
                node_roles=dict(doc.get("node_roles", {})),
                metrics_principals=tuple(doc.get("metrics_principals", ())),
                client_validity=dt.timedelta(seconds=float(doc["client_validity_seconds"])),
                node_validity=dt.timedelta(seconds=float(doc["node_validity_seconds"])),
                scheduler_dns_names=tuple(doc.get("scheduler_dns_names", ())),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DaskfleetError(f"vendor policy: unreadable ({type(exc).__name__}: {exc})", ExitCode.CONFIG) from None


@dataclass(frozen=True)
class Grant:
    """What the vendor decided to sign."""

    cluster: str
    role: conventions.Role
    user: str | None
    not_before: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True)
class VendedCertificate:
    cert_pem: str
    ca_pem: str

    def to_dict(self) -> dict[str, str]:
        return {"certificate": self.cert_pem, "ca": self.ca_pem}


# --- pure decisions ------------------------------------------------------------------------------


def csr_sha256(csr_pem: str) -> str:
    """The hex SHA-256 of a CSR's DER: what a proof's PROOF_CSR_HEADER must say."""
    return hashlib.sha256(load_csr(csr_pem).public_bytes(Encoding.DER)).hexdigest()


def load_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    """The CSR, its signature checked (the caller holds the key); one refusal otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise VendorRefusal("csr_pem: not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise VendorRefusal("csr_pem: its signature does not match its key")
    return csr


def _headers(proof: IdentityProof) -> dict[str, str]:
    return {name.lower(): value for name, value in proof.headers.items()}


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.netloc or "").lower()


def check_proof(proof: IdentityProof, *, cluster: str, csr_hash: str, sts_endpoint: str, now: dt.datetime) -> None:
    """Refuse a proof that is not a fresh signed GetCallerIdentity, for ``sts_endpoint``, binding ``cluster`` and
    ``csr_hash`` in its signed headers. Nothing is sent anywhere."""
    scheme, host = _origin(proof.url)
    if (scheme, host) != _origin(sts_endpoint) or urlsplit(proof.url).path not in ("", "/"):
        raise VendorRefusal(f"the proof is signed for {proof.url}, not this vendor's STS endpoint {sts_endpoint}")
    headers = _headers(proof)
    if "host" in headers and headers["host"].lower() != host:
        raise VendorRefusal(f"the proof's Host header {headers['host']!r} is not this vendor's STS endpoint {sts_endpoint}")
    if proof.method.upper() != "POST" or parse_qs(proof.body, keep_blank_values=True) != PROOF_ACTION:
        raise VendorRefusal("the proof is not a POST of sts:GetCallerIdentity")
    authorization = headers.get("authorization", "")
    scope = _CREDENTIAL_SCOPE.search(authorization)
    signed = _SIGNED_HEADERS.search(authorization)
    if not authorization.startswith("AWS4-HMAC-SHA256 ") or scope is None or signed is None or scope["service"] != "sts":
        raise VendorRefusal("the proof carries no SigV4 signature for sts")
    signed_names = set(signed.group(1).split(";"))
    for name, expected in ((conventions.PROOF_CLUSTER_HEADER, cluster), (conventions.PROOF_CSR_HEADER, csr_hash)):
        if name.lower() not in signed_names:
            raise VendorRefusal(f"the proof does not sign the {name} header")
        if headers.get(name.lower()) != expected:
            what = "cluster" if name == conventions.PROOF_CLUSTER_HEADER else "CSR (its SHA-256)"
            raise VendorRefusal(f"the proof was made for another {what}: {name} is {headers.get(name.lower())!r}")
    try:
        signed_at = dt.datetime.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise VendorRefusal("the proof carries no X-Amz-Date") from None
    if abs(now - signed_at) > PROOF_MAX_AGE:
        raise VendorRefusal(f"the proof was signed at {signed_at:%Y-%m-%d %H:%M:%S} UTC, more than "
                            f"{PROOF_MAX_AGE.total_seconds() / 60:g} minutes from now")


def arn_from_sts_response(status: int, text: str) -> str:
    """The caller ARN of STS's GetCallerIdentity answer; a refusal when STS did not accept the proof."""
    if status != 200:
        code = re.search(r"<Code>([^<]+)</Code>", text)
        raise VendorRefusal(f"STS did not accept the proof ({status} {code.group(1) if code else 'error'})")
    try:
        arn = ET.fromstring(text).find(".//{*}Arn")
    except ET.ParseError:
        arn = None
    if arn is None or not arn.text:
        raise VendorRefusal("STS answered without a caller ARN")
    return arn.text.strip()


def principal_of(arn: str) -> str:
    """The IAM principal an ARN acts for: an assumed role's session maps back to ``arn:...:iam::ACCOUNT:role/NAME``;
    an IAM user or role ARN loses its path (STS names roles without it)."""
    match = _ASSUMED_ROLE.match(arn)
    if match:
        return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"
    match = _IAM_ARN.match(arn)
    if match:
        return f"arn:{match['partition']}:iam::{match['account']}:{match['kind']}/{match['name']}"
    return arn


def _session_user(arn: str) -> str:
    """The user name an assumed-role session or IAM user names (e-mail cut at @), to choose among shared principals."""
    return arn.rsplit("/", 1)[-1].lower().split("@", 1)[0]


def validity_window(life: dt.timedelta, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter) for a certificate of ``life`` signed ``now``: backdated a little for clock skew, and
    ending on the whole second at or before ``now + life`` (X.509 times have no fractions), never later."""
    start = now - min(BACKDATE, life / 6)
    return start.replace(microsecond=0), (now + life).replace(microsecond=0)


def decide(
    policy: VendorPolicy,
    arn: str,
    wanted: str,
    deny_list: DenyList,
    now: dt.datetime,
    valid_seconds: float | None = None,
) -> Grant:
    """Whom ``arn`` is in ``policy``'s cluster and what to sign for it, or one refusal."""
    principal = principal_of(arn)
    node_roles = [role for role, role_arn in policy.node_roles.items() if principal_of(role_arn) == principal]
    users = sorted(user for user, user_arn in policy.users.items() if principal_of(user_arn) == principal)
    cluster = policy.cluster
    if len(users) > 1:  # several people share one role (an SSO permission set): the session names the person
        shared, users = users, [user for user in users if user == _session_user(arn)]
        if not users and wanted == USER_REQUEST:
            raise VendorRefusal(f"{arn} stands for several users of {cluster!r} ({', '.join(shared)}) and its session "
                                "name picks none")
    if wanted == conventions.METRICS_ROLE:
        if principal not in {principal_of(scraper) for scraper in policy.metrics_principals}:
            raise VendorRefusal(f"{arn} may not get a {wanted} certificate of cluster {cluster!r}: the stack's "
                                "metricsScrapers do not list it")
        user, role, life = None, wanted, policy.client_validity  # type: ignore[assignment]
    elif wanted == USER_REQUEST:
        if not users:
            what = (f"the {node_roles[0]} nodes' role" if node_roles else "a metrics scraper"
                    if principal in {principal_of(scraper) for scraper in policy.metrics_principals} else "no user")
            raise VendorRefusal(f"{arn} is {what} of cluster {cluster!r}; only its users (members and admins) get "
                                "a user certificate")
        user = users[0]
        entry = deny_list.denies(user)
        if entry is not None:
            reason = f": {entry.reason}" if entry.reason else ""
            raise VendorRefusal(f"user {user!r} of cluster {cluster!r} is revoked (by {entry.by or 'an operator'} at "
                                f"{dt.datetime.fromtimestamp(entry.revoked_at, dt.timezone.utc):%Y-%m-%d %H:%M:%S} "
                                f"UTC{reason})")
        role: conventions.Role = conventions.ADMIN_ROLE if user in policy.admins else conventions.MEMBER_ROLE
        life = policy.client_validity
    else:
        if wanted not in node_roles:
            who = f"user {users[0]!r}" if users else arn
            raise VendorRefusal(f"{who} may not get a {wanted} certificate of cluster {cluster!r}: node certificates go "
                                f"to the {wanted} nodes' IAM role only")
        user, role, life = None, wanted, policy.node_validity  # type: ignore[assignment]
    if valid_seconds is not None:
        life = min(life, dt.timedelta(seconds=valid_seconds))
    not_before, not_after = validity_window(life, now)
    return Grant(cluster, role, user, not_before, not_after)


def sign(ca: IssuedCert, csr_pem: str, grant: Grant, policy: VendorPolicy) -> str:
    """The certificate ``grant`` decided, for the CSR's key."""
    public_key = load_csr(csr_pem).public_key()
    names = policy.scheduler_dns_names if grant.role == "scheduler" else ()
    ips = tuple(name for name in names if _is_ip(name))  # a scraper or browser checks the address it dialled
    return sign_public_key(ca, public_key, grant.cluster, grant.role, user=grant.user,
                           dns_names=tuple(name for name in names if name not in ips), ip_addresses=ips,
                           not_before=grant.not_before, not_after=grant.not_after)


def _is_ip(name: str) -> bool:
    import ipaddress  # noqa: PLC0415

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# --- the vendor: the decisions, bound to STS, a CA, a policy and a deny-list ---------------------

#: Sends a proof's headers and body to a URL (the vendor's own STS endpoint): (HTTP status, body text).
StsSender = Callable[[str, Mapping[str, str], str], tuple[int, str]]


@dataclass
class Vendor:
    """Signs certificates for the clusters it knows (``policies``), with their CAs (``ca_of``)."""

    sts_endpoint: str
    send: StsSender
    policy_of: Callable[[str], VendorPolicy | None]
    ca_of: Callable[[str], IssuedCert]
    deny_list_of: Callable[[str], DenyList]
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)

    def _policy(self, cluster: str) -> VendorPolicy:
        if not isinstance(cluster, str) or not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, cluster):
            raise VendorRefusal(f"cluster: {cluster!r} does not match {conventions.CLUSTER_NAME_PATTERN}")
        policy = self.policy_of(cluster)
        if policy is None:
            raise VendorRefusal(f"this vendor signs for no cluster {cluster!r}")
        return policy

    def issue(self, request: CertificateRequest) -> VendedCertificate:
        """Check the proof, ask STS who made it, decide and sign; a VendorRefusal otherwise."""
        policy = self._policy(request.cluster)
        if request.proof is None:
            raise VendorRefusal("the request carries no proof of identity (a signed sts:GetCallerIdentity)")
        now = self.clock()
        check_proof(request.proof, cluster=request.cluster, csr_hash=csr_sha256(request.csr_pem),
                    sts_endpoint=self.sts_endpoint, now=now)
        status, text = self.send(self.sts_endpoint, request.proof.headers, request.proof.body)
        arn = arn_from_sts_response(status, text)
        return self._sign(policy, arn, request, now)

    def issue_to(self, principal: str, request: CertificateRequest) -> VendedCertificate:
        """Sign for a caller whose identity the process itself vouches for (a local cluster: the OS user)."""
        return self._sign(self._policy(request.cluster), principal, request, self.clock())

    def _sign(self, policy: VendorPolicy, arn: str, request: CertificateRequest, now: dt.datetime) -> VendedCertificate:
        grant = decide(policy, arn, request.role, self.deny_list_of(policy.cluster), now, request.valid_seconds)
        ca = self.ca_of(policy.cluster)
        return VendedCertificate(sign(ca, request.csr_pem, grant, policy), ca.cert_pem)


# --- renewal timing --------------------------------------------------------------------------------


def renew_at(cert_pem: str, fraction: float) -> dt.datetime:
    """When a holder of ``cert_pem`` renews it: ``fraction`` of its life after notBefore."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * fraction


def seconds_until_renewal(cert_pem: str, fraction: float, now: dt.datetime | None = None) -> float:
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (renew_at(cert_pem, fraction) - now).total_seconds())


def needs_renewal(cert_pem: str | None, fraction: float, now: dt.datetime | None = None) -> bool:
    """No certificate, or less than ``1 - fraction`` of its life left."""
    return cert_pem is None or seconds_until_renewal(cert_pem, fraction, now) <= 0.0
