"""Node user data names cluster and role, ships the journal and starts the image's unit; it holds nothing secret."""

from __future__ import annotations

import json

import pytest
import yaml

from daskfleet import conventions
from daskfleet.cli import node
from daskfleet.errors import ExitCode
from daskfleet.aws.userdata import (
    DASKFLEET_EXECUTABLE, agent_command, expand_unit_command, render_cloudwatch_agent_config, render_node_env, render_unit,
    render_user_data,
)

PINNED_SCHEDULER_USER_DATA = """\
#cloud-config
write_files:
- path: /etc/daskfleet/node.env
  owner: root:root
  permissions: '0644'
  content: |
    DASKFLEET_CLUSTER=analytics
- path: /opt/aws/amazon-cloudwatch-agent/etc/daskfleet.json
  owner: root:root
  permissions: '0644'
  content: |
    {
      "agent": {
        "run_as_user": "root"
      },
      "logs": {
        "logs_collected": {
          "journald": {
            "collect_list": [
              {
                "log_group_name": "/daskfleet/analytics",
                "log_stream_name": "journal/{instance_id}",
                "priority": "info",
                "units": [
                  "daskfleet-node@scheduler.service",
                  "daskfleet-node@worker.service"
                ]
              }
            ]
          }
        }
      }
    }
runcmd:
- - /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
  - -a
  - fetch-config
  - -m
  - ec2
  - -s
  - -c
  - file:/opt/aws/amazon-cloudwatch-agent/etc/daskfleet.json
- - systemctl
  - enable
  - --now
  - daskfleet-node@scheduler.service
"""


def test_render_user_data_is_pinned():
    assert render_user_data("analytics", "scheduler") == PINNED_SCHEDULER_USER_DATA


def test_agent_command_is_the_exact_argv_of_the_unit():
    assert agent_command("analytics", "worker") == [DASKFLEET_EXECUTABLE, "node", "worker", "--source", "aws:analytics"]
    environment = dict([render_node_env("analytics").strip().split("=", 1)])
    assert expand_unit_command(render_unit(), "worker", environment) == agent_command("analytics", "worker")


def test_the_daskfleet_cli_accepts_the_agent_command():
    argv = agent_command("analytics", "worker")
    assert argv[1] == "node"
    context = node.make_context("node", argv[2:])
    assert context.params["role"] == "worker" and context.params["source_text"] == "aws:analytics"


def test_configuration_failures_are_not_restarted_and_transient_ones_are():
    unit = render_unit()
    assert "Restart=on-failure" in unit
    stopped = {int(code) for code in unit.split("RestartPreventExitStatus=")[1].splitlines()[0].split()}
    assert stopped == {
        ExitCode.SPEC_INVALID, ExitCode.CERT_UNREADABLE, ExitCode.CERT_NOT_VALID_NOW,
        ExitCode.CERT_ROLE_MISMATCH, ExitCode.ENV_MISMATCH, ExitCode.REFUSED_BY_SCHEDULER, ExitCode.GAVE_UP,
    }
    assert ExitCode.SOURCE_UNAVAILABLE not in stopped and ExitCode.SCHEDULER_UNREACHABLE not in stopped


def test_the_unit_says_what_the_supervision_module_defines_in_systemd_252s_words():
    """Read back as systemd reads it, the unit is the one rule the local supervisor applies too."""
    from aws.e2e import restart_rule_of

    from daskfleet.node.supervision import RULE

    unit = render_unit()
    assert restart_rule_of(unit) == RULE
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
    assert settings["RestartForceExitStatus"] == "13 14 17"  # requested restarts, at once, not failures
    assert settings["SuccessExitStatus"] == "13 14 15 16 17"
    for newer in ("RestartSteps", "RestartMaxDelaySec", "RestartMode"):  # systemd 254+: not on Amazon Linux 2023
        assert newer not in settings
    assert (settings["StateDirectory"], settings["StateDirectoryMode"]) == ("daskfleet", "0700")  # the run history
    for code, restarts in [(0, False), (13, True), (14, True), (15, False), (16, False), (17, True), (66, False),
                           (69, True), (75, True), (79, False), (1, True), (-9, True), (-15, False)]:
        assert RULE.restarts(code) is restarts, code


def test_the_audit_log_has_a_private_directory_that_outlives_the_agent():
    """systemd empties RuntimeDirectory when the unit stops; LogsDirectory (/var/log) it keeps across restarts."""
    settings = dict(line.split("=", 1) for line in render_unit().splitlines() if "=" in line)
    assert (settings["LogsDirectory"], settings["LogsDirectoryMode"]) == ("daskfleet", "0700")
    assert "RuntimeDirectoryPreserve" not in settings  # the runtime directory (keys) still goes with the unit


