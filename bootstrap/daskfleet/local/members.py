"""Member certificates for a local cluster (``daskfleet local issue``), for tests and demos of the admin split.

``local up`` keeps the cluster's CA in its state directory and gives the local user an admin certificate;
a member certificate made here names another user, in the ``client`` role, and is written under
``<state>/users/<user>/`` (0600 in 0700 directories), where ``daskfleet.connect(NAME, user=...)`` finds it.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..node.sources import CA_FILE, CERT_FILE, KEY_FILE
from ..trust import pki
from .state import client_dir, cluster_name, command_flags, load_ca, user_dir


def check_user_name(user: str, key: str = "--user") -> str:
    """``user`` if it may name a user (a certificate's CN, an audit identity), else one clear error naming ``key``."""
    if not re.fullmatch(conventions.USER_NAME_PATTERN, user):
        raise DaskfleetError(f"{key}: {user!r} does not match {conventions.USER_NAME_PATTERN}", ExitCode.CONFIG)
    if user == conventions.IDLE_USER:
        raise DaskfleetError(f"{key}: {user!r} is reserved (idle worker time is charged to it)", ExitCode.CONFIG)
    return user


def issue_member(state_dir: Path, user: str, cluster: str) -> Path:
    """Make ``user`` a member of local cluster ``cluster`` (in ``state_dir``): returns the directory of their certificate."""
    check_user_name(user)
    ca = load_ca(state_dir)
    if ca is None:
        raise DaskfleetError(f"no CA of local cluster {cluster!r} in {state_dir}: start it first with "
                             f"`daskfleet local up{command_flags(state_dir, cluster)}`", ExitCode.CONFIG)
    if cluster_name(state_dir) != cluster:
        raise DaskfleetError(f"{state_dir} holds local cluster {cluster_name(state_dir)!r}, not {cluster!r}", ExitCode.CONFIG)
    admin = pki.identity_of((client_dir(state_dir) / CERT_FILE).read_text()).common_name
    if user == admin:
        raise DaskfleetError(
            f"--user: {user!r} is the admin of local cluster {cluster!r} already (its certificate is in "
            f"{client_dir(state_dir)})", ExitCode.CONFIG,
        )
    cert = pki.issue_certificate(ca, cluster, conventions.MEMBER_ROLE, user=user)
    directory = user_dir(state_dir, user)
    pki.ensure_private_dir(directory.parent)
    pki.write_private(directory / CA_FILE, ca.cert_pem)
    pki.write_private(directory / CERT_FILE, cert.cert_pem)
    pki.write_private(directory / KEY_FILE, cert.key_pem)
    return directory


#: ``metrics/``: the read-only ``metrics`` certificate Prometheus presents to the dashboard port (``local issue --metrics``).
METRICS_DIR = "metrics"


def issue_metrics(state_dir: Path, cluster: str) -> Path:
    """A ``metrics`` certificate of local cluster ``cluster`` (it reads the dashboard's /metrics and nothing else),
    written under ``<state>/metrics/``: returns that directory."""
    ca = load_ca(state_dir)
    if ca is None:
        raise DaskfleetError(f"no CA of local cluster {cluster!r} in {state_dir}: start it first with "
                             f"`daskfleet local up{command_flags(state_dir, cluster)}`", ExitCode.CONFIG)
    cert = pki.issue_certificate(ca, cluster, conventions.METRICS_ROLE)
    directory = Path(state_dir) / METRICS_DIR
    pki.ensure_private_dir(directory)
    pki.write_private(directory / CA_FILE, ca.cert_pem)
    pki.write_private(directory / CERT_FILE, cert.cert_pem)
    pki.write_private(directory / KEY_FILE, cert.key_pem)
    return directory
