"""The node agent's AWS source against a moto server and a local IMDSv2 endpoint."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from aws.awsfake import CLUSTER, PRIVATE_IPV4, REGION, SCHEDULER_ADDRESS, assert_fails, secret_texts

from daskfleet import conventions
from daskfleet.trust import pki
from daskfleet.aws.source import IMDS_ENDPOINT_ENV, AwsSource
from daskfleet.errors import ExitCode
from daskfleet.cli import make_source
from daskfleet.node.spec import parse_spec

WORKER_SPEC = {"cluster": CLUSTER, "role": "worker", "scheduler_address": SCHEDULER_ADDRESS}
SPEC_NAME = conventions.spec_parameter_name(CLUSTER, "worker")
SECRET_NAME = conventions.node_tls_secret_name(CLUSTER, "worker")


@pytest.fixture
def stored_worker(aws, cluster_pki):
    """The worker's spec and TLS secret, as the Pulumi program stores them."""
    aws.put_spec(CLUSTER, "worker", WORKER_SPEC)
    aws.put_secret(SECRET_NAME, cluster_pki["worker"].to_secret_json())
    return aws


def test_make_source_registers_aws_and_takes_the_cluster_from_the_command_line(imds):
    source = make_source(f"aws:{CLUSTER}")
    assert isinstance(source, AwsSource)
    assert source.cluster == CLUSTER
    assert source.imds_endpoint == imds.url


def test_a_missing_or_bad_cluster_name_is_a_config_error_naming_it():
    assert_fails(lambda: make_source("aws:"), ExitCode.CONFIG, "'aws:'")
    assert_fails(lambda: make_source("aws:Bad_Name"), ExitCode.CONFIG, "'Bad_Name'", conventions.CLUSTER_NAME_PATTERN)


def test_spec_and_tls_come_from_ssm_and_secrets_manager_through_imdsv2(stored_worker, imds, cluster_pki):
    source = make_source(f"aws:{CLUSTER}")

    spec = parse_spec(source.fetch_spec("worker"), origin="test")
    tls = source.fetch_tls("worker")

    assert spec.scheduler_address == SCHEDULER_ADDRESS
    assert (spec.listen_host, spec.contact_host) == (PRIVATE_IPV4, PRIVATE_IPV4)
    assert tls == cluster_pki["worker"]
    pki.check_node_certificate(tls.ca_pem, tls.cert_pem, tls.key_pem, cluster=CLUSTER, role="worker", origin="test")
    reads = [request for request in imds.requests if request[0] == "GET"]
    assert reads and all(had_token for _, _, had_token in reads)
    assert ("GET", f"/latest/meta-data/tags/instance/{conventions.TAG_CLUSTER}", True) in imds.requests


def test_hosts_the_stored_spec_sets_are_kept(aws, imds):
    aws.put_spec(CLUSTER, "worker", {**WORKER_SPEC, "listen_host": "0.0.0.0", "contact_host": "10.9.9.9"})
    raw = make_source(f"aws:{CLUSTER}").fetch_spec("worker")
    assert (raw["listen_host"], raw["contact_host"]) == ("0.0.0.0", "10.9.9.9")


@pytest.mark.parametrize(
    ("tag", "value", "asked"),
    [(conventions.TAG_CLUSTER, "other-team", CLUSTER), (conventions.TAG_ROLE, "scheduler", "worker")],
)
def test_tags_that_disagree_with_the_command_line_are_refused_naming_both(stored_worker, imds, tag, value, asked):
    imds.tags[tag] = value
    source = make_source(f"aws:{CLUSTER}")
    for fetch in (source.fetch_spec, source.fetch_tls):
        assert_fails(lambda: fetch("worker"), ExitCode.SPEC_INVALID, tag, repr(value), repr(asked), imds.instance_id)


