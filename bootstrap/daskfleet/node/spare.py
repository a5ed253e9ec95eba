"""A spare worker agent: started ahead of need by the local cluster's supervisor, it becomes a worker on "go".

A restarted worker spends most of its start importing dask and distributed (seconds on a busy machine;
distributed's nanny pays the same on each restart). The supervisor keeps one spare agent per running
worker slot, started with exactly the command line and environment the slot's next worker would get
(``daskfleet.local.spares``): it imports what a worker runs, then waits on its stdin. On "go" it goes
on as the slot's worker and takes everything that can change only then: spec, certificate, run history,
environment check. Its stdin at end of file (the supervisor let it go, or is gone) ends it quietly. The
spare imported its code when it started: if packages were installed or removed since
(``environment_stamp``), it starts afresh in the same process instead of running a worker on stale code.
Its dask configuration is the one read when it started, as a nanny's worker gets the nanny's.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("daskfleet.agent")

#: Set (to "1") in a spare agent's environment by its supervisor; the agent removes it when it starts.
SPARE_ENV = "DASKFLEET_SPARE"
#: What the supervisor writes on a spare's stdin to make it the worker.
GO = b"go\n"


def spare_requested() -> bool:
    """Whether this agent was started as a spare (and no longer says so to anything it starts)."""
    return os.environ.pop(SPARE_ENV, "") == "1"


def environment_stamp() -> tuple:
    from ..environments.records import environment_stamp as stamp  # noqa: PLC0415  (only a spare needs it)

    return stamp()


def wait_for_go(stamp: tuple, argv: list[str]) -> None:
    """Block until the supervisor says "go" (then return), or let go of this spare (end quietly).

    ``stamp`` is the environment's stamp from before this process imported anything; ``argv`` starts the
    agent afresh, which it does when the environment changed since.
    """
    from ..environments.records import current_fingerprint  # noqa: PLC0415

    current_fingerprint()  # computed while idle; after "go" it costs a few stats unless packages changed
    line = sys.stdin.buffer.readline()
    if line != GO:
        os._exit(0)
    if environment_stamp() != stamp:
        logger.info("packages changed since this spare agent started: starting afresh")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)
    logger.info("spare agent %d takes over as the worker", os.getpid())
