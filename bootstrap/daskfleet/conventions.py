"""Names and encodings shared by the Pulumi program, the node agent and the local launcher.

Everything here is written exactly once. The infrastructure code imports this module to
name secrets, parameters and tags and to encode certificate roles; the node agent imports
it to find and check the same things. A renamed secret breaks the end-to-end test, not a
cluster in production.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# --- roles and certificate identity -------------------------------------------------------

Role = Literal["scheduler", "worker", "client", "admin", "metrics"]
#: A member of a cluster holds a ``client`` certificate; an admin of it an ``admin`` one (a member who may also
#: administer the cluster: restart it, run code on it, ...); ``metrics`` is a read-only scraper's (Prometheus).
MEMBER_ROLE: Role = "client"
ADMIN_ROLE: Role = "admin"
METRICS_ROLE: Role = "metrics"
ROLES: tuple[Role, ...] = ("scheduler", "worker", MEMBER_ROLE, ADMIN_ROLE, METRICS_ROLE)
NODE_ROLES: tuple[Role, ...] = ("scheduler", "worker")
#: The roles of people: their certificates name the user (CN) as well as the role.
USER_ROLES: tuple[Role, ...] = (MEMBER_ROLE, ADMIN_ROLE)
#: The event topic on which a scheduler tells a subscribed client why it closes it (revoked, certificate expired):
#: ``daskfleet.connect``'s client keeps the reason and raises it on any later use.
CLIENT_CLOSED_TOPIC = "daskfleet-client-closed"

#: Certificates name their role in a SPIFFE-style SAN URI: spiffe://<cluster>/role/<role>.
#: pulumi-tls can write SAN URIs (``uris=``) but not custom extended-key-usage OIDs, so the
#: role lives here rather than in an EKU.
ROLE_URI_SCHEME = "spiffe"
_ROLE_URI = re.compile(r"^spiffe://(?P<cluster>[a-z0-9-]+)/role/(?P<role>[a-z]+)$")

#: Cluster names become DNS labels, S3 bucket name parts, IAM names and SPIFFE trust domains.
CLUSTER_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$"
#: Who is charged for idle worker time that no connected client kept up; no user may be called so.
IDLE_USER = "idle"
#: Task prefixes the ledger names itself. Parenthesised: distributed's ``key_split`` does not make them from
#: a key, so they never stand for a real function. ``(other)``: a user's prefixes beyond the per-user bound;
#: ``(idle)``: idle worker time charged to a user (no task ran); ``(not recorded)``: usage from records
#: written without per-prefix figures (older records, or prefix accounting turned off).
OTHER_PREFIX = "(other)"
IDLE_PREFIX = "(idle)"
UNRECORDED_PREFIX = "(not recorded)"
#: How many task prefixes of each user the ledger keeps apart by default, and the most a policy may ask for
#: (with every user at the bound, records and metrics stay small).
DEFAULT_PREFIXES_PER_USER = 50
MAX_PREFIXES_PER_USER = 500
#: Users become certificate common names, secret names and audit identities.
USER_NAME_PATTERN = r"^[a-z][a-z0-9._-]{0,62}$"

#: Every certificate is usable both ways: Dask peers connect in both directions.
CERT_ALLOWED_USES: tuple[str, ...] = ("digital_signature", "key_encipherment", "server_auth", "client_auth")
CA_ALLOWED_USES: tuple[str, ...] = ("cert_signing", "crl_signing", "digital_signature")
#: Validity, in hours: CA ten years. Node and user certificates are short-lived and come from the cluster's
#: certificate vendor (``daskfleet.trust.vendor``): a user's for 12 h (a stack may ask up to 24 h), a node's 24 h.
CA_VALIDITY_HOURS = 24 * 365 * 10
CERT_VALIDITY_HOURS = 24 * 365
CLIENT_CERT_VALIDITY_HOURS = 12
CLIENT_CERT_MAX_VALIDITY_HOURS = 24
NODE_CERT_VALIDITY_HOURS = 24
#: A holder renews its certificate (same key pair) once this fraction of its life has passed, i.e. when less than
#: a third of it is left (step-ca's rule).
RENEW_CLIENT_AT_FRACTION = 2 / 3
RENEW_NODE_AT_FRACTION = 2 / 3
#: Headers of a presigned ``sts:GetCallerIdentity`` that bind an identity proof to one certificate request (as
#: Vault binds X-Vault-AWS-IAM-Server-ID): the cluster asked for and the SHA-256 (hex) of the CSR's DER. Both must
#: be among the request's signed headers.
PROOF_CLUSTER_HEADER = "X-Daskfleet-Cluster"
PROOF_CSR_HEADER = "X-Daskfleet-Csr-Sha256"
CERT_ORGANIZATION = "daskfleet"


def role_uri(cluster: str, role: Role) -> str:
    """The SAN URI that names ``role`` within ``cluster``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return f"{ROLE_URI_SCHEME}://{cluster}/role/{role}"


