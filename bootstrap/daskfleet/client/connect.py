"""Connecting as a user: ``daskfleet.connect("local")`` in one line.

Your certificate is short-lived and made for you (``daskfleet.client.login``): when it is missing or has less
than a third of its life left, ``connect`` logs in first (a key pair made here, signed by the cluster's vendor on
the proof of your AWS login, or of your OS identity for a local cluster), and the connected client renews it on
its own before it ends. Which cluster a name means: ``daskfleet.local.state.find_state_dir`` (a local cluster
you started under that name wins over an AWS cluster of the same name).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from distributed import Client, Security

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..local.state import LocalCluster, client_dir, client_material, cluster_name, command_flags, find_state_dir
from ..trust.tls import TlsMaterial, client_security, verify_scheduler_identity
from ..trust.vendor import USER_REQUEST
from .login import METRICS_SUBDIR, CredentialStore, Issuer, Renewal, credentials_dir, fresh_material


#: What a closed client still sends while it lets go of its state (nothing left to tell a closed connection).
_HOUSEKEEPING_OPS = frozenset({"client-releases-keys", "close-client", "close-stream", "subscribe-topic",
                               "unsubscribe-topic"})


class FleetClient(Client):
    """``daskfleet.connect``'s client: once its cluster closed it (its user revoked, its certificate expired), any
    later use raises the scheduler's reason as one DaskfleetError, not distributed's closed-connection errors."""

    #: Why the cluster closed this client (the scheduler's ``CLIENT_CLOSED_TOPIC`` event), None while open.
    closed_reason: str | None = None

    def _closed_by_cluster(self, event: tuple[float, str]) -> None:
        self.closed_reason = str(event[1])

    def _raise_if_closed_by_cluster(self) -> None:
        if self.closed_reason is not None and self.status not in ("closing", "closed"):
            raise DaskfleetError(self.closed_reason, ExitCode.CONFIG)

    def _send_to_scheduler(self, msg: dict) -> None:
        if self.closed_reason is not None and msg.get("op") in _HOUSEKEEPING_OPS:
            return
        self._raise_if_closed_by_cluster()
        super()._send_to_scheduler(msg)

    def gather(self, *args: Any, **kwargs: Any) -> Any:
        self._raise_if_closed_by_cluster()
        return super().gather(*args, **kwargs)

    def scatter(self, *args: Any, **kwargs: Any) -> Any:
        self._raise_if_closed_by_cluster()
        return super().scatter(*args, **kwargs)


def local_cluster(cluster: str | None, state_dir: str | Path | None) -> tuple[str, Path] | None:
    """(name, state directory) of the local cluster ``cluster`` (or ``state_dir``) means, None for an AWS cluster."""
    state = find_state_dir(cluster, state_dir)
    if state is None:
        return None
    name = cluster_name(state)
    if cluster is not None and name != cluster:
        raise DaskfleetError(f"{state} holds local cluster {name!r}, not {cluster!r}", ExitCode.CONFIG)
    return name, state


def login_target(
    cluster: str | None, *, state_dir: str | Path | None = None, profile: str | None = None,
    region: str | None = None, in_memory: bool = False, metrics: bool = False,
) -> tuple[str, CredentialStore, Issuer] | None:
    """(cluster name, where the login is kept, who signs it) for ``cluster``: a local cluster's own vendor and its
    state directory's ``client/``, or an AWS cluster's vendor function and ``$DASKFLEET_HOME/.credentials/NAME``;
    ``in_memory`` keeps the key pair in this process only; ``metrics``: a metrics scraper's certificate, kept in
    that directory's ``metrics/``. None: an AWS stack from before vendors."""
    role = conventions.METRICS_ROLE if metrics else USER_REQUEST
    local = local_cluster(cluster, state_dir)
    if local is not None:
        name, state = local
        from ..local.vendor import local_issuer  # noqa: PLC0415

        directory = login_directory(cluster, state_dir=state_dir, metrics=metrics)
        return name, CredentialStore(None if in_memory else directory), local_issuer(state, name, role)
    from ..aws.login import cluster_issuer  # noqa: PLC0415  (boto3 only when an AWS cluster is asked for)

    issue = cluster_issuer(cluster, region=region, profile=profile, role=role)
    if issue is None:
        return None
    directory = login_directory(cluster, state_dir=state_dir, metrics=metrics)
    return cluster, CredentialStore(None if in_memory else directory), issue


def login_directory(cluster: str | None, *, state_dir: str | Path | None = None, metrics: bool = False) -> Path:
    """Where a login for ``cluster`` keeps its files: a local cluster's ``<state>/client``, an AWS cluster's
    ``$DASKFLEET_HOME/.credentials/NAME``; a metrics certificate's in their ``metrics/``."""
    local = local_cluster(cluster, state_dir)
    directory = client_dir(local[1]) if local is not None else credentials_dir(cluster)
    return directory / METRICS_SUBDIR if metrics else directory


