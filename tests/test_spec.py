"""Node specs: bad input gets one error naming the key, the value and what is accepted."""

from __future__ import annotations

import pytest

from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.node.spec import dump_spec, parse_spec

WORKER = {"cluster": "analytics", "role": "worker", "scheduler_address": "tls://10.0.0.5:8786"}


def _error(raw) -> DaskfleetError:
    with pytest.raises(DaskfleetError) as failure:
        parse_spec(raw)
    assert failure.value.exit_code == ExitCode.SPEC_INVALID
    return failure.value


def test_a_valid_spec_round_trips():
    spec = parse_spec(WORKER)
    assert parse_spec(dump_spec(spec)) == spec


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"cluster": None}, "cluster: required key is missing"),
        ({"nthreads": "4"}, "nthreads: Input should be a valid integer (got '4')"),
        ({"nthreads": 0}, "nthreads: Input should be greater than or equal to 1 (got 0)"),
        ({"role": "client"}, "role: Input should be 'scheduler' or 'worker' (got 'client')"),
        ({"scheduler_address": "tcp://10.0.0.5:8786"}, "scheduler_address: String should match pattern"),
        ({"cluster": "Bad_Name"}, "cluster: String should match pattern"),
        ({"colour": "blue"}, "colour: unknown key (accepted keys: audit_log, bucket, client_version_policy, cluster"),
        ({"client_version_policy": "ignore"}, "client_version_policy: Input should be 'refuse' or 'warn' (got 'ignore')"),
        ({"scheduler_address": None}, "scheduler_address: required for a worker"),
    ],
)
def test_each_bad_spec_names_the_key(change, expected):
    raw = {key: value for key, value in {**WORKER, **change}.items() if value is not None}
    assert expected in str(_error(raw))


def test_several_problems_are_reported_together_in_one_error():
    message = str(_error({"role": "worker", "nthreads": "x", "extra": 1}))
    assert "cluster: required" in message and "nthreads:" in message and "extra: unknown key" in message


def test_non_object_json_is_refused():
    assert "expected a JSON object, got list" in str(_error("[1, 2]"))


def test_stored_specs_hold_only_what_was_set():
    # A source fills unset hosts (the AWS source: the instance's private address); defaults must not be frozen in.
    assert dump_spec(parse_spec(WORKER)) == dump_spec(parse_spec(dict(WORKER)))
    assert "listen_host" not in dump_spec(parse_spec(WORKER))
