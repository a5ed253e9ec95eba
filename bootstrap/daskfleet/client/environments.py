"""A user's view of a cluster's published environment: the pointer, its history, and the roll in progress.

A local cluster's name (``local``, one started with ``daskfleet local up --cluster NAME``, or a state
directory) is a cluster on this machine; any other name an AWS cluster read with the user's own login. The roll's progress comes from the scheduler itself, asked over
mutual TLS with the user's client certificate (``conventions.ENV_ROLL_HANDLER``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from distributed.comm import connect

from .. import conventions
from ..environments.published import describe_history
from ..errors import DaskfleetError, ExitCode
from ..local import environments as local_environments
from ..trust.peers import Peer
from .connect import local_cluster, scheduler_address, security


async def _call(address: str, sec: Any, cluster: str, op: str) -> Any:
    comm = await connect(address, **sec.get_connection_args("client"))
    try:
        peer = Peer.from_peercert(comm.extra_info.get("peercert"))
        if (peer.cluster, peer.role) != (cluster, "scheduler"):
            raise DaskfleetError(f"the server at {address} is not the scheduler of {cluster!r}", ExitCode.CONFIG)
        await comm.write({"op": op, "reply": True})
        return await comm.read()
    finally:
        await comm.close()


def ask_scheduler(cluster: str, op: str, *, timeout: float = 20.0, **where: Any) -> Any:
    """Call one daskfleet operation on ``cluster``'s scheduler as a client certificate that does not register."""
    local = local_cluster(cluster, where.get("state_dir"))
    name = local[0] if local is not None else cluster
    sec = security(cluster, **{key: where.get(key) for key in ("state_dir", "user", "profile", "region")})
    address = where.get("address") or scheduler_address(
        cluster, **{key: where.get(key) for key in ("state_dir", "profile", "region")})
    try:
        return asyncio.run(asyncio.wait_for(_call(address, sec, name, op), timeout))
    except (OSError, asyncio.TimeoutError) as exc:
        raise DaskfleetError(f"the scheduler at {address} does not answer over TLS ({type(exc).__name__})",
                             ExitCode.SCHEDULER_UNREACHABLE) from None


def env_status(cluster: str, **where: Any) -> dict[str, Any]:
    """The published environment, its history, and what each worker runs (or why that cannot be seen now)."""
    local = local_cluster(cluster, where.get("state_dir"))
    if local is not None:
        platform = conventions.conda_platform()
        state = local[1]
        published = local_environments.current_publication(state)
        entries = list(enumerate(local_environments.history(state), start=1))
    else:
        from ..aws.published import ClusterTarget, published_history, read_published  # noqa: PLC0415
        from ..aws.user import YOUR_IDENTITY, user_session  # noqa: PLC0415

        session = user_session(where.get("region"), where.get("profile"))
        target = ClusterTarget.resolve(session, cluster, YOUR_IDENTITY)
        published = read_published(target)
        entries = published_history(target) if published else []
        platform = next(iter(published.fingerprints), None) if published else None
    status: dict[str, Any] = {
        "cluster": cluster,
        "published": published.model_dump() if published else None,
        "history": describe_history(entries, platform) if platform else [],
    }
    try:
        status["roll"] = ask_scheduler(cluster, conventions.ENV_ROLL_HANDLER, **where)
    except DaskfleetError as exc:
        status["roll"] = {"unavailable": exc.message}
    return status


def render_status(status: dict[str, Any]) -> str:
    """``daskfleet env status`` for a person."""
    lines = [f"cluster {status['cluster']}"]
    published = status["published"]
    if published is None:
        lines.append("published:  nothing yet (the nodes run their image's environment)")
    else:
        for platform, fingerprint in sorted(published["fingerprints"].items()):
            lines.append(f"published:  {fingerprint} ({platform}) by {published['published_by']} at {published['published_at']}")
        if published.get("core_packages"):
            lines.append(f"            core packages changed: {', '.join(published['core_packages'])} (the scheduler restarts)")
    roll = status["roll"]
    if "unavailable" in roll:
        lines.append(f"roll:       not available: {roll['unavailable']}")
    else:
        lines.append(f"roll:       {roll['progress']}; {'complete' if roll['done'] else 'in progress'} ({roll['reason']})")
        lines.append(f"scheduler:  {roll['scheduler']}")
        for name, fingerprint in sorted(roll["workers"].items()):
            mark = "" if fingerprint == roll["target"] else ("  FAILED: " + roll["failed"][name] if name in roll["failed"]
                                                              else "  switching" if name in roll["switching"] else "  behind")
            lines.append(f"  {name:<24} {fingerprint}{mark}")
    if status["history"]:
        lines.append(f"history:    {len(status['history'])} publication(s); `daskfleet env rollback {status['cluster']}` goes back one")
    return "\n".join(lines)
