"""``daskfleet env …`` and ``daskfleet fingerprint``: environments, their locks and fingerprints."""

from __future__ import annotations

import click


@click.command()
def fingerprint() -> None:
    """Print the environment fingerprint of this Python environment."""
    from .records import current_fingerprint

    click.echo(current_fingerprint())
