"""Read a cluster's published-environment pointer (SSM Parameter Store): light enough for every node's poll."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .. import conventions
from ..environments.published import PublishedEnvironment, parse_published
from ..errors import ExitCode
from .calls import Caller, aws_failure, error_code


def read_pointer(ssm: Any, cluster: str, caller: Caller) -> PublishedEnvironment | None:
    """The pointer of ``cluster`` read with ``ssm`` (a user's or an instance role's client), or None."""
    name = conventions.published_env_parameter_name(cluster)
    try:
        response = ssm.get_parameter(Name=name)
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return None
        raise aws_failure(exc, ssm, "GetParameter", f"SSM parameter {name}", caller, missing=ExitCode.ENVIRONMENT) from None
    except BotoCoreError as exc:
        raise aws_failure(exc, ssm, "GetParameter", f"SSM parameter {name}", caller, missing=ExitCode.ENVIRONMENT) from None
    return parse_published(response["Parameter"]["Value"], f"SSM parameter {name}")
