"""Connecting as a user: ``daskfleet.connect("local")`` in one line.

The local cluster's client certificate is read from its state directory; an AWS cluster's is
fetched from Secrets Manager with the user's own AWS identity and kept in memory.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from distributed import Client, Security

from ..errors import DaskfleetError, ExitCode
from ..local.state import LOCAL_CLUSTER, LocalCluster, client_material, default_state_dir
from ..trust.tls import client_security, verify_scheduler_identity


def is_local(cluster: str, state_dir: Path | None) -> bool:
    return state_dir is not None or cluster == LOCAL_CLUSTER


def security(
    cluster: str = LOCAL_CLUSTER,
    *,
    state_dir: str | Path | None = None,
    user: str | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> Security:
    """The ``distributed.Security`` with this user's client certificate for ``cluster``.

    ``"local"`` (or any ``state_dir``) reads the local cluster's files; any other name is an AWS
    cluster whose certificate your AWS login (``profile``, ``region``) fetches from Secrets Manager.
    """
    if is_local(cluster, state_dir):
        return client_security(client_material(Path(state_dir or default_state_dir(cluster))), LOCAL_CLUSTER)
    from ..aws.user import fetch_client_tls  # noqa: PLC0415  (boto3 only when an AWS cluster is asked for)

    return client_security(fetch_client_tls(cluster, user, region=region, profile=profile), cluster)


def scheduler_address(
    cluster: str = LOCAL_CLUSTER,
    *,
    state_dir: str | Path | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> str:
    """Where ``cluster``'s scheduler listens."""
    if is_local(cluster, state_dir):
        state = LocalCluster.load(Path(state_dir or default_state_dir(cluster)))
        if state is None or not state.address:
            raise DaskfleetError(f"local cluster {cluster!r} is not running: `daskfleet local up` starts it", ExitCode.CONFIG)
        return state.address
    from ..aws.user import discover_scheduler_address  # noqa: PLC0415

    return discover_scheduler_address(cluster, region=region, profile=profile)


def connect(
    cluster: str = LOCAL_CLUSTER,
    *,
    address: str | None = None,
    state_dir: str | Path | None = None,
    user: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    wake: bool = True,
    wake_timeout: float | None = None,
    **client_kwargs: Any,
) -> Client:
    """A connected ``distributed.Client`` for ``cluster`` using this user's client certificate.

    ``address`` overrides discovery, e.g. ``tls://localhost:8786`` through an SSM port forward.
    An AWS cluster that went idle (its scheduler group at 0) is woken with your AWS login and
    waited for, with a progress display, at most ``wake_timeout`` seconds (default 600);
    ``wake=False`` never wakes it.
    """
    sec = security(cluster, state_dir=state_dir, user=user, profile=profile, region=region)
    target = address or scheduler_address(cluster, state_dir=state_dir, profile=profile, region=region)
    cluster_name = LOCAL_CLUSTER if is_local(cluster, state_dir) else cluster
    if wake and not is_local(cluster, state_dir):
        from ..aws.user import WAKE_TIMEOUT_S, wake_scheduler  # noqa: PLC0415

        wake_scheduler(
            cluster, target, lambda: _tls_answer(target, sec), region=region, profile=profile,
            timeout=WAKE_TIMEOUT_S if wake_timeout is None else wake_timeout,
        )
    try:
        client = Client(target, security=sec, **client_kwargs)
    except ImportError as exc:  # distributed's way of reporting a refused registration
        raise DaskfleetError(str(exc), ExitCode.CONFIG) from None
    except OSError as exc:
        raise DaskfleetError(f"cannot reach the scheduler at {target}: {exc}", ExitCode.SCHEDULER_UNREACHABLE) from None
    verify_scheduler_identity(client, cluster_name)
    return client


def _tls_answer(address: str, sec: Security, timeout: float = 5.0) -> str | None:
    """Why the scheduler at ``address`` does not complete a mutual TLS handshake, or None when it does."""
    host, _, port = address.removeprefix("tls://").rpartition(":")
    context = sec.get_connection_args("client")["ssl_context"]
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host.strip("[]")):
                return None
    except OSError as exc:
        return str(exc) or type(exc).__name__

