"""The deny-list document: parsing, the decision and the edits (pure)."""

from __future__ import annotations

import json

import pytest

from daskfleet import conventions
from daskfleet.errors import DaskfleetError
from daskfleet.trust.denylist import DenyList


def test_round_trip_and_decision():
    denied = DenyList().with_entry("alice", by="ops", reason="laptop stolen", at=1_700_000_000)
    again = DenyList.from_json(denied.to_json())
    assert again.denies("alice").by == "ops" and again.denies("alice").reason == "laptop stolen"
    assert again.denies("bob") is None and again.denies(None) is None
    assert json.loads(again.to_json()) == {"users": {"alice": {"revoked_at": 1_700_000_000.0, "by": "ops",
                                                               "reason": "laptop stolen"}}}
    assert "revoked at 2023-11-14T22:13:20Z by ops: laptop stolen" == again.denies("alice").describe()


def test_edits_keep_the_first_revocation_and_lift():
    first = DenyList().with_entry("alice", "ops", "first", 1.0)
    assert first.with_entry("alice", "other", "second", 2.0).denies("alice").reason == "first"
    assert first.without("alice").denies("alice") is None
    assert first.without("nobody") == first


@pytest.mark.parametrize("text", [None, "", "  \n"])
def test_nothing_stored_denies_nobody(text):
    assert not DenyList.from_json(text)


@pytest.mark.parametrize(("text", "named"), [
    ("not json", "not JSON"),
    ('{"user": {}}', "'users'"),
    ('{"users": []}', "users: expected an object"),
    ('{"users": {"Alice!": {"revoked_at": 1}}}', "users.Alice!"),
    ('{"users": {"alice": {"by": "ops"}}}', "users.alice: expected an object with revoked_at"),
    ('{"users": {"alice": {"revoked_at": "yesterday"}}}', "users.alice.revoked_at: 'yesterday'"),
    ('{"users": {"alice": {"revoked_at": 1, "by": 3}}}', "users.alice: by and reason must be strings"),
])
def test_bad_documents_name_what_is_wrong(text, named):
    with pytest.raises(DaskfleetError) as caught:
        DenyList.from_json(text, "SSM parameter /x")
    assert caught.value.message.startswith("SSM parameter /x") and named in caught.value.message


def test_bad_user_name_refused():
    with pytest.raises(DaskfleetError, match="USER: 'Bad User'"):
        DenyList().with_entry("Bad User", "ops", "", 0)


def test_conventions():
    assert conventions.deny_list_parameter_name("prod") == "/daskfleet/prod/deny-list"
    assert conventions.deny_list_parameter_name("prod").startswith(conventions.parameter_path_prefix("prod"))
    assert conventions.DENY_LIST_POLL_SECONDS <= 60 and conventions.EXPIRY_SWEEP_SECONDS <= 60