def test_user_data_is_cloud_config_naming_only_cluster_and_role():
    document = yaml.safe_load(render_user_data("analytics", "worker"))
    assert set(document) == {"write_files", "runcmd"}
    contents = {entry["path"]: entry["content"] for entry in document["write_files"]}
    assert contents == {
        "/etc/daskfleet/node.env": "DASKFLEET_CLUSTER=analytics\n",
        "/opt/aws/amazon-cloudwatch-agent/etc/daskfleet.json": render_cloudwatch_agent_config("analytics"),
    }
    assert document["runcmd"][-1] == ["systemctl", "enable", "--now", "daskfleet-node@worker.service"]
    text = render_user_data("analytics", "worker")
    for secret_marker in ("PRIVATE KEY", "CERTIFICATE", "aws_secret_access_key", "AWS_SECRET"):
        assert secret_marker not in text


@pytest.mark.parametrize(("cluster", "role"), [("analytics; reboot", "worker"), ("analytics", "client"), ("Analytics", "worker")])
def test_names_that_are_not_a_cluster_or_node_role_are_refused(cluster, role):
    with pytest.raises(ValueError):
        render_user_data(cluster, role)


def test_the_journal_of_both_node_units_goes_to_the_clusters_log_group():
    config = json.loads(render_cloudwatch_agent_config("analytics"))
    (entry,) = config["logs"]["logs_collected"]["journald"]["collect_list"]
    assert entry["log_group_name"] == conventions.log_group_name("analytics")
    assert entry["units"] == ["daskfleet-node@scheduler.service", "daskfleet-node@worker.service"]
    assert "{instance_id}" in entry["log_stream_name"]


#: The [Service] directives the unit and the drop-in use, and the systemd version each appeared in: all in 252.
SYSTEMD_SINCE = {"MemoryHigh": 231, "MemoryMax": 231, "MemorySwapMax": 232, "OOMPolicy": 243, "OOMScoreAdjust": 1}


def test_the_worker_units_memory_lines_bound_it_behind_its_own_watcher():
    """The ladder on an instance: the watcher ends the worker at terminate of its limit (the unit's MemoryHigh), before
    the unit is throttled there, before the kernel ends the unit inside its own cgroup at MemoryMax, before the
    machine runs out; the worker process is the OOM killer's first choice, the rest of both units its last."""
    from daskfleet.aws.userdata import (
        WORKER_DROPIN_PATH, WORKER_ENVIRONMENT_DROPIN, render_worker_dropin, render_worker_environment, unit_files,
    )
    from daskfleet.node.prespawn import worker_environment
    from daskfleet.memory import policy
    from daskfleet.memory.policy import TerminatePolicy

    dropin = render_worker_dropin()
    assert dropin.splitlines()[0] == "[Service]"
    settings = dict(line.split("=", 1) for line in dropin.splitlines() if "=" in line)
    assert settings == {"MemoryHigh": "90%", "MemoryMax": "95%", "MemorySwapMax": "0", "OOMPolicy": "kill"}
    high, top = (int(settings[key].rstrip("%")) for key in ("MemoryHigh", "MemoryMax"))
    watcher = TerminatePolicy.from_config().fraction * high  # distributed's default terminate, of the capped limit
    assert watcher < high < top < 100
    assert (high, top) == (policy.INSTANCE_WORKER_MEMORY_HIGH_PERCENT, policy.INSTANCE_WORKER_MEMORY_MAX_PERCENT)
    unit = dict(line.split("=", 1) for line in render_unit().splitlines() if line.startswith(("OOM", "Memory")))
    assert unit == {"OOMScoreAdjust": "-900", "OOMPolicy": "stop"}  # both roles; the worker's drop-in overrides the policy
    assert policy.NODE_OOM_SCORE_ADJ == -900 and policy.WORKER_OOM_SCORE_ADJ == 1000
    for key in {**settings, **unit}:
        assert SYSTEMD_SINCE[key] <= 252, key
    # systemd reads a template instance's drop-ins from <template>@<instance>.service.d/
    assert WORKER_DROPIN_PATH == "/etc/systemd/system/daskfleet-node@worker.service.d/memory.conf"
    assert unit_files() == {"/etc/systemd/system/daskfleet-node@.service": render_unit(), WORKER_DROPIN_PATH: dropin,
                            WORKER_ENVIRONMENT_DROPIN: render_worker_environment(worker_environment({}))}