def test_a_missing_cluster_tag_is_refused_naming_it(stored_worker, imds):
    del imds.tags[conventions.TAG_CLUSTER]
    source = make_source(f"aws:{CLUSTER}")
    assert_fails(lambda: source.fetch_spec("worker"), ExitCode.SPEC_INVALID, conventions.TAG_CLUSTER)


def test_tags_hidden_from_instance_metadata_say_how_to_expose_them(stored_worker, imds):
    imds.tags_enabled = False
    assert_fails(
        lambda: make_source(f"aws:{CLUSTER}").fetch_spec("worker"),
        ExitCode.SOURCE_UNAVAILABLE, "instance_metadata_tags", "HTTP 404",
    )


def test_a_missing_spec_parameter_is_named(aws, imds):
    assert_fails(lambda: make_source(f"aws:{CLUSTER}").fetch_spec("worker"), ExitCode.SPEC_INVALID, SPEC_NAME, REGION)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_spec_parameter_that_is_not_a_json_object_is_named(aws, imds, text):
    aws.put_spec(CLUSTER, "worker", text)
    assert_fails(lambda: make_source(f"aws:{CLUSTER}").fetch_spec("worker"), ExitCode.SPEC_INVALID, SPEC_NAME)


def test_a_missing_tls_secret_is_named(aws, imds):
    assert_fails(lambda: make_source(f"aws:{CLUSTER}").fetch_tls("worker"), ExitCode.CERT_UNREADABLE, SECRET_NAME)


def test_a_malformed_tls_secret_is_named_without_its_contents(aws, imds, cluster_pki):
    worker = cluster_pki["worker"]
    aws.put_secret(SECRET_NAME, json.dumps({"ca": worker.ca_pem, "cert": worker.cert_pem, "kee": worker.key_pem}))
    assert_fails(
        lambda: make_source(f"aws:{CLUSTER}").fetch_tls("worker"),
        ExitCode.CERT_UNREADABLE, SECRET_NAME, never=secret_texts(worker),
    )