def parse_role_uri(uri: str) -> tuple[str, str] | None:
    """(cluster, role) from a role URI, or None when ``uri`` is not one."""
    match = _ROLE_URI.match(uri)
    if match is None or match["role"] not in ROLES:
        return None
    return match["cluster"], match["role"]


def common_name(cluster: str, role: Role, user: str | None = None) -> str:
    """The certificate subject CN: the user for members and admins, ``<role>.<cluster>`` for nodes and scrapers."""
    if role in USER_ROLES:
        if not user:
            raise ValueError(f"a {role} certificate needs a user identity")
        return user
    return f"{role}.{cluster}"


# --- ports ---------------------------------------------------------------------------------

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
#: One worker process per instance listens here (no nanny: systemd supervises it).
WORKER_PORT = 8788
#: AWS APIs: the VPC's interface endpoints, S3, and the internet through a NAT gateway.
HTTPS_PORT = 443

# --- client version policy -----------------------------------------------------------------

#: What the scheduler does with a client whose core package versions differ from the cluster's:
#: refuse its connection, or let it in and log (and audit) the difference.
ClientVersionPolicy = Literal["refuse", "warn"]

#: Packages whose versions a client and the cluster must share (distributed's names for them); a change
#: to one of them restarts the scheduler when a new environment is published.
CORE_PACKAGES: tuple[str, ...] = (
    "python", "dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "numpy", "pandas",
)
#: Compared only when both sides have them.
OPTIONAL_CORE_PACKAGES = frozenset({"numpy", "pandas"})
#: conda-forge's names for core packages where they differ from distributed's.
CORE_CONDA_NAMES = {"msgpack": "msgpack-python"}

# --- tags ----------------------------------------------------------------------------------

TAG_CLUSTER = "daskfleet:cluster"
TAG_ROLE = "daskfleet:role"
TAG_ENV_FINGERPRINT = "daskfleet:env-fingerprint"
#: An image's environment name (envs/<name>), platform and the commit it was built from.
TAG_ENV_NAME = "daskfleet:env"
TAG_ENV_PLATFORM = "daskfleet:platform"
TAG_GIT_COMMIT = "daskfleet:git-commit"
TAG_TEAM = "team"
TAG_OWNER = "owner"
TAG_COST_CENTER = "cost-center"
TAG_EXPIRES = "expires"
#: On a client certificate's secret: the user it is issued to (``daskfleet clusters`` finds the caller's clusters by it).
TAG_USER = "daskfleet:user"
COST_ALLOCATION_TAGS: tuple[str, ...] = (TAG_CLUSTER, TAG_TEAM, TAG_OWNER, TAG_COST_CENTER)

# --- resource names ------------------------------------------------------------------------

NAME_PREFIX = "daskfleet"


def resource_name(cluster: str, *parts: str) -> str:
    """``daskfleet-<cluster>[-<part>...]``: how a cluster's AWS resources and Name tags are named."""
    return "-".join((NAME_PREFIX, cluster, *parts))


