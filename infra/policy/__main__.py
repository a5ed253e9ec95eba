"""The pack the Pulumi CLI runs for ``pulumi preview --policy-pack policy`` (from infra/): every policy mandatory."""

from pulumi_policy import EnforcementLevel, PolicyPack

from daskfleet_policies import PACK_NAME, POLICIES

PolicyPack(
    name=PACK_NAME,
    policies=POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
    description="daskfleet's AWS invariants: encrypted private buckets, no open or SSH ingress, IMDSv2, "
    "encrypted disks, scoped IAM, no secrets in user data.",
)
