"""Progress of long waits (downloads, uploads), on stderr, for a person at a terminal; silent otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def byte_progress(description: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A callback counting bytes into a live display; the display shows only on a terminal."""
    with tqdm(desc=description, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False,
              disable=not (enabled and sys.stderr.isatty())) as bar:
        yield bar.update