def _check_node_role(role: str) -> None:
    if role not in NODE_ROLES:
        raise ValueError(f"unknown node role {role!r}; expected one of {', '.join(NODE_ROLES)}")


def iam_role_name(cluster: str, role: Role) -> str:
    """The IAM role (and instance profile) of a cluster's schedulers or workers; at most 60 characters."""
    _check_node_role(role)
    return resource_name(cluster, role)


def node_group_name(cluster: str, role: Role) -> str:
    """The auto scaling group running a cluster's schedulers or workers; the scheduler scales its workers by it."""
    _check_node_role(role)
    return resource_name(cluster, role)


#: The scheduler handler an operator's ``daskfleet status`` asks for the scaler's idle state. The scaler
#: registers it on the scheduler (before the guards are installed, so clients may call it) and answers a
#: dict: ``state`` (e.g. "active", "idle", "asleep") plus whatever detail it keeps (``idle_since``...).
SCALING_STATE_HANDLER = "daskfleet_scaling_state"
#: The scheduler operation that answers the usage records (``daskfleet usage``).
USAGE_OP = "daskfleet_usage"
#: The scheduler operation that answers a task prefix's merged profile and its window (``daskfleet profile``).
PROFILE_OP = "daskfleet_profile"
#: The scheduler operation that tells what each worker runs and how far a roll onto a published environment got.
ENV_ROLL_HANDLER = "daskfleet_env_roll"
#: The worker operation its scheduler calls to make it switch to the published environment.
ENV_SWITCH_OP = "daskfleet_switch_environment"
#: The scheduler operation by which whoever ends a worker for exceeding its memory limit (the local supervisor,
#: or the agent's memory watcher on an instance), speaking with that worker's certificate, tells the scheduler
#: first: it audits and counts the kill, and a KilledWorker for the worker's task names the limit.
MEMORY_KILL_OP = "daskfleet_worker_memory_exceeded"
#: The scheduler operation by which a client, on its own connection, hands the scheduler the certificate it renewed
#: (same key pair), so the connection stays valid past the first certificate's notAfter.
RENEWED_OP = "daskfleet_renewed"
#: Every scheduler operation daskfleet adds to distributed's (the gatekeeper classifies each, a test holds them together).
DASKFLEET_SCHEDULER_OPS: tuple[str, ...] = (
    SCALING_STATE_HANDLER, USAGE_OP, PROFILE_OP, ENV_ROLL_HANDLER, MEMORY_KILL_OP, RENEWED_OP,
)

#: The worker group's TERMINATING lifecycle hook; the scheduler completes it once a worker has drained.
DRAIN_HOOK_NAME = f"{NAME_PREFIX}-drain"

#: Stream operations the scheduler sends a worker just before it closes it, so the worker's agent tells a
#: ``client.restart()`` (restart at once) and a retirement (stay down) from a removal it did not ask for.
RESTART_WORKER_OP = "daskfleet-restart"
RETIRE_WORKER_OP = "daskfleet-retire"

#: In the cluster's log group: one stream per node that stopped for good (configuration-class exit, or its
#: agent gave up), ``failures/<instance id>``, with one JSON line per stop; the scheduler's scaler and
#: ``daskfleet status`` read them to see launch template versions whose instances keep failing.
FAILURE_STREAM_PREFIX = "failures/"


def scheduler_dns_function_name(cluster: str) -> str:
    """The Lambda function keeping the scheduler's DNS record; it also names the function's role, rule and
    (under /aws/lambda/) log group. At most 64 characters, the limit of all four."""
    return resource_name(cluster, "scheduler-dns")


def vendor_function_name(fleet: str) -> str:
    """The Lambda function that signs every certificate of a stack's clusters (its certificate vendor), named after
    the stack's ``cluster``; it also names the function's role and (under /aws/lambda/) log group."""
    return resource_name(fleet, "cert-vendor")


