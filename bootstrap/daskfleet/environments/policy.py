"""How a scheduler rolls its workers onto a newly published environment: the ``rollout`` section of its spec."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RolloutPolicy(BaseModel):
    """Unknown keys are errors, like everywhere in a node spec."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_fraction: float = Field(
        default=0.25, gt=0, le=1, description="the most workers switching at once, as a fraction (at least one)",
    )
    poll_s: float = Field(default=10.0, gt=0, le=3600, description="how often the scheduler reads the published pointer")
    switch_timeout_s: float = Field(
        default=900.0, gt=0, le=86400, description="how long a switching worker may take to come back before it counts as failed",
    )
