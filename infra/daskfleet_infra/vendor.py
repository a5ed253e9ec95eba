"""The fleet's certificate vendor: one Lambda function per stack, with its own role, signing every cluster's
short-lived certificates (daskfleet.trust.vendor; its handler is daskfleet.aws.vendor_lambda).

Its role is the only reader of the clusters' CA secrets besides the administrators (break-glass): it may read
each cluster's CA secret, vendor policy and deny-list parameters, decrypt them with the fleet key (through
Secrets Manager and SSM only) and write its own log group; nothing else. People invoke it with their own login
(the member policy allows lambda:InvokeFunction on it); the proof in each request says who they are.

The function's code is the daskfleet package itself (bootstrap/daskfleet), so the local cluster runs the same
code in process, beside its one compiled dependency, cryptography (with cffi), which ``make vendor-deps`` installs
from manylinux wheels of the version uv.lock pins into infra/build/vendor-deps (``make preview``/``up`` run it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

import daskfleet
from daskfleet import conventions
from daskfleet.aws import vendor_lambda

from .config import StackConfigError
from .lookups import Account
from .scheduler_dns import trust_policy

PACKAGE_DIR = Path(daskfleet.__file__).parent
#: Built by ``make vendor-deps``; packed relative to the project directory, as every asset of the program.
DEPENDENCIES_DIR = Path(__file__).resolve().parents[1] / "build" / "vendor-deps"
#: Another directory holding the function's dependencies (built as ``make vendor-deps`` builds them).
DEPENDENCIES_ENV = "DASKFLEET_VENDOR_DEPS"
#: What the handler cannot run without: every node's boot and every login would fail.
REQUIRED_DEPENDENCIES = ("cryptography",)
RUNTIME = "python3.12"
HANDLER = "daskfleet.aws.vendor_lambda.handler"
TIMEOUT_SECONDS = 30
MEMORY_MB = 256


@dataclass(frozen=True)
class CertificateVendorArgs:
    #: The stack's ``cluster``: names the function (conventions.vendor_function_name).
    fleet: str
    account: Account
    clusters: Sequence[str]
    key_arn: pulumi.Input[str]
    log_retention_days: int
    tags: Mapping[str, str] | None = None


def vendor_policy_document(*, account: Account, clusters: Sequence[str], key_arn: str, log_group_arn: str) -> dict[str, Any]:
    """The vendor role's whole policy: its logs, each cluster's CA secret, vendor policy and deny-list, the key."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "OwnLogGroup", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": [log_group_arn, f"{log_group_arn}:*"]},
            {"Sid": "ReadClusterCAs", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
             "Resource": sorted(account.arn("secretsmanager", f"secret:{conventions.ca_secret_name(c)}-??????")
                                for c in clusters)},
            {"Sid": "ReadWhomToSignFor", "Effect": "Allow", "Action": ["ssm:GetParameter"],
             "Resource": sorted(account.arn("ssm", f"parameter{name}") for c in clusters for name in (
                 conventions.vendor_policy_parameter_name(c), conventions.deny_list_parameter_name(c)))},
            {"Sid": "DecryptThroughSecretsManagerAndSsm", "Effect": "Allow", "Action": ["kms:Decrypt"],
             "Resource": [key_arn],
             "Condition": {"StringEquals": {"kms:ViaService": [
                 f"secretsmanager.{account.region}.{account.dns_suffix}", f"ssm.{account.region}.{account.dns_suffix}"]}}},
        ],
    }


def dependencies_dir() -> Path:
    return Path(os.environ.get(DEPENDENCIES_ENV) or DEPENDENCIES_DIR)


def code_archive(dependencies: Path) -> pulumi.AssetArchive:
    """The daskfleet package and, at the archive's root, what ``make vendor-deps`` installed (without metadata).

    Without them the function would deploy and fail every request (a bare ``pulumi up`` skips ``make``): the
    program stops first, saying how to build them."""
    missing = [name for name in REQUIRED_DEPENDENCIES if not (dependencies / name).is_dir()]
    if missing:
        raise StackConfigError(
            f"certificate vendor: {dependencies} holds no {', '.join(missing)} (the function's compiled dependencies); "
            f"run `make vendor-deps` (`make preview` and `make up` run it), or set {DEPENDENCIES_ENV} to where you "
            "built them")
    assets: dict[str, Any] = {"daskfleet": pulumi.FileArchive(os.path.relpath(PACKAGE_DIR))}
    for entry in sorted(dependencies.iterdir()):
        if entry.name in ("bin", "__pycache__") or entry.name.endswith(".dist-info"):
            continue
        path = os.path.relpath(entry)
        assets[entry.name] = pulumi.FileArchive(path) if entry.is_dir() else pulumi.FileAsset(path)
    return pulumi.AssetArchive(assets)


class CertificateVendor(pulumi.ComponentResource):
    """Log group, role and policy, and function of the fleet's certificate vendor."""

    role_arn: pulumi.Output[str]
    function_name: str
    function_arn: pulumi.Output[str]

    def __init__(self, name: str, args: CertificateVendorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:CertificateVendor", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        function = conventions.vendor_function_name(args.fleet)
        logs = aws.cloudwatch.LogGroup(f"{name}-logs", name=f"/aws/lambda/{function}",
                                       retention_in_days=args.log_retention_days, tags=args.tags, opts=child)
        role = aws.iam.Role(f"{name}-role", name=function, assume_role_policy=json.dumps(trust_policy()),
                            description=f"daskfleet {args.fleet}: the certificate vendor (reads the clusters' CA keys)",
                            tags=args.tags, opts=child)
        policy = aws.iam.RolePolicy(
            f"{name}-role", role=role.name, name=f"{conventions.NAME_PREFIX}-cert-vendor",
            policy=pulumi.Output.all(args.key_arn, logs.arn).apply(lambda values: json.dumps(vendor_policy_document(
                account=args.account, clusters=args.clusters, key_arn=values[0], log_group_arn=values[1]))),
            opts=child,
        )
        vendor = aws.lambda_.Function(
            f"{name}-function", name=function, runtime=RUNTIME, handler=HANDLER, role=role.arn,
            description=f"daskfleet {args.fleet}: signs the clusters' short-lived certificates",
            code=code_archive(dependencies_dir()), timeout=TIMEOUT_SECONDS, memory_size=MEMORY_MB,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={
                vendor_lambda.CLUSTERS_ENV: ",".join(sorted(args.clusters)),
            }),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.role_arn = role.arn
        self.function_name = function
        self.function_arn = vendor.arn
        self.register_outputs({"role_arn": self.role_arn, "function_arn": self.function_arn})
