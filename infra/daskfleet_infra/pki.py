"""The cluster's PKI with pulumi-tls, and where its keys live: Secrets Manager, under the cluster key.

A per-cluster CA (ECDSA P-256) is kept in its own secret (conventions.ca_secret_name), readable only by the
fleet's certificate vendor (daskfleet.trust.vendor, a Lambda function) and the administrators (break-glass). The
CA key is the only private key the stack makes. The vendor signs every certificate, short-lived, for a key made
where it is used: a person's on their machine (at most 24 h), a node's at its boot (24 h, renewed by its agent).
No user's or node's private key exists here, in Secrets Manager or in the Pulumi state. Whom the vendor signs
for is the cluster's vendor policy (conventions.vendor_policy_parameter_name: the people's principals, the
admins, the node roles, the metrics scrapers).

Each person keeps a membership record (conventions.client_tls_secret_name: the CA certificate and their role, no
key), tagged with their name so that ``daskfleet clusters`` finds their clusters.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from daskfleet import conventions
from daskfleet.trust.vendor import VendorPolicy

from .config import User

#: The vendor's validity for people's certificates unless the stack sets ``clientCertificateHours``.
CLIENT_CERT_HOURS = conventions.CLIENT_CERT_VALIDITY_HOURS
KEY_ALGORITHM = "ECDSA"
KEY_CURVE = "P256"


@dataclass(frozen=True)
class PkiArgs:
    cluster: str
    users: Sequence[User]
    #: node role -> its IAM role ARN: the vendor signs that role's certificates for it alone.
    node_role_arns: Mapping[str, pulumi.Input[str]]
    #: Principals that may read every secret back (the deployer and configured operators).
    administrator_arns: Sequence[str]
    key_arn: pulumi.Input[str]
    scheduler_dns_name: str
    #: Ephemeral stacks delete their secrets at once, so the cluster name is free again.
    ephemeral: bool
    #: Users (by name) issued an admin certificate; the others a member one.
    admins: Set[str] = frozenset()
    tags: Mapping[str, str] | None = None
    #: The fleet's certificate vendor role: the only reader of the CA secret besides the administrators.
    vendor_role_arn: pulumi.Input[str] = ""
    client_cert_hours: float = CLIENT_CERT_HOURS
    #: Principals the vendor signs a read-only ``metrics`` certificate for (the stack's ``metricsScrapers``).
    metrics_principals: Sequence[str] = ()


def secret_policy(readers: Sequence[str], administrators: Sequence[str]) -> dict[str, Any]:
    """Readers may read the secret; nobody else may, except the administrators ("*" means this secret)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadersReadTheSecret",
                "Effect": "Allow",
                "Principal": {"AWS": sorted(set(readers))},
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": "*",
            },
            {
                "Sid": "NobodyElseReadsTheSecret",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": sorted(set(readers) | set(administrators))}},
            },
        ],
    }


class Pki(pulumi.ComponentResource):
    """The CA, its secret (the vendor's), the vendor's policy and the people's membership records."""

    ca_cert_pem: pulumi.Output[str]
    #: user -> the ARN of their membership record (CA certificate and role; no key).
    client_secret_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: PkiArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Pki", name, None, opts)
        self._prefix, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        self._ca_key = tls.PrivateKey(f"{name}-ca", algorithm=KEY_ALGORITHM, ecdsa_curve=KEY_CURVE, opts=self._child)
        self._ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=self._ca_key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"{args.cluster} cluster CA", organization=conventions.CERT_ORGANIZATION,
            ),
            is_ca_certificate=True,
            validity_period_hours=conventions.CA_VALIDITY_HOURS,
            allowed_uses=list(conventions.CA_ALLOWED_USES),
            set_subject_key_id=True,
            opts=self._child,
        )
        self.ca_cert_pem = self._ca.cert_pem
        self._secret(
            "ca", "the CA (for the certificate vendor)", conventions.ca_secret_name(args.cluster),
            pulumi.Output.all(self._ca.cert_pem, self._ca_key.private_key_pem_pkcs8).apply(
                lambda pems: json.dumps({"cert": pems[0], "key": pems[1]})),
            readers=[args.vendor_role_arn],
        )
        self.client_secret_arns = {
            user.name: self._secret(
                f"client-{user.name}", f"membership of {user.name}",
                conventions.client_tls_secret_name(args.cluster, user.name),
                self._ca.cert_pem.apply(lambda ca, user=user: json.dumps({
                    "ca": ca, "user": user.name,
                    "role": conventions.ADMIN_ROLE if user.name in args.admins else conventions.MEMBER_ROLE,
                })),
                readers=[user.principal_arn], user=user.name,
            )
            for user in args.users
        }
        self.vendor_policy = aws.ssm.Parameter(
            f"{name}-vendor-policy",
            name=conventions.vendor_policy_parameter_name(args.cluster),
            description=f"daskfleet {args.cluster}: whom the certificate vendor signs for",
            type="String",
            value=pulumi.Output.all(*(args.node_role_arns[role] for role in conventions.NODE_ROLES)).apply(
                lambda arns: vendor_policy(args, dict(zip(conventions.NODE_ROLES, arns))).to_json()),
            tags=args.tags,
            opts=self._child,
        )
        self.register_outputs({
            "ca_cert_pem": self.ca_cert_pem,
            "client_secret_arns": self.client_secret_arns,
        })

    def _secret(
        self, label: str, what: str, secret_name: str, value: pulumi.Output[str], *,
        readers: Sequence[pulumi.Input[str]], user: str | None = None,
    ) -> pulumi.Output[str]:
        """A secret holding ``value``, readable by ``readers`` (and the administrators) alone; its ARN."""
        args, name = self._args, f"{self._prefix}-{label}"
        secret = aws.secretsmanager.Secret(
            name, name=secret_name, description=f"daskfleet {args.cluster}: {what}", kms_key_id=args.key_arn,
            recovery_window_in_days=0 if args.ephemeral else 7,
            tags={**(args.tags or {}), conventions.TAG_USER: user} if user else args.tags,
            opts=self._child,
        )
        aws.secretsmanager.SecretVersion(name, secret_id=secret.id, secret_string=pulumi.Output.secret(value),
                                         opts=self._child)
        aws.secretsmanager.SecretPolicy(
            name, secret_arn=secret.arn, block_public_policy=True,
            policy=pulumi.Output.all(*readers).apply(lambda arns: json.dumps(secret_policy(arns, args.administrator_arns))),
            opts=self._child,
        )
        return secret.arn


def vendor_policy(args: PkiArgs, node_role_arns: Mapping[str, str]) -> VendorPolicy:
    """Whom the vendor signs for in this cluster: its people by principal (admins apart), its node roles, its
    metrics scrapers."""
    return VendorPolicy(
        cluster=args.cluster, users={user.name: user.principal_arn for user in args.users},
        admins=frozenset(args.admins), node_roles=dict(node_role_arns), metrics_principals=tuple(args.metrics_principals),
        client_validity=dt.timedelta(hours=args.client_cert_hours),
        node_validity=dt.timedelta(hours=conventions.NODE_CERT_VALIDITY_HOURS),
        scheduler_dns_names=(args.scheduler_dns_name,),
    )
