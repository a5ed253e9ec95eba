"""Where a node gets its spec and TLS material: one narrow interface, one implementation per place.

``DirectorySource`` reads a local directory (the embedded default and tests);
``daskfleet.aws_source.AwsSource`` reads instance metadata, SSM Parameter Store and
Secrets Manager through the instance role.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import DaskfleetError, ExitCode
from .spec import load_spec_document

SPEC_FILE = "spec.json"
TLS_DIR = "tls"
CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
#: Written into its runtime directory by a scheduler node once it listens: {"address", "dashboard", "pid"}.
SCHEDULER_INFO_FILE = "scheduler.json"


@dataclass(frozen=True)
class TlsMaterial:
    """PEM text of the cluster CA, this node's certificate and its private key."""

    ca_pem: str
    cert_pem: str
    key_pem: str = field(repr=False)

    @classmethod
    def from_secret_json(cls, text: str, origin: str) -> TlsMaterial:
        """Parse the JSON document stored in a TLS secret (keys: conventions.TLS_SECRET_KEYS)."""
        try:
            doc = json.loads(text)
            return cls(ca_pem=doc["ca"], cert_pem=doc["cert"], key_pem=doc["key"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DaskfleetError(
                f"{origin}: not a TLS secret document with keys ca, cert, key ({type(exc).__name__})",
                ExitCode.CERT_UNREADABLE,
            ) from None

    def to_secret_json(self) -> str:
        return json.dumps({"ca": self.ca_pem, "cert": self.cert_pem, "key": self.key_pem})


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

    def leaving(self) -> str | None:
        """Why the platform is taking this node away (so a worker drains first), or None."""

    def left(self) -> None:
        """Tell the platform the node has drained and may go."""

    def audit_forwarder(self) -> AuditForwarder | None:
        """Where the scheduler's audit lines go besides its local file (e.g. the cluster's log group)."""


class DirectorySource:
    """A node directory: ``spec.json`` and ``tls/{ca,cert,key}.pem``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

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

    def leaving(self) -> str | None:
        """Local nodes are only ever stopped by `daskfleet local down`."""
        return None

    def left(self) -> None:
        """Nothing to tell."""

    def audit_forwarder(self) -> AuditForwarder | None:
        """The local audit file is the whole trail."""
        return None


#: Source factories by scheme: ``dir:PATH`` and ``aws:CLUSTER``.
_FACTORIES: dict[str, Callable[[str], NodeSource]] = {"dir": DirectorySource}


def register_source(scheme: str, factory: Callable[[str], NodeSource]) -> None:
    _FACTORIES[scheme] = factory


def make_source(text: str) -> NodeSource:
    """A source from its command-line form: ``dir:/path/to/node`` or ``aws:<cluster>``."""
    scheme, _, rest = text.partition(":")
    if scheme == "aws" and "aws" not in _FACTORIES:
        from . import aws_source  # noqa: F401  registers itself; imports boto3 only when asked for

    factory = _FACTORIES.get(scheme)
    if factory is None or not rest:
        raise DaskfleetError(f"--source: unknown source {text!r} (accepted: dir:PATH, aws:CLUSTER)", ExitCode.CONFIG)
    return factory(rest)