def metrics_scraper_policy_name(cluster: str) -> str:
    """The managed policy the stack's ``metricsScrapers`` get: ask the cluster's certificate vendor, nothing else."""
    return resource_name(cluster, "metrics-scraper")


def member_policy_name(cluster: str) -> str:
    """The managed policy a cluster's members' own logins get: wake it, read its published environment and
    specs, read and write its data prefix, read its usage records."""
    return resource_name(cluster, "member")


def node_role_name_pattern(role: Role) -> str:
    """An IAM ARN-name pattern matching the ``role`` nodes' role of every cluster (for policies on shared resources)."""
    _check_node_role(role)
    return resource_name("*", role)


def budget_name(cluster: str) -> str:
    return resource_name(cluster)


def budget_action_role_name(cluster: str) -> str:
    """The role AWS Budgets assumes to apply the budget-stop backstop; at most 64 characters."""
    return resource_name(cluster, "budget-action")


def budget_stop_policy_name(cluster: str) -> str:
    """The managed policy the budget action attaches to the scheduler's role: no scaling the workers up."""
    return resource_name(cluster, "budget-stop")


def kms_alias(cluster: str) -> str:
    """The alias of the fleet's key, named after the stack's ``cluster``: it encrypts the bucket and every cluster's
    secrets (node specs carry its ARN, ``kms_key``)."""
    return f"alias/{NAME_PREFIX}/{cluster}"


def bucket_name_prefix(cluster: str) -> str:
    """What the fleet bucket's name starts with (the stack's ``cluster``); Pulumi appends a random suffix (7 hex
    digits). Node specs carry the name (``bucket``); each cluster's data lives under ``cluster_data_prefix``."""
    return resource_name(cluster) + "-"


# --- secret and parameter names ------------------------------------------------------------


#: In a fleet's shared bucket, each cluster's own data lives under ``clusters/<cluster>/``; its node roles and
#: its members reach that prefix (and what the cluster's ``data`` entry declares), nothing else of the bucket.
CLUSTER_DATA_PREFIX = "clusters/"


def cluster_data_prefix(cluster: str) -> str:
    """``clusters/<cluster>/``: the bucket prefix holding one cluster's data."""
    return f"{CLUSTER_DATA_PREFIX}{cluster}/"


def spec_parameter_name(cluster: str, role: Role) -> str:
    """SSM Parameter Store name holding a node role's spec (JSON)."""
    return f"/{NAME_PREFIX}/{cluster}/spec/{role}"


def ca_secret_name(cluster: str) -> str:
    """Secrets Manager name holding a cluster's CA (JSON: cert, key): only the certificate vendor reads it (and
    break-glass operators)."""
    return f"{NAME_PREFIX}/{cluster}/ca"


def vendor_policy_parameter_name(cluster: str) -> str:
    """SSM parameter holding whom the certificate vendor signs for in a cluster (trust.vendor.VendorPolicy, JSON)."""
    return f"/{NAME_PREFIX}/{cluster}/vendor/policy"


def node_tls_secret_name(cluster: str, role: Role) -> str:
    """Secrets Manager name holding a node role's TLS material (JSON: ca, cert, key)."""
    return f"{NAME_PREFIX}/{cluster}/tls/{role}"


def client_tls_secret_name(cluster: str, user: str) -> str:
    """Secrets Manager name holding one user's client TLS material."""
    return f"{NAME_PREFIX}/{cluster}/clients/{user}"


def secret_name_prefix(cluster: str) -> str:
    """Every secret of a cluster starts with this; IAM policies are scoped to it."""
    return f"{NAME_PREFIX}/{cluster}/"


def parameter_path_prefix(cluster: str) -> str:
    """Every parameter of a cluster starts with this; IAM policies are scoped to it."""
    return f"/{NAME_PREFIX}/{cluster}/"


