"""A node's systemd unit (installed by its image) and its user data (which names cluster and role only).

The image installs one template unit, ``daskfleet-node@.service``, rendered here by the
agent version it carries; the instance name is the node's role. User data writes the
cluster's name where the unit reads it, the CloudWatch agent's configuration that ships the
node's journal to the cluster's log group, and starts both. Everything else (spec,
certificates, keys) the agent fetches at boot through the instance role, so user data never
holds a secret: anyone who can describe an instance can read it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import yaml

from .. import conventions
from ..memory import policy as memory
from ..node.supervision import RULE, RestartRule

#: Where the image installs the daskfleet environment (images/ builds it there).
DASKFLEET_EXECUTABLE = f"{conventions.NODE_ENV_LINK}/bin/daskfleet"
#: The template unit running the agent; ``daskfleet-node@<role>.service`` is one node.
UNIT_TEMPLATE_NAME = "daskfleet-node@.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_TEMPLATE_NAME}"
#: The worker's own settings beside the template: systemd reads ``<template>@<instance>.service.d/`` too.
WORKER_DROPIN_PATH = f"/etc/systemd/system/{UNIT_TEMPLATE_NAME.replace('@', '@worker')}.d/memory.conf"
#: What user data writes for the unit: the cluster's name, in this variable.
NODE_ENV_FILE = "/etc/daskfleet/node.env"
CLUSTER_VARIABLE = "DASKFLEET_CLUSTER"
#: The CloudWatch agent (installed by the image) and the configuration user data gives it.
CLOUDWATCH_AGENT_CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
CLOUDWATCH_AGENT_CONFIG = "/opt/aws/amazon-cloudwatch-agent/etc/daskfleet.json"
#: The CloudWatch agent reads the journal (``logs.logs_collected.journald.collect_list``) from this
#: version: journald collection was merged in aws/amazon-cloudwatch-agent#2121 (2026-05-13), so
#: 1.300070.0 (release notes #2171, 2026-06-19, all of main since 1.300069.0) has it. The image
#: build refuses an older agent (images/provision/build-image.sh; a test holds the two together).
CLOUDWATCH_AGENT_JOURNALD_MIN_VERSION = "1.300070.0"
#: Where the agent keeps its restart history (backoff and give-up window): under the unit's StateDirectory.
STATE_DIRECTORY_NAME = "daskfleet"
#: A drop-in of the worker's unit only: the environment distributed's nanny gives a worker process, so the worker's
#: agent starts with it and need not re-execute itself to get it (daskfleet.node.prespawn).
WORKER_ENVIRONMENT_DROPIN = f"/etc/systemd/system/{UNIT_TEMPLATE_NAME.replace('@', '@worker')}.d/nanny-environment.conf"


def unit_name(role: conventions.Role) -> str:
    """The unit of one node: ``daskfleet-node@worker.service``."""
    _check_role(role)
    return UNIT_TEMPLATE_NAME.replace("@", f"@{role}")


def agent_command(cluster: str, role: conventions.Role) -> list[str]:
    """The exact argv the unit runs for ``role`` once user data has named ``cluster``."""
    _check_cluster(cluster)
    _check_role(role)
    return [DASKFLEET_EXECUTABLE, "node", role, "--source", f"aws:{cluster}"]


def render_unit(rule: RestartRule = RULE) -> str:
    """The template unit, its restart semantics rendered from ``daskfleet.node.supervision`` (systemd 252)."""
    return "\n".join(
        [
            "[Unit]",
            f"Description=daskfleet %i of the cluster named in {NODE_ENV_FILE}",
            "Wants=network-online.target",
            "After=network-online.target",
            # A backstop only: the agent itself backs off after failures and gives up (exit 79).
            f"StartLimitIntervalSec={rule.start_limit_interval_s}",
            f"StartLimitBurst={rule.start_limit_burst}",
            "",
            "[Service]",
            "Type=exec",
            f"EnvironmentFile={NODE_ENV_FILE}",
            # As root ("+"), before the agent: switch to the cluster's published environment if it has a newer
            # one; on failure ("-") the node starts on its current environment and the agent tells the scheduler.
            f"ExecStartPre=-+{DASKFLEET_EXECUTABLE} env follow --source aws:${{{CLUSTER_VARIABLE}}} --role %i",
            f"ExecStart={DASKFLEET_EXECUTABLE} node %i --source aws:${{{CLUSTER_VARIABLE}}}",
            *restart_lines(rule),
            # The agent writes its certificates and Dask config 0600 under $RUNTIME_DIRECTORY (memory,
            # gone when the unit stops); a worker spills data to $CACHE_DIRECTORY (disk); the scheduler
            # appends its audit log under $LOGS_DIRECTORY (disk, kept across restarts of the unit); the
            # agent keeps its restart history under $STATE_DIRECTORY (disk, kept across restarts).
            # All four are private to the unit's user.
            "DynamicUser=yes",
            "RuntimeDirectory=daskfleet",
            "RuntimeDirectoryMode=0700",
            "CacheDirectory=daskfleet",
            "CacheDirectoryMode=0700",
            "LogsDirectory=daskfleet",
            "LogsDirectoryMode=0700",
            f"StateDirectory={STATE_DIRECTORY_NAME}",
            "StateDirectoryMode=0700",
            "NoNewPrivileges=yes",
            "LimitNOFILE=65536",
            # The kernel's OOM killer takes the unit's processes last; a worker's agent raises its own worker
            # process to the first choice, and the worker's drop-in (render_worker_dropin) bounds its memory.
            f"OOMScoreAdjust={memory.NODE_OOM_SCORE_ADJ}",
            "OOMPolicy=stop",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def render_worker_dropin() -> str:
    """The worker unit's memory bounds (systemd 252), the second line after the agent's own memory watcher.

    The worker's memory limit is capped at ``MemoryHigh`` (the agent reads its cgroup), so the watcher ends the
    worker at ``terminate`` of it before the unit is throttled; above ``MemoryMax`` the kernel ends the whole unit
    (``OOMPolicy=kill``) in an OOM kill confined to its cgroup, and ``Restart=on-failure`` starts it again. No
    swap: the limit is real memory, as the worker's RSS is.
    """
    return "\n".join([
        "[Service]",
        f"MemoryHigh={memory.INSTANCE_WORKER_MEMORY_HIGH_PERCENT}%",
        f"MemoryMax={memory.INSTANCE_WORKER_MEMORY_MAX_PERCENT}%",
        "MemorySwapMax=0",
        "OOMPolicy=kill",
        "",
    ])


def unit_files(rule: RestartRule = RULE) -> dict[str, str]:
    """Every file the image installs for the node units: the template and the worker's two drop-ins (its memory
    bounds, and the environment distributed's nanny gives a worker process, from the image's Dask configuration)."""
    from ..node.prespawn import worker_environment  # noqa: PLC0415  (dask's configuration, read at image build only)

    return {
        UNIT_PATH: render_unit(rule),
        WORKER_DROPIN_PATH: render_worker_dropin(),
        WORKER_ENVIRONMENT_DROPIN: render_worker_environment(worker_environment({})),
    }


def render_worker_environment(environment: Mapping[str, str]) -> str:
    """The worker unit's drop-in setting ``environment`` (rendered by the image from distributed's configuration)."""
    lines = ["[Service]"]
    for name, value in sorted(environment.items()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"environment variable name {name!r} is not one systemd can set")
        quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        lines.append(f'Environment="{name}={quoted}"')
    return "\n".join([*lines, ""])


def restart_lines(rule: RestartRule = RULE) -> list[str]:
    """``Restart=on-failure``: requested stops are successes, requested restarts are forced, configuration never."""

    def codes(values) -> str:
        return " ".join(str(int(code)) for code in sorted(values))

    return [
        "Restart=on-failure",
        f"RestartSec={rule.delay_ms}ms",
        f"SuccessExitStatus={codes((rule.at_once | rule.stay_down) - {0})}",
        f"RestartForceExitStatus={codes(rule.at_once)}",
        f"RestartPreventExitStatus={codes(rule.never)}",
    ]


def expand_unit_command(unit: str, role: str, environment: dict[str, str], key: str = "ExecStart") -> list[str]:
    """The argv systemd runs as ``key`` (ExecStart, ExecStartPre) for ``unit``'s instance ``role`` (tests and docs)."""
    (line,) = [line for line in unit.splitlines() if line.startswith(f"{key}=")]
    command = line.removeprefix(f"{key}=").lstrip("-+!@:").replace("%i", role)
    command = re.sub(r"\$\{(\w+)\}", lambda match: environment[match.group(1)], command)
    return command.split()


