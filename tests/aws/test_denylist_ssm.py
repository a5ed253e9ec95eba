"""The deny-list in SSM (moto): ``daskfleet revoke`` writes it with an operator's login, a scheduler reads it."""

from __future__ import annotations

import boto3
from aws.awsfake import CLUSTER, REGION
from click.testing import CliRunner

from daskfleet import conventions
from daskfleet.aws.calls import INSTANCE_ROLE
from daskfleet.aws.denylist import read_deny_list, read_deny_list_text
from daskfleet.cli import cli
from daskfleet.ops.revocation import change_aws
from daskfleet.trust.denylist import DenyList


def test_revoke_and_lift_write_versions_a_scheduler_reads(aws, home):
    ssm = boto3.client("ssm", region_name=REGION)
    assert read_deny_list_text(ssm, CLUSTER, INSTANCE_ROLE) is None  # nobody ever revoked: nothing stored

    session = boto3.session.Session(region_name=REGION)
    change = change_aws(CLUSTER, "alice", lift=False, reason="laptop stolen", session=session)
    assert change.version == 1 and change.where == f"SSM parameter {conventions.deny_list_parameter_name(CLUSTER)}"
    entry = read_deny_list(ssm, CLUSTER, INSTANCE_ROLE).denies("alice")
    assert entry.reason == "laptop stolen" and entry.by.startswith("arn:aws:")  # the operator's own identity

    assert change_aws(CLUSTER, "alice", lift=False, reason="again", session=session).version is None
    assert change_aws(CLUSTER, "bob", lift=True, session=session).version is None  # nothing to lift
    assert change_aws(CLUSTER, "alice", lift=True, session=session).version == 2
    assert not DenyList.from_json(read_deny_list_text(ssm, CLUSTER, INSTANCE_ROLE))
    history = ssm.get_parameter_history(Name=conventions.deny_list_parameter_name(CLUSTER))["Parameters"]
    assert [DenyList.from_json(v["Value"]).users() for v in history] == [["alice"], []]  # versions are the history


def test_the_command_revokes_on_aws_and_names_bad_input(aws, home):
    runner = CliRunner()
    done = runner.invoke(cli, ["revoke", CLUSTER, "alice", "--reason", "left"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert f"revoked alice on {CLUSTER}" in done.output and "alice" in done.output and ": left" in done.output
    assert read_deny_list(boto3.client("ssm", region_name=REGION), CLUSTER, INSTANCE_ROLE).denies("alice")

    bad = runner.invoke(cli, ["revoke", CLUSTER, "Not A User"])
    assert "USER: 'Not A User' is not a user name" in str(bad.exception)