def deny_list_parameter_name(cluster: str) -> str:
    """SSM parameter holding the cluster's deny-list (JSON, ``daskfleet.trust.denylist``); its versions are the history."""
    return f"/{NAME_PREFIX}/{cluster}/deny-list"


#: How often every scheduler reads its cluster's deny-list (at least once a minute), and how often it closes the
#: connections of peers whose certificate has expired (TLS checks a certificate only at the handshake).
DENY_LIST_POLL_SECONDS = 30.0
EXPIRY_SWEEP_SECONDS = 15.0
#: A local cluster's deny-list file, in its state directory.
DENY_LIST_FILE = "deny-list.json"


def published_env_parameter_name(cluster: str) -> str:
    """SSM parameter pointing the cluster at its published environment (JSON); its versions are the history."""
    return f"/{NAME_PREFIX}/{cluster}/env/published"


#: In the cluster bucket, everything a published environment needs lives under this prefix:
#: package archives by their hash, locks by their sha256, daskfleet's wheels by their sha256.
ENV_OBJECT_PREFIX = "envs/"


def package_object_key(digest: str) -> str:
    """A package archive's object: ``envs/packages/<sha256>`` (``md5-<hex>`` for md5-only lock entries)."""
    algorithm, _, value = digest.partition(":")
    return f"{ENV_OBJECT_PREFIX}packages/{value if algorithm == 'sha256' else f'{algorithm}-{value}'}"


def lock_object_key(lock_sha256: str) -> str:
    return f"{ENV_OBJECT_PREFIX}locks/{lock_sha256}.yml"


def wheel_object_key(wheel_sha256: str, file_name: str) -> str:
    return f"{ENV_OBJECT_PREFIX}wheels/{wheel_sha256}/{file_name}"


def image_lock_object_key(fingerprint: str) -> str:
    """The lock an image was built from, so publishing uploads only what the images lack."""
    return f"{ENV_OBJECT_PREFIX}images/{short_fingerprint(fingerprint)}.yml"


def log_group_name(cluster: str) -> str:
    """A cluster's own log group: its usage records, audit trail, failure lines and node logs. Each cluster of a
    fleet has its own, since CloudWatch Logs cannot scope reads to streams within one."""
    return f"/{NAME_PREFIX}/{cluster}"


def scheduler_dns_name(cluster: str, zone: str) -> str:
    """The stable private DNS name of a cluster's scheduler."""
    return f"scheduler.{cluster}.{zone}"


#: Keys of the JSON document stored in a TLS secret.
TLS_SECRET_KEYS: tuple[str, ...] = ("ca", "cert", "key")

# --- per-user state ---------------------------------------------------------------------------

#: Where daskfleet keeps a user's state (local clusters, the package cache): this variable, else ~/.daskfleet.
HOME_ENV = "DASKFLEET_HOME"


def daskfleet_home() -> Path:
    """``$DASKFLEET_HOME`` or ``~/.daskfleet``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".daskfleet")


# --- environments ----------------------------------------------------------------------------

#: conda platforms every environment is locked for: the nodes' first, then the laptops of clients.
NODE_PLATFORMS: tuple[str, ...] = ("linux-64", "linux-aarch64")
CLIENT_PLATFORMS: tuple[str, ...] = ("osx-arm64", "osx-64", "win-64")
ENV_PLATFORMS: tuple[str, ...] = NODE_PLATFORMS + CLIENT_PLATFORMS
#: Where an image (and, later, a node following a published environment) installs environments:
#: one prefix per fingerprint, ``/opt/daskfleet/envs/<short fingerprint>``, and the link to the one in use.
NODE_ENVS_DIR = "/opt/daskfleet/envs"
NODE_ENV_LINK = "/opt/daskfleet/env"
#: The package cache an image keeps for later delta installs.
NODE_PACKAGE_CACHE = "/opt/daskfleet/pkgs"
#: What the node's environment step (``daskfleet env follow``, as root before the agent starts) last did:
#: JSON, readable by the agent, which reports a failed install to the scheduler.
NODE_ENV_STATUS_FILE = "/opt/daskfleet/env-status.json"
#: Tests only: a directory standing in for the node's root, under which /opt/daskfleet lives.
NODE_ROOT_ENV = "DASKFLEET_NODE_ROOT"
#: In a repository: ``envs/<name>/environment.yml`` is the spec, ``envs/<name>/conda-lock.yml`` its lock.
ENV_SPEC_FILE = "environment.yml"
ENV_LOCK_FILE = "conda-lock.yml"
#: daskfleet itself is on no conda channel: it is installed from its wheel after the lock, and its
#: version (not its hash, which changes with every build) counts in the fingerprint.
DASKFLEET_DISTRIBUTION = "daskfleet"


def node_path(path: str) -> Path:
    """A node's file path, under $DASKFLEET_NODE_ROOT when the tests set it."""
    root = os.environ.get(NODE_ROOT_ENV)
    return Path(root.rstrip("/") + path) if root else Path(path)