def render_node_env(cluster: str) -> str:
    _check_cluster(cluster)
    return f"{CLUSTER_VARIABLE}={cluster}\n"


def render_cloudwatch_agent_config(cluster: str) -> str:
    """The CloudWatch agent's configuration: the node units' journal to the cluster's log group."""
    _check_cluster(cluster)
    units = [unit_name(role) for role in conventions.NODE_ROLES]
    config = {
        "agent": {"run_as_user": "root"},
        "logs": {
            "logs_collected": {
                "journald": {
                    "collect_list": [{
                        "units": units,
                        "priority": "info",
                        "log_group_name": conventions.log_group_name(cluster),
                        "log_stream_name": "journal/{instance_id}",
                    }],
                },
            },
        },
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def render_user_data(cluster: str, role: conventions.Role) -> str:
    """cloud-init user data: name the cluster, ship the node's journal, start the node's unit."""
    files = [
        (NODE_ENV_FILE, render_node_env(cluster)),
        (CLOUDWATCH_AGENT_CONFIG, render_cloudwatch_agent_config(cluster)),
    ]
    document = {
        "write_files": [
            {"path": path, "owner": "root:root", "permissions": "0644", "content": content} for path, content in files
        ],
        "runcmd": [
            [CLOUDWATCH_AGENT_CTL, "-a", "fetch-config", "-m", "ec2", "-s", "-c", f"file:{CLOUDWATCH_AGENT_CONFIG}"],
            ["systemctl", "enable", "--now", unit_name(role)],
        ],
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_CloudConfigDumper, sort_keys=False, width=1000)


def _check_cluster(cluster: str) -> None:
    if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, cluster):
        raise ValueError(f"cluster {cluster!r} does not match {conventions.CLUSTER_NAME_PATTERN}")


def _check_role(role: str) -> None:
    if role not in conventions.NODE_ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(conventions.NODE_ROLES)}")


class _CloudConfigDumper(yaml.SafeDumper):
    """Writes multi-line strings (the configuration files) as literal blocks, so user data reads like them."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_CloudConfigDumper.add_representer(str, _represent_str)
