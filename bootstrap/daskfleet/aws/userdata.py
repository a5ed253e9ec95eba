"""The user data of a cluster node: name cluster and role, start the agent under systemd, nothing else.

Everything else (spec, certificates, keys) the agent fetches at boot through the instance
role, so user data never holds a secret: anyone who can describe an instance can read it.
"""

from __future__ import annotations

import re

import yaml

from .. import conventions
from ..errors import ExitCode

#: Where the image installs the daskfleet environment (images/ builds it there).
DASKFLEET_EXECUTABLE = "/opt/daskfleet/env/bin/daskfleet"
#: The systemd unit running the agent.
UNIT_NAME = "daskfleet-node.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
#: Exit codes that no restart can fix: the spec, the certificate or the environment is wrong,
#: or the scheduler refused this node (it would refuse it again).
NO_RESTART_EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode.SPEC_INVALID,
    ExitCode.CERT_UNREADABLE,
    ExitCode.CERT_NOT_VALID_NOW,
    ExitCode.CERT_ROLE_MISMATCH,
    ExitCode.ENV_MISMATCH,
    ExitCode.REFUSED_BY_SCHEDULER,
)
RESTART_DELAY_SECONDS = 5


def agent_command(cluster: str, role: conventions.Role) -> list[str]:
    """The exact argv the node's systemd unit runs."""
    if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, cluster):
        raise ValueError(f"cluster {cluster!r} does not match {conventions.CLUSTER_NAME_PATTERN}")
    if role not in conventions.NODE_ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(conventions.NODE_ROLES)}")
    return [DASKFLEET_EXECUTABLE, "node", role, "--source", f"aws:{cluster}"]


def render_unit(cluster: str, role: conventions.Role) -> str:
    """The systemd unit: restart on transient failures, stay down on configuration-class ones."""
    no_restart = " ".join(str(int(code)) for code in NO_RESTART_EXIT_CODES)
    return "\n".join(
        [
            "[Unit]",
            f"Description=daskfleet {role} of cluster {cluster}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=exec",
            f"ExecStart={' '.join(agent_command(cluster, role))}",
            "Restart=on-failure",
            f"RestartSec={RESTART_DELAY_SECONDS}",
            f"RestartPreventExitStatus={no_restart}",
            # The agent writes its certificates and Dask config 0600 under $RUNTIME_DIRECTORY (memory,
            # gone when the unit stops); a worker spills data to $CACHE_DIRECTORY (disk); the scheduler
            # appends its audit log under $LOGS_DIRECTORY (disk, kept across restarts of the unit).
            # All three are private to the unit's user.
            "DynamicUser=yes",
            "RuntimeDirectory=daskfleet",
            "RuntimeDirectoryMode=0700",
            "CacheDirectory=daskfleet",
            "CacheDirectoryMode=0700",
            "LogsDirectory=daskfleet",
            "LogsDirectoryMode=0700",
            "NoNewPrivileges=yes",
            "LimitNOFILE=65536",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def render_user_data(cluster: str, role: conventions.Role) -> str:
    """cloud-init user data that installs the node's unit and starts it; names only cluster and role."""
    document = {
        "write_files": [
            {"path": UNIT_PATH, "owner": "root:root", "permissions": "0644", "content": render_unit(cluster, role)},
        ],
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", UNIT_NAME],
        ],
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_CloudConfigDumper, sort_keys=False, width=1000)


class _CloudConfigDumper(yaml.SafeDumper):
    """Writes multi-line strings (the unit file) as literal blocks, so user data reads like the file."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_CloudConfigDumper.add_representer(str, _represent_str)
