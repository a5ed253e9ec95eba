"""Where a node gets its spec and TLS material: one narrow interface, one implementation per place.

``DirectorySource`` reads a local directory (the embedded default and tests);
``daskfleet.aws.source.AwsSource`` reads instance metadata, SSM Parameter Store and
Secrets Manager through the instance role. The caller picks the implementation
(``daskfleet.cli.make_source``), so this module knows none but its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import DaskfleetError, ExitCode
from ..environments.published import PublishedEnvironment, parse_published
from ..trust.tls import TlsMaterial
from ..usage.policy import LOCAL_INSTANCE_TYPE
from .spec import load_spec_document
from .supervision import Outcome

if TYPE_CHECKING:
    from .renewal import NodeIssuer
    from .spec import NodeSpec

SPEC_FILE = "spec.json"
TLS_DIR = "tls"
CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
#: Written into its runtime directory by a scheduler node once it listens: {"address", "dashboard", "pid"}.
SCHEDULER_INFO_FILE = "scheduler.json"
#: In a node directory: the environment published to the local cluster (``daskfleet local env publish``).
PUBLISHED_FILE = "published-env.json"


class AuditForwarder(Protocol):
    """Receives each audit line as it is written; ``close`` sends what is still waiting."""

    def __call__(self, line: str) -> None: ...

    def close(self) -> None: ...


class NodeSource(Protocol):
    """What the node agent needs from the place it runs in."""

    def describe(self) -> str:
        """A short human name for messages, e.g. ``directory /srv/node``."""

    def fetch_spec(self, role: str) -> Mapping[str, Any]:
        """The raw node spec; the agent validates it. Raises DaskfleetError(SPEC_INVALID/SOURCE_UNAVAILABLE)."""

    def fetch_tls(self, role: str) -> TlsMaterial:
        """This node's CA, certificate and key. Raises DaskfleetError(CERT_UNREADABLE/SOURCE_UNAVAILABLE)."""

    def certificate_issuer(self, role: str, spec: NodeSpec) -> NodeIssuer | None:
        """How this node gets its short-lived certificate from the cluster's vendor (and renews it), or None when
        the source names no vendor: ``fetch_tls``'s material is then all it has."""

    def leaving(self) -> str | None:
        """Why the platform is taking this node away (so a worker drains first), or None."""

    def left(self) -> None:
        """Tell the platform the node has drained and may go."""

    def stopped(self, role: str, outcome: Outcome) -> None:
        """The node stops for good (configuration-class failure, or gave up): tell the platform, never raise."""

    def audit_forwarder(self) -> AuditForwarder | None:
        """Where the scheduler's audit lines go besides its local file (e.g. the cluster's log group)."""

    def instance_kind(self) -> tuple[str, str]:
        """This node's (instance type, purchase option: on-demand or spot), which prices its time."""

    def usage_forwarder(self) -> AuditForwarder | None:
        """Where the scheduler's usage records go besides its local file (e.g. the cluster's log group)."""

    def usage_history(self, since: float) -> list[str] | None:
        """Usage record lines stored since ``since`` (epoch seconds); None when the local file is the store."""

    def published_environment(self) -> PublishedEnvironment | None:
        """The environment published to the cluster (daskfleet env publish), or None when none was."""

    def deny_list(self) -> str | None:
        """The cluster's deny-list document (``daskfleet.trust.denylist``), None when none is stored; a scheduler
        polls it. Raises DaskfleetError when it cannot be read."""

    def environment_error(self) -> str | None:
        """Why this node could not install the published environment before it started, or None."""

    def switch_interpreter(self) -> str | None:
        """The interpreter a node switching environments re-executes itself with, or None: then it exits (13)
        and its supervisor starts it again in the new environment (on an instance, after installing it)."""


class DirectorySource:
    """A node directory: ``spec.json`` and ``tls/{ca,cert,key}.pem``, or a vendor that signs its certificate.

    ``issuer_of(path, role)`` finds the directory's vendor, if any (the caller picks it: the local cluster's).
    """

    def __init__(self, path: str | Path, issuer_of: Callable[[Path, str], NodeIssuer | None] | None = None):
        self.path = Path(path)
        self.issuer_of = issuer_of

    def describe(self) -> str:
        return f"directory {self.path}"

    def fetch_spec(self, role: str) -> Mapping[str, Any]:
        spec_path = self.path / SPEC_FILE
        try:
            text = spec_path.read_text()
        except FileNotFoundError:
            raise DaskfleetError(f"node spec {spec_path}: file not found", ExitCode.SPEC_INVALID) from None
        except OSError as exc:
            raise DaskfleetError(f"node spec {spec_path}: cannot read ({exc.strerror})", ExitCode.SPEC_INVALID) from None
        return load_spec_document(text, f"node spec {spec_path}")

    def fetch_tls(self, role: str) -> TlsMaterial:
        tls = self.path / TLS_DIR
        texts = []
        for name in (CA_FILE, CERT_FILE, KEY_FILE):
            try:
                texts.append((tls / name).read_text())
            except FileNotFoundError:
                raise DaskfleetError(f"{role} TLS file {tls / name}: not found", ExitCode.CERT_UNREADABLE) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise DaskfleetError(f"{role} TLS file {tls / name}: cannot read ({exc})", ExitCode.CERT_UNREADABLE) from None
        return TlsMaterial(*texts)

    def certificate_issuer(self, role: str, spec: NodeSpec) -> NodeIssuer | None:
        return self.issuer_of(self.path, role) if self.issuer_of is not None else None

    def leaving(self) -> str | None:
        """Local nodes are only ever stopped by `daskfleet local down`."""
        return None

    def left(self) -> None:
        """Nothing to tell."""

    def stopped(self, role: str, outcome: Outcome) -> None:
        """The local supervisor sees the exit code and shows the line in ``daskfleet local status``."""

    def audit_forwarder(self) -> AuditForwarder | None:
        """The local audit file is the whole trail."""
        return None

    def instance_kind(self) -> tuple[str, str]:
        """A local process: priced as instance type ``local`` (``--price local=...``), on demand."""
        return LOCAL_INSTANCE_TYPE, "on-demand"

    def usage_forwarder(self) -> AuditForwarder | None:
        """The local usage file is the whole record."""
        return None

    def usage_history(self, since: float) -> list[str] | None:
        return None

    def published_environment(self) -> PublishedEnvironment | None:
        path = self.path / PUBLISHED_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        return parse_published(text, str(path))

    def deny_list(self) -> str | None:
        """A node directory holds none: a local cluster's scheduler spec names its file (``revocation.deny_list_file``)."""
        return None

    def environment_error(self) -> str | None:
        """The local launcher installs published environments itself; a node never starts half-switched."""
        return None

    def switch_interpreter(self) -> str | None:
        """The published environment's interpreter: the local launcher installed it before publishing it."""
        published = self.published_environment()
        python = Path(published.prefix) / "bin" / "python" if published is not None and published.prefix else None
        return str(python) if python is not None and python.exists() else None