def test_an_unreachable_metadata_endpoint_fails_naming_it(stored_worker, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv(IMDS_ENDPOINT_ENV, closed)
    assert_fails(
        lambda: make_source(f"aws:{CLUSTER}").fetch_spec("worker"),
        ExitCode.SOURCE_UNAVAILABLE, closed, "IMDSv2", "Connection refused",
    )


def test_an_imdsv1_only_endpoint_is_refused_without_falling_back(stored_worker, imds):
    imds.issue_tokens = False
    source = make_source(f"aws:{CLUSTER}")
    assert_fails(lambda: source.fetch_spec("worker"), ExitCode.SOURCE_UNAVAILABLE, imds.url, "token")
    assert [method for method, _, _ in imds.requests] and all(method == "PUT" for method, _, _ in imds.requests)


def test_one_session_token_serves_every_read_of_a_source(stored_worker, imds):
    source = make_source(f"aws:{CLUSTER}")
    source.fetch_spec("worker")
    source.fetch_tls("worker")
    assert source.leaving() is None and source.leaving() is None
    methods = [method for method, _, _ in imds.requests]
    assert methods.count("PUT") == 1 and methods.count("GET") >= 10


def test_a_token_the_service_no_longer_accepts_is_replaced(imds):
    source = make_source(f"aws:{CLUSTER}")
    assert source.leaving() is None
    imds._tokens.clear()  # as after the token's lifetime
    imds.extra[LIFECYCLE_STATE] = "Terminated"
    assert source.leaving() == "its auto scaling group is terminating it"
    assert [method for method, _, _ in imds.requests].count("PUT") == 2


def test_a_burst_of_unavailable_answers_is_retried(stored_worker, imds):
    imds.unavailable_for = 2  # two 503s to the token's PUT; its third attempt succeeds
    spec = make_source(f"aws:{CLUSTER}").fetch_spec("worker")
    assert spec["scheduler_address"] == SCHEDULER_ADDRESS


def test_retries_are_bounded_and_the_last_answer_is_named(stored_worker, imds):
    imds.unavailable_for = 100
    assert_fails(lambda: make_source(f"aws:{CLUSTER}").fetch_spec("worker"),
                 ExitCode.SOURCE_UNAVAILABLE, "IMDSv2", "token", "HTTP 503")
    assert [method for method, _, _ in imds.requests] == ["PUT"] * 4  # one attempt and three retries


def test_a_slow_metadata_endpoint_runs_into_the_deadline(stored_worker, imds):
    imds.delay_s = 0.15
    source = AwsSource(CLUSTER, deadline_s=0.3)
    assert_fails(
        lambda: source.fetch_spec("worker"), ExitCode.SOURCE_UNAVAILABLE, "gave up after 0.3 s", "instance metadata"
    )


def test_access_denied_names_the_action_and_the_secret(stored_worker, imds, monkeypatch):
    credentials = stored_worker.iam_user("worker-role", allow=["ssm:GetParameter"])
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    stored_worker.enforce_iam()
    source = make_source(f"aws:{CLUSTER}")

    assert source.fetch_spec("worker")["scheduler_address"] == SCHEDULER_ADDRESS
    assert_fails(
        lambda: source.fetch_tls("worker"),
        ExitCode.SOURCE_UNAVAILABLE, "secretsmanager:GetSecretValue", SECRET_NAME, "access denied",
    )


def test_no_pem_text_reaches_a_log_even_at_debug(stored_worker, imds, cluster_pki, caplog):
    caplog.set_level(logging.DEBUG)
    make_source(f"aws:{CLUSTER}").fetch_tls("worker")
    assert "daskfleet.aws.source" in {record.name for record in caplog.records}
    for text in secret_texts(cluster_pki["worker"]) + ["-----BEGIN"]:
        assert text not in caplog.text


def test_the_imds_fixture_refuses_reads_without_a_token(imds):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{imds.url}/latest/meta-data/instance-id", timeout=5)
    assert info.value.code == 401


LIFECYCLE_STATE = "meta-data/autoscaling/target-lifecycle-state"
SPOT_ACTION = "meta-data/spot/instance-action"


def test_an_instance_in_service_is_not_leaving(imds):
    source = make_source(f"aws:{CLUSTER}")
    assert source.leaving() is None
    imds.extra[LIFECYCLE_STATE] = "InService"
    assert source.leaving() is None


def test_the_drain_hook_and_spot_notices_are_read_from_instance_metadata(imds):
    source = make_source(f"aws:{CLUSTER}")
    imds.extra[SPOT_ACTION] = json.dumps({"action": "terminate", "time": "2026-11-26T14:10:00Z"})
    assert source.leaving() == "spot interruption notice (terminate at 14:10:00 UTC)"
    imds.extra[LIFECYCLE_STATE] = "Terminated"
    assert source.leaving() == "its auto scaling group is terminating it"


def test_a_drained_worker_completes_its_groups_drain_hook(aws, imds, monkeypatch):
    # moto does not implement CompleteLifecycleAction, so this one call is checked with botocore's Stubber.
    import boto3
    from botocore.stub import Stubber

    autoscaling = boto3.client("autoscaling", region_name=REGION)
    monkeypatch.setattr(AwsSource, "client", lambda self, service: autoscaling)
    source = make_source(f"aws:{CLUSTER}")
    with Stubber(autoscaling) as stub:
        source.left()  # not leaving: nothing to complete
        imds.extra[LIFECYCLE_STATE] = "Terminated"
        assert source.leaving()
        stub.add_response("complete_lifecycle_action", {}, {
            "LifecycleHookName": conventions.DRAIN_HOOK_NAME,
            "AutoScalingGroupName": conventions.node_group_name(CLUSTER, "worker"),
            "InstanceId": imds.instance_id,
            "LifecycleActionResult": "CONTINUE",
        })
        source.left()
        stub.assert_no_pending_responses()


def test_audit_lines_reach_the_clusters_log_group(aws, imds):
    logs = aws.client("logs")
    group = conventions.log_group_name(CLUSTER)
    logs.create_log_group(logGroupName=group)
    imds.tags[conventions.TAG_ROLE] = "scheduler"
    forward = make_source(f"aws:{CLUSTER}").audit_forwarder()
    forward('{"event": "client-connect", "identity": "alice"}')
    forward('{"event": "graph-submitted", "identity": "alice", "tasks": 3}')
    forward.close()
    events = logs.get_log_events(logGroupName=group, logStreamName=f"audit/{imds.instance_id}")["events"]
    assert [json.loads(e["message"])["event"] for e in events] == ["client-connect", "graph-submitted"]


def test_audit_lines_wait_while_cloudwatch_is_unreachable(aws, imds):
    # No log group yet: every put fails; the line waits (tried again), the caller is never blocked or failed.
    import time

    imds.tags[conventions.TAG_ROLE] = "scheduler"
    forward = make_source(f"aws:{CLUSTER}").audit_forwarder()
    forward('{"event": "client-connect"}')
    assert forward.pending == 1
    aws.client("logs").create_log_group(logGroupName=conventions.log_group_name(CLUSTER))
    deadline = time.monotonic() + 30
    while forward.sent < 1:
        assert time.monotonic() < deadline, "the waiting line never reached CloudWatch Logs"
        time.sleep(0.1)
    forward.close()
    assert forward.dropped == 0


def _usage_line(end_ts: float, user: str, cost: float, compute_s: float) -> str:
    return json.dumps({
        "event": "usage", "start_ts": end_ts - 300, "end_ts": end_ts, "idle_s": 0.0, "scheduler_s": 300.0,
        "scheduler_cost_usd": 0.01, "workers": [{"instance_type": "m7i.xlarge", "purchase": "spot", "seconds": 300.0}],
        "users": {user: {"tasks": 2, "compute_s": compute_s, "worker_s": 300.0, "cost_usd": cost}},
    })


def test_usage_records_outlive_the_scheduler_in_the_clusters_log_group(aws, imds, tmp_path):
    # One scheduler writes its records; the next (a new instance) reads this month's back, and so does a user.
    import time

    from daskfleet.aws.usagerecords import recorded_usage_lines
    from daskfleet.usage.records import carried, parse_lines, summarize

    logs = aws.client("logs")
    group = conventions.log_group_name(CLUSTER)
    logs.create_log_group(logGroupName=group)
    imds.tags[conventions.TAG_ROLE] = "scheduler"
    imds.instance_type, imds.life_cycle = "m7i.large", "on-demand"
    first = make_source(f"aws:{CLUSTER}")
    assert first.instance_kind() == ("m7i.large", "on-demand")
    forward = first.usage_forwarder()
    now = time.time()
    forward(_usage_line(now - 60, "alice", 1.5, 120.0))
    forward(_usage_line(now - 30, "bob", 0.5, 60.0))
    forward.close()
    assert {s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]} == {
        f"usage/{imds.instance_id}"}
    imds.instance_id = "i-0fedcba9876543210"
    history = make_source(f"aws:{CLUSTER}").usage_history(now - 3600)
    month_cost, day_compute = carried(parse_lines(history), now)
    assert month_cost == pytest.approx(2.02) and day_compute == {"alice": 120.0, "bob": 60.0}
    users = summarize(parse_lines(recorded_usage_lines(CLUSTER, now - 3600, region=REGION))).users
    assert (users["alice"].cost_usd, users["bob"].tasks) == (1.5, 2)


def test_a_worker_reports_its_instance_type_and_purchase_option(aws, imds):
    imds.life_cycle = "spot"
    assert make_source(f"aws:{CLUSTER}").instance_kind() == ("m7i.xlarge", "spot")
