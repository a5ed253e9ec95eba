"""The CI role: trusted by one repository's branches and pull requests through GitHub's OIDC provider."""

import pulumi

from ci_role import CiRole, CiRoleArgs

config = pulumi.Config()
role = CiRole("ci", CiRoleArgs(
    repository=config.require("repository"),
    oidc_provider_arn=config.get("oidcProviderArn") or None,
    state_bucket=config.require("stateBucket"),
    secrets_provider_key_arn=config.require("secretsProviderKeyArn"),
))
pulumi.export("roleArn", role.role_arn)
