"""``daskfleet env follow``: the node's environment step, run as root by its unit before the agent starts."""

from __future__ import annotations

import logging
import sys

import click


@click.command("follow")
@click.option("--source", "source_text", required=True, metavar="aws:CLUSTER", help="The node's cluster: aws:CLUSTER.")
@click.option("--role", required=True, type=click.Choice(["scheduler", "worker"]), help="The node's role.")
def follow(source_text: str, role: str) -> None:
    """Install and switch to the cluster's published environment if this node does not run it yet.

    On failure the node keeps its previous environment: the error goes to the cluster's log group
    and to the agent, which tells the scheduler; the exit code is 73 (the unit ignores it).
    """
    from ..errors import DaskfleetError, ExitCode
    from .follow import follow as follow_published
    from .follow import report_failure, wanted_fingerprint
    from .source import AwsSource

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    scheme, _, cluster = source_text.partition(":")
    if scheme != "aws" or not cluster:
        raise DaskfleetError(f"--source: {source_text!r} is not aws:CLUSTER", ExitCode.CONFIG)
    source = AwsSource(cluster)
    wanted = None
    try:
        published = source.published_environment()
        wanted = wanted_fingerprint(published)
        outcome = follow_published(source, role, published)
    except DaskfleetError as error:
        report_failure(source, error, wanted)
        raise DaskfleetError(f"{error.message}; the node keeps its current environment", ExitCode.ENVIRONMENT) from None
    click.echo(outcome.message)
