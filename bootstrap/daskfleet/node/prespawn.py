"""The environment distributed's nanny gives a worker process, which daskfleet's agent-run workers need too.

A nanny sets ``distributed.nanny.pre-spawn-environ`` (``MALLOC_TRIM_THRESHOLD_``, which glibc reads
only when a process starts, and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS``
= 1) and a fixed ``PYTHONHASHSEED`` before it spawns the worker process, and
``distributed.nanny.environ`` in it (distributed/nanny.py: ``Nanny.__init__``,
``_get_env_variables``). daskfleet runs workers without a nanny, so the agent of a worker
re-executes itself once with these variables set (``exec_with_worker_environment``); the same
code path runs locally and on instances. The values come from distributed's configuration, so a
user's override (a dask config file, ``DASK_DISTRIBUTED__NANNY__...``) counts; as for the nanny, a
variable already set in the process's environment wins, and a value of null unsets a default.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ..errors import DaskfleetError, ExitCode

logger = logging.getLogger("daskfleet.agent")

PRE_SPAWN_KEY = "distributed.nanny.pre-spawn-environ"
ENVIRON_KEY = "distributed.nanny.environ"
#: What the nanny sets PYTHONHASHSEED to when nothing else does (distributed#8400: hashing consistent across workers).
NANNY_HASH_SEED = "6640"
#: Set by the agent in the environment it re-executes itself with, so it does so once whatever happens.
REEXEC_MARK = "DASKFLEET_WORKER_ENVIRONMENT"


@functools.cache
def load_distributed_defaults() -> None:
    """distributed's defaults in dask's configuration, as ``import distributed`` puts them, without importing it.

    The agent decides before it imports distributed whether to re-execute itself (that import takes
    seconds); it registers the same file distributed.config registers, once per process, which does no
    harm when distributed registers it again.
    """
    import dask.config  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    if "distributed.config" in sys.modules:
        return
    spec = importlib.util.find_spec("distributed")
    if spec is None or not spec.submodule_search_locations:
        raise DaskfleetError("distributed is not installed in this environment", ExitCode.ENV_MISMATCH)
    defaults = Path(next(iter(spec.submodule_search_locations))) / "distributed.yaml"
    dask.config.update_defaults(yaml.safe_load(defaults.read_text()))


def _configured(key: str, environ: Mapping[str, str]) -> dict[str, str]:
    """One of the nanny's configuration keys as variables: the process's own value wins, null unsets."""
    import dask.config  # noqa: PLC0415

    value = dask.config.get(key, default=None) or {}
    if not isinstance(value, Mapping):
        raise DaskfleetError(
            f"dask configuration {key}: must map variable names to values, got {value!r}", ExitCode.CONFIG
        )
    return {str(name): environ.get(str(name), str(setting)) for name, setting in value.items() if setting is not None}


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a nanny would give its worker process, with the nanny's precedence (environ over pre-spawn)."""
    load_distributed_defaults()
    environ = os.environ if environ is None else environ
    variables = _configured(PRE_SPAWN_KEY, environ)
    if variables.get("PYTHONHASHSEED") in (None, "0"):
        variables["PYTHONHASHSEED"] = NANNY_HASH_SEED
    variables.update(_configured(ENVIRON_KEY, environ))
    return variables


def missing_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker variables this process did not start with (or started with other values)."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in worker_environment(environ).items() if environ.get(name) != value}


def exec_with_worker_environment(argv: list[str]) -> None:
    """Become ``argv`` (this same agent) with the worker variables set, unless this process started with them.

    It happens at most once: the re-executed agent carries ``REEXEC_MARK`` and only warns if something
    is still missing (a variable the process changes for itself before this check).
    """
    missing = missing_variables()
    if not missing:
        os.environ.pop(REEXEC_MARK, None)  # a later re-execution (an environment switch) checks afresh
        return
    listed = ", ".join(sorted(missing))  # names only: distributed.nanny.environ may carry anything
    if os.environ.get(REEXEC_MARK):
        logger.warning("the worker environment is still not what distributed's nanny would set (%s); going on", listed)
        return
    logger.info("starting again with the environment distributed's nanny gives a worker: %s", listed)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, {**os.environ, **missing, REEXEC_MARK: "1"})