def login(
    cluster: str | None = None, *, state_dir: str | Path | None = None, profile: str | None = None,
    region: str | None = None, ttl: float | None = None, in_memory: bool = False, metrics: bool = False,
) -> TlsMaterial:
    """A new certificate for you in ``cluster`` (``daskfleet login``): for the key pair kept for it, made now if none;
    ``metrics``: the read-only certificate a Prometheus presents (the stack must list your login as a scraper)."""
    from .login import login as renew  # noqa: PLC0415

    target = login_target(cluster, state_dir=state_dir, profile=profile, region=region, in_memory=in_memory,
                          metrics=metrics)
    if target is None:
        raise DaskfleetError(f"cluster {cluster!r} has no certificate vendor (its worker spec names no vendor_function):"
                             " its stack predates vendors; `pulumi up` with this version adds one", ExitCode.CONFIG)
    _, store, issue = target
    return renew(store, issue, ttl)


def stack_issued(cluster: str, user: str | None, profile: str | None, region: str | None) -> TlsMaterial:
    """A stack from before vendors: the certificate it issued into Secrets Manager, read with your AWS login."""
    from ..aws.user import fetch_client_tls  # noqa: PLC0415

    return fetch_client_tls(cluster, user, region=region, profile=profile)


def security(
    cluster: str | None = None,
    *,
    state_dir: str | Path | None = None,
    user: str | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> Security:
    """The ``distributed.Security`` with your client certificate for ``cluster`` (default: ``"local"``, or the one
    in ``state_dir``), logging in first when it is missing or has less than a third of its life left; or, on a
    local cluster, the member certificate ``daskfleet local issue --user USER`` made for ``user``.
    """
    local = local_cluster(cluster, state_dir)
    if local is not None and user is not None:
        return client_security(client_material(local[1], user), local[0])
    target = login_target(cluster, state_dir=state_dir, profile=profile, region=region)
    if target is None:
        return client_security(stack_issued(cluster, user, profile, region), cluster)
    _refuse_user_with_vendor(cluster, user)
    name, store, issue = target
    return client_security(fresh_material(store, issue), name)


def _refuse_user_with_vendor(cluster: str | None, user: str | None) -> None:
    if user is not None:
        raise DaskfleetError(f"user=: cluster {cluster!r} signs certificates for the user your AWS login stands for "
                             "(the stack's users); log in as that user instead", ExitCode.CONFIG)


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
    ttl: float | None = None,
    in_memory: bool = False,
    **client_kwargs: Any,
) -> FleetClient:
    """A connected ``distributed.Client`` for ``cluster`` using your client certificate (or, locally, ``user``'s).

    ``cluster`` is a local cluster's name (default ``"local"``; see ``security`` for which names are
    local) or an AWS cluster's. ``address`` overrides discovery, e.g. ``tls://localhost:8786`` through an
    SSM port forward.
    Without a certificate with a third of its life left, you are logged in first (``daskfleet login``; with
    your AWS login, ``profile`` and ``region``, on AWS). The client renews its certificate by itself before it
    ends, with no interruption (``ttl``: ask for certificates shorter than the cluster's; ``in_memory``: keep
    the key pair in this process only).
    An AWS cluster that went idle (its scheduler group at 0) is woken with your AWS login and
    waited for, with a progress display, at most ``wake_timeout`` seconds (default 600);
    ``wake=False`` never wakes it.
    """
    local = local_cluster(cluster, state_dir)
    name = local[0] if local is not None else cluster
    renewal: tuple[CredentialStore, Issuer] | None = None
    target = None
    if user is None or local is None:
        target = login_target(cluster, state_dir=state_dir, profile=profile, region=region, in_memory=in_memory)
    if target is None:  # a local member's certificate (user=), or a stack from before vendors
        sec = security(cluster, state_dir=state_dir, user=user, profile=profile, region=region)
    else:
        _refuse_user_with_vendor(cluster, user)
        name, store, issue = target
        sec = client_security(fresh_material(store, issue, ttl), name)
        renewal = (store, issue)
    target = address or scheduler_address(cluster, state_dir=state_dir, profile=profile, region=region)
    if wake and local is None:
        from ..aws.user import WAKE_TIMEOUT_S, wake_scheduler  # noqa: PLC0415

        wake_scheduler(
            cluster, target, lambda: _tls_answer(target, sec), region=region, profile=profile,
            timeout=WAKE_TIMEOUT_S if wake_timeout is None else wake_timeout,
        )
    try:
        client = FleetClient(target, security=sec, **client_kwargs)
    except ImportError as exc:  # distributed's way of reporting a refused registration
        raise DaskfleetError(str(exc), ExitCode.CONFIG) from None
    except OSError as exc:
        raise DaskfleetError(_unreachable(target, name, exc), ExitCode.SCHEDULER_UNREACHABLE) from None
    client.subscribe_topic(conventions.CLIENT_CLOSED_TOPIC, client._closed_by_cluster)
    verify_scheduler_identity(client, name)
    _link_forwarded_dashboard(name, local[1] if local is not None else None)
    if renewal is not None:
        client._daskfleet_renewal = Renewal(client, *renewal, ttl=ttl).start()
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

