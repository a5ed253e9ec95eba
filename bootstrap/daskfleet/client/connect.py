"""Connecting as a user: ``daskfleet.connect("local")`` in one line.

A local cluster's client certificate is read from its state directory; an AWS cluster's is
fetched from Secrets Manager with the user's own AWS identity and kept in memory. Which one a
name means: ``daskfleet.local.state.find_state_dir`` (a local cluster you started under that
name wins over an AWS cluster of the same name).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from distributed import Client, Security

from ..errors import DaskfleetError, ExitCode
from ..local.state import LocalCluster, client_material, cluster_name, command_flags, find_state_dir
from ..trust.tls import client_security, verify_scheduler_identity


def local_cluster(cluster: str | None, state_dir: str | Path | None) -> tuple[str, Path] | None:
    """(name, state directory) of the local cluster ``cluster`` (or ``state_dir``) means, None for an AWS cluster."""
    state = find_state_dir(cluster, state_dir)
    if state is None:
        return None
    name = cluster_name(state)
    if cluster is not None and name != cluster:
        raise DaskfleetError(f"{state} holds local cluster {name!r}, not {cluster!r}", ExitCode.CONFIG)
    return name, state


def security(
    cluster: str | None = None,
    *,
    state_dir: str | Path | None = None,
    user: str | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> Security:
    """The ``distributed.Security`` with a client certificate for ``cluster`` (default: ``"local"``, or the one
    in ``state_dir``): yours, or ``user``'s.

    A local cluster (``local``, one you started with ``daskfleet local up --cluster NAME``, or any
    ``state_dir``) reads its state directory: your admin certificate, or the member certificate
    ``daskfleet local issue --user USER`` made for ``user``. Any other name is an AWS cluster whose
    certificate for you (or ``user``) your AWS login (``profile``, ``region``) fetches from Secrets Manager.
    """
    local = local_cluster(cluster, state_dir)
    if local is not None:
        name, state = local
        return client_security(client_material(state, user), name)
    from ..aws.user import fetch_client_tls  # noqa: PLC0415  (boto3 only when an AWS cluster is asked for)

    return client_security(fetch_client_tls(cluster, user, region=region, profile=profile), cluster)


def scheduler_address(
    cluster: str | None = None,
    *,
    state_dir: str | Path | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> str:
    """Where ``cluster``'s scheduler listens."""
    local = local_cluster(cluster, state_dir)
    if local is not None:
        name, state = local
        recorded = LocalCluster.load(state)
        if recorded is None or not recorded.address:
            raise DaskfleetError(f"local cluster {name!r} is not running: `daskfleet local up{command_flags(state, name)}` "
                                 "starts it", ExitCode.CONFIG)
        return recorded.address
    from ..aws.user import discover_scheduler_address  # noqa: PLC0415

    return discover_scheduler_address(cluster, region=region, profile=profile)


def connect(
    cluster: str | None = None,
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
    """A connected ``distributed.Client`` for ``cluster`` using this user's client certificate (or ``user``'s).

    ``cluster`` is a local cluster's name (default ``"local"``; see ``security`` for which names are
    local) or an AWS cluster's. ``address`` overrides discovery, e.g. ``tls://localhost:8786`` through an
    SSM port forward.
    An AWS cluster that went idle (its scheduler group at 0) is woken with your AWS login and
    waited for, with a progress display, at most ``wake_timeout`` seconds (default 600);
    ``wake=False`` never wakes it.
    """
    local = local_cluster(cluster, state_dir)
    name = local[0] if local is not None else cluster
    sec = security(cluster, state_dir=state_dir, user=user, profile=profile, region=region)
    target = address or scheduler_address(cluster, state_dir=state_dir, profile=profile, region=region)
    if wake and local is None:
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
        raise DaskfleetError(_unreachable(target, name, exc), ExitCode.SCHEDULER_UNREACHABLE) from None
    verify_scheduler_identity(client, name)
    _link_forwarded_dashboard(name, local[1] if local is not None else None)
    return client


def _link_forwarded_dashboard(cluster: str, state_dir: Path | None) -> None:
    """While ``daskfleet dashboard CLUSTER`` runs on this machine, clients give its URL as their ``dashboard_link``
    (dask's ``distributed.dashboard.link``, which this process's clients share: the last cluster connected wins)."""
    import dask  # noqa: PLC0415

    from .dashboard import running_forwarder  # noqa: PLC0415

    url = running_forwarder(cluster, state_dir)
    if url is not None:
        dask.config.set({"distributed.dashboard.link": f"{url}/status"})


def _unreachable(target: str, cluster: str, exc: OSError) -> str:
    """One line on why the scheduler at ``target`` could not be reached: a server from another CA said plainly."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return (f"the server at {target} is not the scheduler of {cluster!r}: its certificate is not from that cluster's "
                f"CA (another cluster's, or a wrong address?); TLS: {cause.verify_message}")
    return f"cannot reach the scheduler at {target}: {exc}"


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

