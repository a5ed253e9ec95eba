"""A user's own AWS identity fetches their client certificate and finds the scheduler (moto server)."""

from __future__ import annotations

import json
import logging

import pytest
from aws.awsfake import CLUSTER, SCHEDULER_ADDRESS, assert_fails, secret_texts

from daskfleet import conventions
from daskfleet.aws.user import discover_scheduler_address, fetch_client_tls, user_from_arn
from daskfleet.errors import ExitCode

ALICE_SECRET = conventions.client_tls_secret_name(CLUSTER, "alice")


@pytest.fixture
def as_alice(aws, cluster_pki, monkeypatch):
    """Alice is logged in as an IAM user, and the program stored her client secret."""
    credentials = aws.iam_user("alice", allow=["sts:GetCallerIdentity", "secretsmanager:GetSecretValue"])
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    aws.put_secret(ALICE_SECRET, cluster_pki["client"].to_secret_json())
    return aws


@pytest.mark.parametrize(
    ("arn", "user"),
    [
        ("arn:aws:iam::123456789012:user/alice", "alice"),
        ("arn:aws:iam::123456789012:user/team/data/Alice", "alice"),
        ("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_DataScientist_ab12/alice@example.com", "alice"),
        ("arn:aws:sts::123456789012:assumed-role/analyst/j.doe", "j.doe"),
        ("arn:aws-us-gov:sts::123456789012:federated-user/bob", "bob"),
    ],
)
def test_the_user_is_the_last_part_of_the_caller_arn(arn, user):
    assert user_from_arn(arn) == user


@pytest.mark.parametrize(
    "arn", ["arn:aws:iam::123456789012:root", "arn:aws:sts::123456789012:assumed-role/analyst/1234", "not an arn"]
)
def test_an_arn_that_names_no_valid_user_asks_for_one(arn):
    assert_fails(lambda: user_from_arn(arn), ExitCode.CONFIG, arn, "user=")


def test_a_logged_in_user_fetches_their_own_client_certificate(as_alice, cluster_pki, caplog):
    caplog.set_level(logging.DEBUG)
    assert fetch_client_tls(CLUSTER) == cluster_pki["client"]
    for text in secret_texts(cluster_pki["client"]) + ["-----BEGIN"]:
        assert text not in caplog.text


def test_an_assumed_role_session_is_the_user(aws, cluster_pki, monkeypatch):
    trust = {"Version": "2012-10-17", "Statement": []}
    aws.client("iam").create_role(RoleName="analyst", AssumeRolePolicyDocument=json.dumps(trust))
    credentials = aws.client("sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/analyst", RoleSessionName="Bob@example.com"
    )["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    aws.put_secret(conventions.client_tls_secret_name(CLUSTER, "bob"), cluster_pki["client"].to_secret_json())
    assert fetch_client_tls(CLUSTER).cert_pem == cluster_pki["client"].cert_pem


def test_an_explicit_user_wins_over_the_caller_identity(as_alice, cluster_pki):
    as_alice.put_secret(conventions.client_tls_secret_name(CLUSTER, "carol"), cluster_pki["worker"].to_secret_json())
    assert fetch_client_tls(CLUSTER, "carol") == cluster_pki["worker"]


def test_a_missing_client_secret_says_what_was_looked_for(as_alice):
    other = conventions.client_tls_secret_name("other-team", "alice")
    assert_fails(
        lambda: fetch_client_tls("other-team"),
        ExitCode.CERT_UNREADABLE, other, "'alice'", "arn:aws:iam::123456789012:user/alice", "user=",
    )


def test_access_denied_names_the_action_the_secret_and_the_caller(as_alice, monkeypatch):
    for name, value in as_alice.iam_user("mallory", allow=["sts:GetCallerIdentity"]).items():
        monkeypatch.setenv(name, value)
    as_alice.enforce_iam()
    assert_fails(
        lambda: fetch_client_tls(CLUSTER, "alice"),
        ExitCode.SOURCE_UNAVAILABLE, "secretsmanager:GetSecretValue", ALICE_SECRET, "user/mallory", "access denied",
    )


def test_missing_credentials_say_how_to_log_in(aws, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert_fails(
        lambda: fetch_client_tls(CLUSTER), ExitCode.CONFIG, "sts:GetCallerIdentity", "no usable AWS credentials",
        "aws sso login", "profile=",
    )


def test_an_unknown_profile_is_named(aws):
    assert_fails(lambda: fetch_client_tls(CLUSTER, profile="nosuch"), ExitCode.CONFIG, "'nosuch'")


def test_no_region_says_how_to_set_one(aws, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert_fails(lambda: fetch_client_tls(CLUSTER), ExitCode.CONFIG, "region=", "AWS_REGION")


def test_the_scheduler_address_comes_from_the_worker_spec(aws):
    aws.put_spec(CLUSTER, "worker", {"cluster": CLUSTER, "role": "worker", "scheduler_address": SCHEDULER_ADDRESS})
    assert discover_scheduler_address(CLUSTER) == SCHEDULER_ADDRESS


@pytest.mark.parametrize("override", ["localhost:8786", "tls://localhost:8786"])
def test_a_port_forward_address_overrides_discovery(override):
    assert discover_scheduler_address(CLUSTER, override=override) == "tls://localhost:8786"


def test_a_plaintext_override_is_refused(aws):
    assert_fails(
        lambda: discover_scheduler_address(CLUSTER, override="tcp://localhost:8786"), ExitCode.CONFIG, "tls://"
    )


def test_a_missing_worker_spec_is_named(aws):
    name = conventions.spec_parameter_name(CLUSTER, "worker")
    assert_fails(lambda: discover_scheduler_address(CLUSTER), ExitCode.SPEC_INVALID, name)
