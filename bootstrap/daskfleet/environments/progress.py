"""Progress of long waits (downloads), on stderr, for a person at a terminal; silent otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TransferSpeedColumn


@contextmanager
def byte_progress(description: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A callback counting bytes into a live display; the display shows only on a terminal."""
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not (enabled and console.is_terminal),
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda count: progress.advance(task, count)