def conda_platform(system: str | None = None, machine: str | None = None) -> str:
    """This machine's conda platform (linux-64, linux-aarch64, osx-arm64, osx-64, win-64)."""
    import platform as host  # noqa: PLC0415  (only here)

    system = (system or host.system()).lower()
    machine = (machine or host.machine()).lower()
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "arm64"}.get(machine, machine)
    if system == "linux":
        return f"linux-{arch}"
    if system == "darwin":
        return f"osx-{'arm64' if arch in ('arm64', 'aarch64') else '64'}"
    if system == "windows":
        return f"win-{'arm64' if arch in ('arm64', 'aarch64') else '64'}"
    return f"{system}-{arch}"


def node_env_prefix(fingerprint: str) -> str:
    """Where a node keeps the environment with ``fingerprint``."""
    return f"{NODE_ENVS_DIR}/{short_fingerprint(fingerprint)}"


# --- the environment fingerprint -----------------------------------------------------------

FINGERPRINT_PREFIX = "sha256:"
FINGERPRINT_SHORT_LENGTH = 16


@dataclass(frozen=True, order=True)
class PackageRecord:
    """One resolved package, as a lock file and an installed environment both state it.

    ``manager`` is ``conda`` or ``pip`` (``interpreter`` for a virtual environment's Python);
    conda records carry their build string, which distinguishes e.g. two builds of numpy
    against different BLAS libraries. ``hash`` is the package archive's ``sha256:<hex>``
    (``md5:<hex>`` where only that is known), empty where nothing records one.
    """

    manager: str
    name: str
    version: str
    build: str = ""
    hash: str = ""

    def canonical(self) -> str:
        name = normalize_package_name(self.name) if self.manager == "pip" else self.name.lower()
        line = f"{self.manager}:{name}=={self.version}"
        if self.build:
            line += f"={self.build}"
        return f"{line}#{self.hash}" if self.hash else line


def package_hash(sha256: str | None, md5: str | None) -> str:
    """The hash a PackageRecord carries: sha256 where known, else md5, else nothing."""
    if sha256:
        return f"sha256:{sha256.lower()}"
    return f"md5:{md5.lower()}" if md5 else ""


def normalize_package_name(name: str) -> str:
    """PEP 503 normalization for pip names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def environment_fingerprint(packages: Iterable[PackageRecord]) -> str:
    """A stable identity for a set of resolved packages, independent of their order.

    The same environment described by its conda-lock file for one platform and by the
    prefix installed from it (its conda-meta records and installed distributions) gives
    the same value; URLs, channels, timestamps and the lock's input hash do not count.
    Images are named by its short form.
    """
    lines = sorted({record.canonical() for record in packages})
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return FINGERPRINT_PREFIX + digest


def short_fingerprint(fingerprint: str) -> str:
    """The short form used in image names, tags and node prefixes."""
    return fingerprint.removeprefix(FINGERPRINT_PREFIX)[:FINGERPRINT_SHORT_LENGTH]
