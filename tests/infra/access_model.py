"""Who is who in an evaluated program, for infra.policy_sim: principals with their policies, resources with theirs.

Test machinery (``infra.access_model``). A principal is a cluster's node role (its inline policy,
its tags) or a configured user's login (the managed policies the program attaches to it). A
resource's policy is the bucket policy, the key policy or a secret's policy, as declared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from infra.helpers import provider_default_tags
from infra.policy_sim import Decision, Request, evaluate
from infra.program import ProgramRecord

from daskfleet import conventions

_NODE_ROLE = re.compile(r"^daskfleet-(?P<cluster>[a-z0-9-]+)-(?P<role>scheduler|worker)$")


@dataclass(frozen=True)
class Principal:
    label: str
    arn: str
    #: The cluster it acts for (node roles), or the clusters it is a person of (logins).
    clusters: frozenset[str]
    identity: tuple[dict[str, Any], ...]
    tags: Mapping[str, str] = field(default_factory=dict)


class AccessModel:
    """The declared policies of ``record``, and ``decide(principal, action, resource, context)``."""

    def __init__(self, record: ProgramRecord):
        self.record = record
        self.region = record.config["region"]
        self.bucket = record.one("aws:s3/bucket:Bucket").outputs["arn"]
        self.key = record.one("aws:kms/key:Key").outputs["arn"]

    def _policy(self, resource) -> dict[str, Any]:
        return json.loads(resource.inputs["policy"])

    @cached_property
    def managed(self) -> dict[str, dict[str, Any]]:
        """Managed policy ARN -> its document."""
        return {p.outputs["arn"]: self._policy(p) for p in self.record.of_type("aws:iam/policy:Policy")}

    def _attached(self, kind: str, name: str) -> list[dict[str, Any]]:
        token = {"role": "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
                 "user": "aws:iam/userPolicyAttachment:UserPolicyAttachment"}[kind]
        return [self.managed[a.inputs["policyArn"]] for a in self.record.of_type(token) if a.inputs[kind] == name]

    @cached_property
    def principals(self) -> list[Principal]:
        found = []
        defaults = provider_default_tags(self.record)
        for role in self.record.of_type("aws:iam/role:Role"):
            match = _NODE_ROLE.match(role.inputs["name"])
            if match is None:
                continue
            inline = [self._policy(p) for p in self.record.of_type("aws:iam/rolePolicy:RolePolicy")
                      if p.inputs["role"] == role.outputs["name"]]
            found.append(Principal(
                f"{match['role']} role of {match['cluster']}", role.outputs["arn"], frozenset({match["cluster"]}),
                tuple(inline + self._attached("role", role.outputs["name"])), {**defaults, **(role.inputs.get("tags") or {})},
            ))
        clusters = self.record.outputs["clusters"]
        for entry in self.record.config["users"]:
            user, arn = entry.split("=", 1)
            kind, name = arn.split(":", 5)[-1].split("/", 1)
            mine = frozenset(c for c, out in clusters.items() if user in out["members"] + out["admins"])
            found.append(Principal(f"{user}'s login", arn, mine, tuple(self._attached(kind, name))))
        return found

    def principal(self, label: str) -> Principal:
        (found,) = [p for p in self.principals if p.label == label]
        return found

    @cached_property
    def resource_policies(self) -> dict[str, dict[str, Any]]:
        """Bucket ARN, key ARN and each secret's ARN -> its resource policy."""
        policies = {self.bucket: self._policy(self.record.one("aws:s3/bucketPolicy:BucketPolicy")),
                    self.key: self._policy(self.record.one("aws:kms/key:Key"))}
        for secret_policy in self.record.of_type("aws:secretsmanager/secretPolicy:SecretPolicy"):
            policies[secret_policy.inputs["secretArn"]] = self._policy(secret_policy)
        return policies

    def resource_policy(self, resource: str) -> dict[str, Any] | None:
        if resource.startswith(self.bucket):
            return self.resource_policies[self.bucket]
        return self.resource_policies.get(resource)

    def decide(self, principal: Principal, action: str, resource: str, **context: str) -> Decision:
        values = {"aws:SecureTransport": "true", **{f"aws:PrincipalTag/{k}": v for k, v in principal.tags.items()},
                  **context}
        return evaluate(Request(principal.arn, action, resource, values), principal.identity,
                        self.resource_policy(resource))

    # --- a cluster's resources, as requests ----------------------------------------------------

    def secrets(self, cluster: str) -> dict[str, str]:
        """Secret name -> ARN, of ``cluster``."""
        prefix = conventions.secret_name_prefix(cluster)
        return {s.inputs["name"]: s.outputs["arn"] for s in self.record.of_type("aws:secretsmanager/secret:Secret")
                if s.inputs["name"].startswith(prefix)}

    def operations(self, cluster: str) -> list[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
        """(what, its requests) touching ``cluster``'s data, secrets, parameters, records and groups.

        An operation succeeds only if each of its requests is allowed: reading an object is s3:GetObject
        and, S3 on the caller's behalf, kms:Decrypt in the object's encryption context; reading a secret is
        GetSecretValue and Secrets Manager's kms:Decrypt in the secret's.
        """
        arn = f"arn:aws:%s:{self.region}:123456789012:%s"
        obj = f"{self.bucket}/{conventions.cluster_data_prefix(cluster)}input.csv"
        via_s3, via_sm = f"s3.{self.region}.amazonaws.com", f"secretsmanager.{self.region}.amazonaws.com"
        in_s3 = {"kms:ViaService": via_s3, "kms:EncryptionContext:aws:s3:arn": obj}
        found: list[tuple[str, list[tuple[str, str, dict[str, str]]]]] = [
            ("read an object", [("s3:GetObject", obj, {}), ("kms:Decrypt", self.key, in_s3)]),
            ("write an object", [("s3:PutObject", obj, {}), ("kms:GenerateDataKey", self.key, in_s3)]),
            ("delete an object", [("s3:DeleteObject", obj, {})]),
            ("list the prefix", [("s3:ListBucket", self.bucket, {"s3:prefix": conventions.cluster_data_prefix(cluster)})]),
            ("read the usage records", [("logs:FilterLogEvents",
                                         arn % ("logs", f"log-group:{conventions.log_group_name(cluster)}"), {})]),
            ("wake it", [("autoscaling:SetDesiredCapacity", arn % (
                "autoscaling", f"autoScalingGroup:1:autoScalingGroupName/{conventions.node_group_name(cluster, 'scheduler')}"),
                {f"autoscaling:ResourceTag/{conventions.TAG_CLUSTER}": cluster})]),
        ]
        for name in [*(conventions.spec_parameter_name(cluster, role) for role in conventions.NODE_ROLES),
                     conventions.published_env_parameter_name(cluster)]:
            found.append((f"read {name}", [("ssm:GetParameter", arn % ("ssm", f"parameter{name}"), {})]))
        for name, secret in self.secrets(cluster).items():
            found.append((f"read secret {name}", [
                ("secretsmanager:GetSecretValue", secret, {}),
                ("kms:Decrypt", self.key, {"kms:ViaService": via_sm, "kms:EncryptionContext:SecretARN": secret}),
            ]))
        return found

    def succeeds(self, principal: Principal, requests: list[tuple[str, str, dict[str, str]]]) -> tuple[bool, str]:
        """Whether every request of an operation is allowed, and what decided each."""
        decisions = [self.decide(principal, action, resource, **context) for action, resource, context in requests]
        return all(d.allowed for d in decisions), "; ".join(d.why for d in decisions)

    def decide_by_identity(self, principal: Principal, action: str, resource: str, **context: str) -> Decision:
        """What the principal's own policies alone say (no resource policy to rely on)."""
        values = {"aws:SecureTransport": "true", **{f"aws:PrincipalTag/{k}": v for k, v in principal.tags.items()},
                  **context}
        return evaluate(Request(principal.arn, action, resource, values), principal.identity)
