"""The AWS worker backend: the scheduler's scaler grows its worker group and ends exactly the workers it retired.

Workers are named after their instance ids (``daskfleet.aws.source``), so a retired worker's
instance is known without a lookup. Scale-up raises the group's desired capacity
(``SetDesiredCapacity``); scale-down terminates the retired workers' instances with
``ShouldDecrementDesiredCapacity`` (the group's scale-in protection keeps the group from picking
any other), then completes their drain hook, since the worker already handed over its data.
When the cluster is idle with no worker left, the scheduler sets its own group to 0. Workers
that stopped for good report it to the cluster's log group (``daskfleet.aws.nodefailures``);
read back per launch template version, they let the scaler stop asking for workers that keep
failing, and take back the desired capacity the group would otherwise keep replacing.
Every call goes through the instance role, scoped to this cluster's groups.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..scaling.core import BootFailure, LaunchFailures
from .calls import INSTANCE_ROLE, call_aws
from .nodefailures import launch_versions, read_failures, template_version

logger = logging.getLogger("daskfleet.scaling")

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
#: How long to wait for terminated instances to reach the drain hook, to let them go at once.
HOOK_WAIT_S = 60.0
HOOK_POLL_S = 2.0
WAITING_ON_HOOK = "Terminating:Wait"
#: Lifecycle states of an instance just told to terminate that has not reached the drain hook yet.
STILL_ON_ITS_WAY = frozenset({"InService", "Terminating"})


class AutoScalingWorkers:
    """WorkerBackend for the cluster's worker group (``conventions.node_group_name(cluster, "worker")``)."""

    restarts_switching_workers = True  # the instance's unit restarts the agent into the new environment

    def __init__(self, cluster: str, client: Callable[[str], Any], *, hook_wait_s: float = HOOK_WAIT_S):
        self.cluster = cluster
        self._client = client
        self.hook_wait_s = hook_wait_s
        self.worker_group = conventions.node_group_name(cluster, "worker")
        self.scheduler_group = conventions.node_group_name(cluster, "scheduler")

    def describe(self) -> str:
        return f"auto scaling group {self.worker_group}"

    def outstanding(self) -> int:
        """Every instance the group wants will run a worker that registers."""
        return int(self.group(self.worker_group)["DesiredCapacity"])

    def launch(self, count: int) -> int:
        """Raise the group's desired capacity by ``count``, at most to its maximum; how many more were asked for."""
        group = self.group(self.worker_group)
        current, most = int(group["DesiredCapacity"]), int(group["MaxSize"])
        desired = min(current + count, most)
        if desired < current + count:
            logger.warning("%s: %d more workers asked for, the group's maximum %d allows %d", self.worker_group,
                           count, most, desired - current)
        if desired > current:
            self._set_desired(self.worker_group, desired)
        return desired - current

    def remove(self, names: Sequence[str]) -> None:
        """Terminate exactly these retired workers' instances, lowering the desired capacity with each."""
        instances = [name for name in names if INSTANCE_ID.fullmatch(name)]
        for name in sorted(set(names) - set(instances)):
            logger.warning("retired worker %r is not named after an instance id; its instance is left alone", name)
        for instance in instances:
            self._terminate(instance)
        self._complete_drain_hooks(instances)

    def stop_scheduler(self) -> str | None:
        """Idle with no registered worker: end any instance still in the worker group, then the scheduler's own."""
        group = self.group(self.worker_group)
        leftovers = sorted(
            item["InstanceId"] for item in group.get("Instances", []) if not item["LifecycleState"].startswith("Terminat")
        )
        for instance in leftovers:  # booting, or never registered: nothing on them to keep
            self._terminate(instance)
        self._complete_drain_hooks(leftovers)
        if int(self.group(self.worker_group)["DesiredCapacity"]) > 0:
            self._set_desired(self.worker_group, 0)
        self._set_desired(self.scheduler_group, 0)
        ended = f"terminated {len(leftovers)} unregistered worker instance(s) ({', '.join(leftovers)}); " if leftovers else ""
        return f"{ended}set the desired capacity of {self.worker_group} and {self.scheduler_group} to 0"

    def launch_failures(self, since: float) -> LaunchFailures:
        """Workers that stopped for good since ``since``, each with its launch template version, and the group's own."""
        failures = read_failures(self._client("logs"), self.cluster, since, INSTANCE_ROLE, role="worker")
        versions = launch_versions(self._client("ec2"), [f.instance for f in failures], INSTANCE_ROLE)
        seen = tuple(BootFailure(f.instance, versions.get(f.instance, "an unknown launch template version"), f.at, f.code,
                                 f.line) for f in failures)
        return LaunchFailures(self.current_version(seen), seen)

    def current_version(self, seen: tuple[BootFailure, ...] = ()) -> str:
        """The launch template version the worker group starts new instances from (a named one: the newest failure's)."""
        group = self.group(self.worker_group)
        spec = group.get("LaunchTemplate") or (
            group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {}).get("LaunchTemplateSpecification", {}))
        version = str(spec.get("Version", ""))
        if spec.get("LaunchTemplateId") and version.isdigit():
            return template_version(spec["LaunchTemplateId"], version)
        return seen[-1].version if seen else "the group's launch template"

    def withdraw(self, count: int) -> None:
        """Lower the desired capacity by ``count``: the group stops replacing instances that keep failing to start."""
        current = int(self.group(self.worker_group)["DesiredCapacity"])
        if current > 0:
            self._set_desired(self.worker_group, max(0, current - count))

    # --- calls ---------------------------------------------------------------------------------------

    def group(self, name: str) -> dict[str, Any]:
        response = call_aws(
            self._client("autoscaling"), "DescribeAutoScalingGroups", f"auto scaling group {name}", INSTANCE_ROLE,
            missing=ExitCode.SOURCE_UNAVAILABLE, AutoScalingGroupNames=[name],
        )
        groups = response.get("AutoScalingGroups") or []
        if not groups:
            raise DaskfleetError(f"auto scaling group {name}: not found", ExitCode.SOURCE_UNAVAILABLE)
        return groups[0]

    def _set_desired(self, name: str, desired: int) -> None:
        call_aws(
            self._client("autoscaling"), "SetDesiredCapacity", f"auto scaling group {name}", INSTANCE_ROLE,
            missing=ExitCode.SOURCE_UNAVAILABLE, AutoScalingGroupName=name, DesiredCapacity=desired,
            HonorCooldown=False,
        )
        logger.info("%s: desired capacity %d", name, desired)

    def _terminate(self, instance: str) -> None:
        call_aws(
            self._client("autoscaling"), "TerminateInstanceInAutoScalingGroup", f"instance {instance}", INSTANCE_ROLE,
            missing=ExitCode.SOURCE_UNAVAILABLE, InstanceId=instance, ShouldDecrementDesiredCapacity=True,
        )
        logger.info("%s: terminating %s", self.worker_group, instance)

    def _complete_drain_hooks(self, instances: Sequence[str]) -> None:
        """Its worker has retired already: let each instance go now rather than at the drain hook's timeout."""
        pending = set(instances)
        deadline = time.monotonic() + self.hook_wait_s
        while pending:
            response = call_aws(
                self._client("autoscaling"), "DescribeAutoScalingInstances", "", INSTANCE_ROLE,
                missing=ExitCode.SOURCE_UNAVAILABLE, InstanceIds=sorted(pending),
            )
            states = {item["InstanceId"]: item["LifecycleState"] for item in response.get("AutoScalingInstances", [])}
            for instance in sorted(pending):
                state = states.get(instance)
                if state == WAITING_ON_HOOK:
                    self._complete_hook(instance)
                if state not in STILL_ON_ITS_WAY:
                    pending.discard(instance)  # at the hook (completed now), past it, or gone
            if pending and time.monotonic() + HOOK_POLL_S > deadline:
                logger.warning("%s: %s leave at the drain hook's timeout", self.worker_group, ", ".join(sorted(pending)))
                return
            if pending:
                time.sleep(HOOK_POLL_S)

    def _complete_hook(self, instance: str) -> None:
        try:
            call_aws(
                self._client("autoscaling"), "CompleteLifecycleAction",
                f"lifecycle hook {conventions.DRAIN_HOOK_NAME} of {self.worker_group}", INSTANCE_ROLE,
                missing=ExitCode.SOURCE_UNAVAILABLE, LifecycleHookName=conventions.DRAIN_HOOK_NAME,
                AutoScalingGroupName=self.worker_group, InstanceId=instance, LifecycleActionResult="CONTINUE",
            )
        except DaskfleetError as exc:  # the instance still goes, at the hook's timeout
            logger.warning("%s: could not complete the drain hook of %s: %s", self.worker_group, instance, exc)
