"""Removing a user from the stack denies them: the removal edit (pure), its provider on moto, and the program."""

from __future__ import annotations

import boto3
import pytest

from daskfleet import conventions
from daskfleet.aws.calls import INSTANCE_ROLE
from daskfleet.aws.denylist import read_deny_list
from daskfleet.trust.denylist import DenyList
from aws.conftest import aws  # noqa: F401  (the moto fixture, shared with tests/aws)
from daskfleet_infra.revocations import STACK_REMOVAL_REASON, StackUsersProvider, removal_edit, stack_author

BY = stack_author("prod")


def test_users_who_left_are_denied_and_only_the_stacks_own_entries_are_lifted():
    operators = DenyList().with_entry("mallory", by="arn:aws:iam::1:user/ops", reason="phished", at=1.0)
    after = removal_edit(operators, previous=["alice", "bob", "mallory"], current=["alice"], by=BY, at=2.0)
    assert after.denies("bob").by == BY and after.denies("bob").reason == STACK_REMOVAL_REASON
    assert after.denies("mallory").reason == "phished"  # an operator's entry stays as it was
    back = removal_edit(after, previous=["alice"], current=["alice", "bob", "mallory"], by=BY, at=3.0)
    assert back.denies("bob") is None  # re-added: the stack's entry is lifted
    assert back.denies("mallory").reason == "phished"  # an operator's revocation is not lifted by the stack
    assert removal_edit(back, ["alice"], ["alice"], BY, 4.0) == back


def test_the_provider_writes_the_deny_list_from_the_previous_users(aws):
    from aws.awsfake import CLUSTER, REGION  # noqa: PLC0415

    provider = StackUsersProvider()
    props = {"cluster": CLUSTER, "region": REGION, "stack": "prod", "users": ["alice", "bob"]}
    created = provider.create(props)
    assert created.id == conventions.deny_list_parameter_name(CLUSTER)
    ssm = boto3.client("ssm", region_name=REGION)
    assert not read_deny_list(ssm, CLUSTER, INSTANCE_ROLE)
    assert provider.diff(created.id, props, {**props, "users": ["alice"]}).changes
    provider.update(created.id, props, {**props, "users": ["alice"]})
    assert read_deny_list(ssm, CLUSTER, INSTANCE_ROLE).denies("bob").by == "pulumi stack prod"
    provider.delete(created.id, props)
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=created.id)
