"""The scaling policy: the scheduler spec's ``scaling`` section, validated with the rest of the spec."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .defaults import (  # the stack's keys read the defaults here too
    DEFAULT_BOOT_FAILURE_LIMIT,
    DEFAULT_BOOT_FAILURE_WINDOW_S,
    DEFAULT_COOLDOWN_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_LAUNCH_TIMEOUT_S,
    DEFAULT_MAX_STEP_DOWN,
    DEFAULT_NO_CLIENT_TIMEOUT_S,
    DEFAULT_SCALE_DOWN_TARGETS,
)


class ScalingSpec(BaseModel):
    """How the scheduler sizes its workers and when it lets the cluster go idle (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    min_workers: int = Field(default=0, ge=0, le=10_000, description="fewest workers while the cluster is in use")
    max_workers: int = Field(ge=0, le=10_000, description="most workers the adaptive target may ask for")
    cluster_cap: int | None = Field(
        default=None, ge=0, le=10_000, description="most workers whatever the adaptive target and min_workers ask"
    )
    interval_s: float = Field(default=DEFAULT_INTERVAL_S, gt=0, le=3600, description="seconds between decisions")
    cooldown_s: float = Field(
        default=DEFAULT_COOLDOWN_S, ge=0, le=86_400, description="no scale-down this soon after the last scaling action"
    )
    max_step_down: int = Field(
        default=DEFAULT_MAX_STEP_DOWN, ge=1, le=10_000, description="most workers retired in one decision"
    )
    scale_down_targets: int = Field(
        default=DEFAULT_SCALE_DOWN_TARGETS, ge=1, le=1000,
        description="scale-down follows the largest of this many recent adaptive targets",
    )
    launch_timeout_s: float = Field(
        default=DEFAULT_LAUNCH_TIMEOUT_S, gt=0, le=86_400,
        description="a requested worker counts as coming until it registers or this many seconds pass",
    )
    idle_timeout_s: float = Field(
        default=DEFAULT_IDLE_TIMEOUT_S, ge=0, le=30 * 86_400, description="idle after this long without work; 0: never"
    )
    no_client_timeout_s: float = Field(
        default=DEFAULT_NO_CLIENT_TIMEOUT_S, ge=0, le=30 * 86_400,
        description="idle after this long without work and without a connected client; 0: never",
    )

    boot_failure_limit: int = Field(
        default=DEFAULT_BOOT_FAILURE_LIMIT, ge=0, le=1000,
        description="no more workers are asked for once this many from the current launch version failed to start; "
                    "0: never hold",
    )
    boot_failure_window_s: float = Field(
        default=DEFAULT_BOOT_FAILURE_WINDOW_S, gt=0, le=7 * 86_400,
        description="boot failures older than this no longer hold launches",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ScalingSpec:
        if self.min_workers > self.max_workers:
            raise ValueError(f"scaling.min_workers: {self.min_workers} is more than max_workers ({self.max_workers})")
        return self

    @property
    def hard_cap(self) -> int:
        """The most workers ever: the adaptive maximum, lowered by the cluster cap."""
        return self.max_workers if self.cluster_cap is None else min(self.max_workers, self.cluster_cap)
