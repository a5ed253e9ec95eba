"""What the janitor selects, decided purely: expiry, orphans and their grace, inheritance, order."""

from __future__ import annotations

import datetime as dt

import pytest

from daskfleet.ops.leaks import DELETION_ORDER, Found, decide, deletion_plan, parse_expiry, plan_rows

NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.timezone.utc)
OLD = NOW - dt.timedelta(days=3)


def chosen(found, **kwargs):
    return {(d.found.kind, d.found.id): (d.selected, d.reason) for d in decide(found, NOW, **kwargs)}


@pytest.mark.parametrize(("text", "passed"), [
    ("2026-06-14", True), ("2026-06-15", False), ("2026-06-16", False),
    ("2026-06-15T11:00:00Z", True), ("2026-06-15T13:00:00+00:00", False),
])
def test_an_expiry_date_passes_at_the_end_of_that_day_in_utc(text, passed):
    assert (parse_expiry(text) <= NOW) is passed


def test_only_passed_readable_expiries_are_selected():
    found = [Found("vpc", "vpc-1", "a", "2026-06-01"), Found("vpc", "vpc-2", "b", "2099-01-01"),
             Found("vpc", "vpc-3", "c", "next tuesday"), Found("vpc", "vpc-4", "d", None)]
    assert chosen(found) == {
        ("vpc", "vpc-1"): (True, "expired 2026-06-01"),
        ("vpc", "vpc-2"): (False, "expires 2099-01-01"),
        ("vpc", "vpc-3"): (False, "unreadable expiry 'next tuesday'"),
        ("vpc", "vpc-4"): (False, "no expiry"),
    }


def test_a_resource_without_tags_of_its_own_follows_its_clusters_latest_expiry():
    found = [Found("vpc", "vpc-1", "a", "2026-06-01"), Found("subnet", "s-1", "a", "2026-06-10"),
             Found("budget", "daskfleet-a", "a", inherits=True), Found("budget", "daskfleet-b", "b", inherits=True)]
    decisions = chosen(found)
    assert decisions[("budget", "daskfleet-a")] == (True, "expired 2026-06-10")
    assert decisions[("budget", "daskfleet-b")] == (False, "no expiry")  # no tagged resource of b to go by


def test_orphans_are_clusters_without_a_live_stack_older_than_the_grace_period():
    found = [Found("vpc", "vpc-1", "gone", None, OLD), Found("subnet", "s-1", "gone", None),
             Found("vpc", "vpc-2", "new", None, NOW - dt.timedelta(minutes=5)), Found("vpc", "vpc-3", "live", None, OLD),
             Found("vpc", "vpc-4", "unknown-age", None)]
    decisions = chosen(found, live_clusters=frozenset({"live"}), orphan_grace=dt.timedelta(hours=6))
    assert decisions[("vpc", "vpc-1")][0] and decisions[("subnet", "s-1")][0]
    assert decisions[("vpc", "vpc-2")] == (False, "cluster new has no live stack, but is younger than 6h")
    assert not decisions[("vpc", "vpc-3")][0]
    assert not decisions[("vpc", "vpc-4")][0]  # an age that cannot be told is not old enough
    assert not any(selected for selected, _ in chosen(found).values())  # without --orphans, none


def test_the_plan_deletes_holders_first_and_the_table_has_type_id_cluster_expires_age():
    found = [Found(kind, f"{kind}-1", "a", "2026-01-01", OLD) for kind in reversed(DELETION_ORDER)]
    plan = deletion_plan(decide(found, NOW))
    assert [item.kind for item in plan] == list(DELETION_ORDER)
    assert plan_rows(plan[:1], NOW) == [("autoscaling-group", "autoscaling-group-1", "a", "2026-01-01", "3d")]


def test_an_unknown_kind_is_a_bug_not_a_silent_skip():
    with pytest.raises(ValueError, match="unknown kind 'dynamodb-table'"):
        Found("dynamodb-table", "t", "a")
