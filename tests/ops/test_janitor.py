"""The janitor against a moto region: an expired cluster, a live one, and untagged look-alikes of the same shape."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError
from ops.seed import cluster_tags, seed_cluster, snapshot

from daskfleet.errors import DaskfleetError
from daskfleet.ops.awsapi import Backoff, OpsApi, open_session
from daskfleet.ops.janitor import run_janitor


class LongestBackoff(Backoff):
    """The backoff's longest wait at every attempt (no jitter), so its growth shows."""

    def delay(self, attempt, jitter=None):
        return super().delay(attempt, lambda low, high: high)


class FailingApi(OpsApi):
    """Fault injection: ``operation`` on ``service`` fails ``times`` times (forever when None) with ``code``."""

    def __init__(self, *, service: str, operation: str, code: str, times: int | None = None, when: str = ""):
        super().__init__(open_session(None, None), backoff=LongestBackoff(attempts=4, base=0.5, cap=4), sleep=self._slept)
        self.target, self.code, self.left, self.when = (service, operation), code, times, when
        self.waits: list[float] = []

    def _slept(self, seconds: float) -> None:
        self.waits.append(seconds)

    def make_client(self, service):
        client = super().make_client(service)
        original = client._make_api_call  # botocore's one entry point for every operation of a client

        def maybe_fail(operation, params):
            if (service, operation) == self.target and self.when in repr(params) and (self.left is None or self.left > 0):
                if self.left is not None:
                    self.left -= 1
                raise ClientError({"Error": {"Code": self.code, "Message": f"injected {self.code}"}}, operation)
            return original(operation, params)

        client._make_api_call = maybe_fail
        return client


def janitor(api=None, **options):
    out = io.StringIO()
    settings = dict(region=None, profile=None, yes=False, orphans=False, live=(), pulumi_backend=None, orphan_grace_hours=6.0)
    settings.update(options)
    try:
        run_janitor(**settings, out=out, api=api or OpsApi(open_session(None, None), sleep=lambda s: None))
    except DaskfleetError as error:
        return out.getvalue(), error
    return out.getvalue(), None


def test_a_dry_run_lists_every_resource_of_the_expired_cluster_and_changes_nothing(region):
    out, error = janitor()
    assert error is None, out
    table = [line.split() for line in out.splitlines() if line.split()[:1] and "  " in line and not line.startswith("TYPE")]
    listed = {(row[0], row[1]) for row in table if len(row) == 5}
    assert region.expired.ids <= listed
    assert {row[2] for row in table if len(row) == 5} == {"old"}
    assert all(row[3] == "2020-01-01" for row in table if len(row) == 5)
    assert "dry run: nothing was deleted" in out
    assert snapshot(region.moto) == region.before


def test_delete_mode_leaves_nothing_of_the_expired_cluster_and_everything_else(region):
    out, error = janitor(yes=True)
    assert error is None, out
    assert snapshot(region.moto) == region.before - region.expired.ids
    assert region.live.ids <= region.before and region.lookalike.ids <= snapshot(region.moto)
    assert "deleted bucket daskfleet-old-0a1b2c3" in out and "failed 0" in out
    # The bucket's versions and delete markers went first; the KMS key is scheduled for the minimum window.
    kms = region.moto.client("kms")
    states = {kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] for kind, key_id in region.expired.ids if kind == "kms-key"}
    assert states == {"PendingDeletion"}
    # A second run finds nothing left to do.
    again, error = janitor(yes=True)
    assert error is None and ", 0 selected" in again, again


@pytest.mark.parametrize(("service", "operation", "kind", "ident"), [
    ("s3", "DeleteBucket", "bucket", "daskfleet-old-0a1b2c3"),
    ("iam", "DeleteRole", "iam-role", "daskfleet-old-worker"),
    ("logs", "DeleteLogGroup", "log-group", "/daskfleet/old"),
])
def test_a_resource_that_fails_to_delete_is_reported_while_the_rest_proceed(region, service, operation, kind, ident):
    api = FailingApi(service=service, operation=operation, code="AccessDenied", when=ident)
    out, error = janitor(api, yes=True)
    assert error is not None and "1 failure(s)" in str(error)
    assert f"FAILED {kind} {ident}" in out
    (reported,) = [line for line in out.splitlines() if line.startswith(f"  {kind} {ident}")]
    assert "access denied" in reported
    assert snapshot(region.moto) == (region.before - region.expired.ids) | {(kind, ident)}


def test_throttling_is_retried_with_growing_backoff_and_the_deletion_completes(region):
    api = FailingApi(service="ssm", operation="DeleteParameter", code="ThrottlingException", times=3)
    out, error = janitor(api, yes=True)
    assert error is None, out
    assert [code for _, code, _ in api.retries] == ["ThrottlingException"] * 3
    assert api.waits == [0.5, 1.0, 2.0]  # doubling from the base, under the cap
    assert snapshot(region.moto) == region.before - region.expired.ids


def test_throttling_that_never_ends_is_reported_after_bounded_attempts(region):
    api = FailingApi(service="secretsmanager", operation="DeleteSecret", code="ThrottlingException", when="clients/alice")
    out, error = janitor(api, yes=True)
    assert error is not None
    assert len([r for r in api.retries if r[0] == "DeleteSecret"]) == api.backoff.attempts - 1
    assert "secret daskfleet/old/clients/alice (cluster old): secretsmanager:DeleteSecret on secret daskfleet/old/clients/alice failed: ThrottlingException" in out
    assert snapshot(region.moto) == (region.before - region.expired.ids) | {("secret", "daskfleet/old/clients/alice")}


def test_orphans_select_a_cluster_without_a_live_stack_only_past_the_grace_period(aws):
    stray = seed_cluster(aws, "stray", cluster_tags("stray", None), cidr="10.67.0.0/16")
    kept = seed_cluster(aws, "team", cluster_tags("team", None), cidr="10.65.0.0/16")
    out, error = janitor(orphans=True, live=("team",))
    assert error is None and ", 0 selected" in out  # created moments ago: younger than the grace period
    out, error = janitor(orphans=True, live=("team",), orphan_grace_hours=0, yes=True)
    assert error is None, out
    left = snapshot(aws)
    assert not stray.ids & left and kept.ids <= left


def test_a_tagged_resource_of_a_type_the_janitor_does_not_remove_is_reported_not_touched(aws):
    table = aws.client("dynamodb").create_table(
        TableName="daskfleet-old-extra", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        Tags=[{"Key": k, "Value": v} for k, v in cluster_tags("old", "2020-01-01").items()])["TableDescription"]["TableArn"]
    out, error = janitor(yes=True)
    assert error is not None
    assert f"{table} (cluster old): carries the cluster tag, but the janitor does not remove its type" in out
    assert aws.client("dynamodb").list_tables()["TableNames"] == ["daskfleet-old-extra"]


def test_the_command_honours_aws_endpoint_url_and_exits_non_zero_naming_each_failure(region, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": region.moto.endpoint}
    done = subprocess.run([sys.executable, "-m", "daskfleet", "janitor"], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "daskfleet-old-0a1b2c3" in done.stdout and "daskfleet-team" not in done.stdout
    unreachable = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-m", "daskfleet", "janitor"], env=unreachable, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "listing EC2: ec2:DescribeInstances failed" in done.stdout or "cannot reach http://127.0.0.1:9" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("daskfleet: error: janitor:")
    assert "Traceback" not in done.stderr
