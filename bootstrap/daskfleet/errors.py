"""The one user-facing error type, and the node agent's documented exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of ``daskfleet node``; one per failure class (documented in docs/agent.md).

    Codes 64-79 follow sysexits.h where one fits, so supervisors can tell a configuration
    error (do not restart) from a transient one (restart); 80 (memory) has no sysexits.h match.
    Codes 13-17 are requested exits, not failures: what the supervisor does with each is
    ``daskfleet.node.supervision``.
    """

    #: Stopped on request (SIGTERM from the supervisor or an operator): stays down.
    OK = 0
    #: The node leaves to run in a newly published environment: its supervisor restarts it at once,
    #: and the restart starts it in that environment (systemd's ExecStartPre or the local launcher).
    ENVIRONMENT_SWITCH = 13
    #: The scheduler restarts its workers (``client.restart()``): the supervisor restarts the node at once.
    RESTART_REQUESTED = 14
    #: The scheduler retired or closed this worker (scale-down, idle, ``retire_workers``), or a scheduler
    #: closed itself when the cluster went idle: stays down.
    RETIRED = 15
    #: The platform takes the node away (lifecycle hook, spot notice) and it has drained: stays down.
    DRAINED = 16
    #: The worker lost its scheduler after it had joined (the scheduler died, restarted or was replaced):
    #: the supervisor restarts it at once, and it waits for the scheduler within its connect timeout.
    SCHEDULER_LOST = 17
    #: The node spec is missing, unparsable, or has a missing, mistyped or unknown key.
    SPEC_INVALID = 65
    #: A certificate, key or CA is missing or unreadable, or does not chain to the CA.
    CERT_UNREADABLE = 66
    #: The source (directory, instance metadata, SSM, Secrets Manager) cannot be read.
    SOURCE_UNAVAILABLE = 69
    #: A certificate is expired or not yet valid.
    CERT_NOT_VALID_NOW = 70
    #: The certificate's role or cluster does not match the node's.
    CERT_ROLE_MISMATCH = 71
    #: The installed environment's fingerprint differs from the expected one.
    ENV_MISMATCH = 72
    #: An environment could not be locked, fetched or installed (channel unreachable, no solution,
    #: a package whose hash differs from the lock's, disk full).
    ENVIRONMENT = 73
    #: The scheduler could not be reached within the spec's connect timeout.
    SCHEDULER_UNREACHABLE = 75
    #: The scheduler refused this node (role or environment conformance).
    REFUSED_BY_SCHEDULER = 76
    #: A local cluster operation failed (ports, processes, state directory).
    LOCAL_FAILURE = 77
    #: Configuration of the command itself is wrong (bad option combination, missing tool).
    CONFIG = 78
    #: The node failed too often within the supervision window: its supervisor stops restarting it.
    GAVE_UP = 79
    #: The worker exceeded its memory limit (``distributed.worker.memory.terminate`` of it) and was ended from
    #: outside (the local supervisor, or the agent's memory watcher on an instance), which records this code and
    #: the line for it: the process itself was killed. Restarted after the backoff, like a transient failure.
    MEMORY_EXCEEDED = 80


class DaskfleetError(Exception):
    """An error a user caused or can fix: printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.CONFIG):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
