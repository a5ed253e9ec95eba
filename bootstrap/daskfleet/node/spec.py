"""The node spec: what a node needs to know besides its TLS material, validated at the edge."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..environments.policy import RolloutPolicy
from ..scaling.policy import ScalingSpec
from ..usage.policy import UsagePolicy
from .sizing import check_memory_limit


class RevocationPolicy(BaseModel):
    """How the scheduler follows the cluster's deny-list and closes expired peers (``daskfleet.trust.revocation``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    deny_list_poll_s: float = Field(
        default=conventions.DENY_LIST_POLL_SECONDS, gt=0, le=60,
        description="how often the scheduler reads the deny-list (at least once a minute)",
    )
    expiry_sweep_s: float = Field(
        default=conventions.EXPIRY_SWEEP_SECONDS, gt=0, le=60,
        description="how often the scheduler closes connections whose certificate expired",
    )
    deny_list_file: str | None = Field(
        default=None, description="a local cluster's deny-list file; unset: the source's (the SSM parameter on AWS)",
    )


class NodeSpec(BaseModel):
    """Everything a scheduler or worker node is told by its source.

    Unknown keys are errors: a misspelt ``conect_timeout`` must not be silently ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cluster: str = Field(pattern=conventions.CLUSTER_NAME_PATTERN, description="cluster name")
    role: Literal["scheduler", "worker"] = Field(description="which node this spec is for")
    scheduler_address: str | None = Field(
        default=None,
        description="tls://host:port of the scheduler; required for workers",
        pattern=r"^tls://[^/\s]+:\d{1,5}$",
    )
    listen_host: str = Field(default="127.0.0.1", description="address to bind; the AWS source sets the instance's")
    contact_host: str | None = Field(default=None, description="address peers use to reach this node")
    scheduler_port: int = Field(default=conventions.SCHEDULER_PORT, ge=0, le=65535)
    dashboard_port: int = Field(default=conventions.DASHBOARD_PORT, ge=0, le=65535)
    worker_port: int = Field(default=conventions.WORKER_PORT, ge=0, le=65535)
    name: str | None = Field(default=None, description="worker name; defaults to the host name")
    nthreads: int | None = Field(default=None, ge=1, le=1024, description="worker threads; unset: one per core")
    memory_limit: int | str | None = Field(
        default=None,
        description="worker memory limit: bytes, or distributed's form (4GiB, 0.5 of the machine, auto); "
        "unset: all of the machine's memory (daskfleet.node.sizing)",
    )
    connect_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    expected_fingerprint: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="environment fingerprint this node must have; the scheduler's is authoritative",
    )
    client_version_policy: conventions.ClientVersionPolicy = Field(
        default="refuse",
        description="what the scheduler does with a client whose core package versions differ",
    )
    audit_log: str | None = Field(default=None, description="path of the JSON-lines audit log (scheduler)")
    vendor_function: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the Lambda function (the fleet's certificate vendor) that signs this cluster's certificates: a "
        "node gets its own there at boot, proving its instance role; users' logins find it here (AWS only)",
    )
    bucket: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="the fleet's bucket, which holds published environments' packages and, under "
        "clusters/<cluster>/, the cluster's data (AWS)",
    )
    kms_key: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$",
        description="ARN of the fleet's key, which encrypts the bucket's objects (AWS; publishing encrypts with it)",
    )
    usage: UsagePolicy = Field(
        default_factory=UsagePolicy, description="prices, per-user limits and the budget stop (scheduler)"
    )
    rollout: RolloutPolicy = Field(
        default_factory=RolloutPolicy, description="how the scheduler rolls workers onto a published environment",
    )
    revocation: RevocationPolicy = Field(
        default_factory=RevocationPolicy, description="deny-list polling and the expired-peer sweep (scheduler)",
    )
    scaling: ScalingSpec | None = Field(
        default=None, description="adaptive workers and idle shutdown (scheduler); absent: the scheduler sizes nothing",
    )

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"memory_limit: {value} bytes is not a memory limit (a worker always has one)")
            return value
        try:
            return check_memory_limit(value)
        except ValueError as exc:
            raise ValueError(f"memory_limit: {exc}") from None

    @model_validator(mode="after")
    def _worker_needs_scheduler(self) -> NodeSpec:
        if self.role == "worker" and self.scheduler_address is None:
            raise ValueError("scheduler_address: required for a worker")
        if self.role == "worker" and self.scaling is not None:
            raise ValueError("scaling: only a scheduler sizes the cluster; remove it from a worker's spec")
        return self


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(spec)"
    kind = error["type"]
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "extra_forbidden":
        model = ScalingSpec if error["loc"][:1] == ("scaling",) else NodeSpec
        accepted = ", ".join(sorted(model.model_fields))
        return f"{key}: unknown key (accepted keys: {accepted})"
    got = error.get("input")
    message = error["msg"]
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    return f"{key}: {message} (got {got!r})"


def load_spec_document(text: str | bytes, origin: str) -> Mapping[str, Any]:
    """The JSON object a source stores; one ``DaskfleetError`` when it is not one."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DaskfleetError(f"{origin}: not valid JSON ({exc})", ExitCode.SPEC_INVALID) from None
    if not isinstance(raw, Mapping):
        raise DaskfleetError(f"{origin}: expected a JSON object, got {type(raw).__name__}", ExitCode.SPEC_INVALID)
    return raw


def parse_spec(raw: Mapping[str, Any] | str | bytes, origin: str = "node spec") -> NodeSpec:
    """Validate a spec mapping (or its JSON text); one ``DaskfleetError`` naming the key on failure."""
    if isinstance(raw, (str, bytes)):
        raw = load_spec_document(raw, origin)
    if not isinstance(raw, Mapping):
        raise DaskfleetError(f"{origin}: expected a JSON object, got {type(raw).__name__}", ExitCode.SPEC_INVALID)
    try:
        return NodeSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise DaskfleetError(f"{origin}: {problems}", ExitCode.SPEC_INVALID) from None


def dump_spec(spec: NodeSpec) -> str:
    """The JSON text a source stores, without defaults that were never set."""
    return json.dumps(spec.model_dump(exclude_unset=True, exclude_none=True), indent=2, sort_keys=True)
