"""Node user data: it names cluster and role, starts the agent under systemd, and holds nothing secret."""

from __future__ import annotations

import pytest
import yaml

from daskfleet.cli import node
from daskfleet.errors import ExitCode
from daskfleet.aws.userdata import DASKFLEET_EXECUTABLE, agent_command, render_unit, render_user_data

PINNED_SCHEDULER_USER_DATA = """\
#cloud-config
write_files:
- path: /etc/systemd/system/daskfleet-node.service
  owner: root:root
  permissions: '0644'
  content: |
    [Unit]
    Description=daskfleet scheduler of cluster analytics
    Wants=network-online.target
    After=network-online.target

    [Service]
    Type=exec
    ExecStart=/opt/daskfleet/env/bin/daskfleet node scheduler --source aws:analytics
    Restart=on-failure
    RestartSec=5
    RestartPreventExitStatus=65 66 70 71 72 76
    DynamicUser=yes
    RuntimeDirectory=daskfleet
    RuntimeDirectoryMode=0700
    CacheDirectory=daskfleet
    CacheDirectoryMode=0700
    LogsDirectory=daskfleet
    LogsDirectoryMode=0700
    NoNewPrivileges=yes
    LimitNOFILE=65536

    [Install]
    WantedBy=multi-user.target
runcmd:
- - systemctl
  - daemon-reload
- - systemctl
  - enable
  - --now
  - daskfleet-node.service
"""


def test_render_user_data_is_pinned():
    assert render_user_data("analytics", "scheduler") == PINNED_SCHEDULER_USER_DATA


def test_agent_command_is_the_exact_argv_of_the_unit():
    assert agent_command("analytics", "worker") == [DASKFLEET_EXECUTABLE, "node", "worker", "--source", "aws:analytics"]
    assert f"ExecStart={' '.join(agent_command('analytics', 'worker'))}\n" in render_unit("analytics", "worker")


def test_the_daskfleet_cli_accepts_the_agent_command():
    argv = agent_command("analytics", "worker")
    assert argv[1] == "node"
    context = node.make_context("node", argv[2:])
    assert context.params["role"] == "worker" and context.params["source_text"] == "aws:analytics"


def test_configuration_failures_are_not_restarted_and_transient_ones_are():
    unit = render_unit("analytics", "worker")
    assert "Restart=on-failure" in unit
    stopped = {int(code) for code in unit.split("RestartPreventExitStatus=")[1].splitlines()[0].split()}
    assert stopped == {
        ExitCode.SPEC_INVALID, ExitCode.CERT_UNREADABLE, ExitCode.CERT_NOT_VALID_NOW,
        ExitCode.CERT_ROLE_MISMATCH, ExitCode.ENV_MISMATCH, ExitCode.REFUSED_BY_SCHEDULER,
    }
    assert ExitCode.SOURCE_UNAVAILABLE not in stopped and ExitCode.SCHEDULER_UNREACHABLE not in stopped


def test_the_audit_log_has_a_private_directory_that_outlives_the_agent():
    """systemd empties RuntimeDirectory when the unit stops; LogsDirectory (/var/log) it keeps across restarts."""
    settings = dict(line.split("=", 1) for line in render_unit("analytics", "scheduler").splitlines() if "=" in line)
    assert (settings["LogsDirectory"], settings["LogsDirectoryMode"]) == ("daskfleet", "0700")
    assert "RuntimeDirectoryPreserve" not in settings  # the runtime directory (keys) still goes with the unit


def test_user_data_is_cloud_config_naming_only_cluster_and_role():
    document = yaml.safe_load(render_user_data("analytics", "worker"))
    assert set(document) == {"write_files", "runcmd"}
    (unit_file,) = document["write_files"]
    assert unit_file["content"] == render_unit("analytics", "worker")
    assert ["systemctl", "enable", "--now", "daskfleet-node.service"] in document["runcmd"]
    text = render_user_data("analytics", "worker")
    for secret_marker in ("PRIVATE KEY", "CERTIFICATE", "aws_secret_access_key", "AWS_SECRET"):
        assert secret_marker not in text


@pytest.mark.parametrize(("cluster", "role"), [("analytics; reboot", "worker"), ("analytics", "client"), ("Analytics", "worker")])
def test_names_that_are_not_a_cluster_or_node_role_are_refused(cluster, role):
    with pytest.raises(ValueError):
        render_user_data(cluster, role)
