"""How a node is supervised, defined once: which exits restart at once, which after a backoff, which never.

The systemd unit on instances is rendered from it (``daskfleet.aws.userdata.render_unit``), the
local launcher's supervisor applies it (``daskfleet.local.supervisor``), and the node agent keeps
the backoff and the give-up window itself (``before_start``), from a history of its own runs.

Why the agent keeps the backoff: Amazon Linux 2023 ships systemd 252, whose only restart delay is
one fixed ``RestartSec`` (``RestartSteps``/``RestartMaxDelaySec`` need 254), and whose start limit
counts every start, a requested restart too. So a supervisor restarts a failed node after the same
short fixed delay (systemd every node: it cannot tell requested restarts apart; the local supervisor
restarts those at once, ``RestartRule.delay_s``); a restarted agent that follows failures first waits out the backoff, or gives up
(exit 79, never restarted) after too many failures within the window. Requested restarts are not
failures and never wait. The supervisor's start limit is only a backstop for crash loops the agent
cannot record (an interpreter that does not start).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ExitCode

#: Requested restarts: restarted at once, never counted as failures.
RESTART_AT_ONCE = frozenset({ExitCode.ENVIRONMENT_SWITCH, ExitCode.RESTART_REQUESTED, ExitCode.SCHEDULER_LOST})
#: Requested stops: the node stays down, and did not fail.
STAY_DOWN = frozenset({ExitCode.OK, ExitCode.RETIRED, ExitCode.DRAINED})
#: Configuration-class failures (the next start would fail the same way) and a node that gave up: never
#: restarted. A node stopping with one of these on AWS reports its line and marks its instance unhealthy.
NEVER_RESTART = frozenset({
    ExitCode.SPEC_INVALID, ExitCode.CERT_UNREADABLE, ExitCode.CERT_NOT_VALID_NOW, ExitCode.CERT_ROLE_MISMATCH,
    ExitCode.ENV_MISMATCH, ExitCode.REFUSED_BY_SCHEDULER, ExitCode.GAVE_UP,
})
#: Every other exit restarts after the backoff and counts as a failure: the transient classes (69, 75, 78), a
#: worker ended for exceeding its memory limit (80, recorded by whoever ended it), a crash, any other signal.
#: Signals systemd calls clean (the node was asked to stop); any other signal is a failure.
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
#: Runs kept in a node's history: enough for the give-up window.
HISTORY_RUNS = 20


@dataclass(frozen=True)
class RestartRule:
    """When a supervisor restarts a node that exited: systemd's ``Restart=on-failure`` with its exit-status lists."""

    at_once: frozenset[int]
    stay_down: frozenset[int]
    never: frozenset[int]
    #: systemd's RestartSec: a restart after a failure waits this long (and longer, in the agent); under systemd,
    #: every restart does (``delay_s``).
    delay_ms: int
    #: systemd's StartLimitBurst / StartLimitIntervalSec: a backstop against crash loops.
    start_limit_burst: int
    start_limit_interval_s: int

    def delay_s(self, returncode: int) -> float:
        """How long a supervisor that can tell exits apart waits before the restart: nothing after a requested
        restart, ``delay_ms`` after a failure. systemd cannot (one ``RestartSec`` for every exit), so on instances
        a requested restart waits ``delay_ms`` too."""
        return 0.0 if returncode in self.at_once else self.delay_ms / 1000

    def restarts(self, returncode: int) -> bool:
        """Whether a node that ended with ``returncode`` (negative: killed by that signal) is started again."""
        if returncode < 0:
            return -returncode not in CLEAN_SIGNALS
        if returncode in self.never:
            return False
        return returncode in self.at_once or returncode not in self.stay_down


@dataclass(frozen=True)
class RestartBackoff:
    """The agent's wait before a start that follows failures, and when it stops trying."""

    first_s: float = 1.0
    max_s: float = 60.0
    #: Give up at this many failures within ``window_s``.
    give_up_after: int = 5
    window_s: float = 600.0

    def delay(self, streak: int) -> float:
        """Seconds to wait after ``streak`` failures in a row: 1, 2, 4 ... up to ``max_s``."""
        return 0.0 if streak <= 0 else min(self.max_s, self.first_s * 2 ** (streak - 1))


RULE = RestartRule(
    at_once=frozenset(RESTART_AT_ONCE), stay_down=frozenset(STAY_DOWN), never=frozenset(NEVER_RESTART),
    delay_ms=100, start_limit_burst=30, start_limit_interval_s=60,
)
BACKOFF = RestartBackoff()


@dataclass(frozen=True)
class Outcome:
    """How a node's run ended: its exit code and the one line it leaves (``error: …`` for a failure)."""

    code: int
    line: str

    @property
    def for_good(self) -> bool:
        """A configuration-class failure or a give-up: no supervisor starts the node again."""
        return self.code in NEVER_RESTART


@dataclass(frozen=True)
class Run:
    """One start of a node: when, and how it ended (no code: it never said, e.g. killed)."""

    started: float
    ended: float | None = None
    code: int | None = None
    line: str = ""

    @property
    def failed(self) -> bool:
        return self.code is None or (self.code not in RESTART_AT_ONCE and self.code not in STAY_DOWN)

    @property
    def end(self) -> float:
        return self.started if self.ended is None else self.ended

    def describe(self) -> str:
        if self.line:
            return self.line
        return f"exit {self.code}" if self.code is not None else "ended without an exit status (killed)"


@dataclass(frozen=True)
class Verdict:
    """What a node does before it starts: wait ``wait_s``, or stay down because it gave up."""

    wait_s: float = 0.0
    gave_up: str | None = None
    failures: int = 0
    last: str = ""


def before_start(runs: Sequence[Run], now: float, backoff: RestartBackoff = BACKOFF) -> Verdict:
    """Give up after ``give_up_after`` failures within the window; else wait out the backoff of the current streak."""
    recent = [run for run in runs if run.failed and run.end >= now - backoff.window_s]
    if len(recent) >= backoff.give_up_after:
        reason = (f"gave up after {len(recent)} failures within {backoff.window_s:g}s; "
                  f"the last: {recent[-1].describe()}")
        return Verdict(gave_up=reason, failures=len(recent), last=recent[-1].describe())
    streak = 0
    for run in reversed(runs):
        if not run.failed:
            break
        streak += 1
    if streak == 0:
        return Verdict()
    last = runs[-1]
    wait = max(0.0, backoff.delay(streak) - max(0.0, now - last.end))
    return Verdict(wait_s=wait, failures=streak, last=last.describe())


class RunHistory:
    """A node's runs in a small JSON file where its supervisor keeps state (systemd's StateDirectory, the local state)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def runs(self) -> list[Run]:
        try:
            return [Run(**run) for run in json.loads(self.path.read_text())]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError):  # a torn or foreign file: start afresh rather than never start
            return []

    def started(self, now: float) -> None:
        self.write([*self.runs(), Run(now)])

    def ended(self, outcome: Outcome, now: float) -> None:
        runs = self.runs()
        started = runs.pop().started if runs and runs[-1].code is None else now
        self.write([*runs, Run(started, now, int(outcome.code), outcome.line)])

    def write(self, runs: list[Run]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps([asdict(run) for run in runs[-HISTORY_RUNS:]]))
        os.replace(partial, self.path)
