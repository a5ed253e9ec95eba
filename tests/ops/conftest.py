"""A region in the tests' moto server holding three clusters: expired, live, and untagged look-alikes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aws.conftest import aws  # noqa: F401  (the moto fixture, shared with tests/aws)
from ops.seed import Seeded, cluster_tags, seed_cluster, snapshot

#: Always in the past / the future, whenever the suite runs.
PAST, FUTURE = "2020-01-01", "2099-12-31"


@dataclass
class Region:
    moto: object
    expired: Seeded
    live: Seeded
    lookalike: Seeded
    before: set


@pytest.fixture
def region(aws) -> Region:  # noqa: F811
    expired = seed_cluster(aws, "old", cluster_tags("old", PAST), cidr="10.64.0.0/16")
    live = seed_cluster(aws, "team", cluster_tags("team", FUTURE), cidr="10.65.0.0/16")
    lookalike = seed_cluster(aws, "ghost", None, cidr="10.66.0.0/16")
    return Region(aws, expired, live, lookalike, snapshot(aws))
