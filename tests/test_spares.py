"""Spare worker agents of the local supervisor (daskfleet.local.spares), the restart delay by exit, and the
environment fingerprint a long-lived process keeps: real processes, no cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from daskfleet.environments import records
from daskfleet.errors import ExitCode
from daskfleet.local.spares import Spares
from daskfleet.local.state import ENV_LINK
from daskfleet.local.supervisor import Supervisor
from daskfleet.node.spare import SPARE_ENV
from daskfleet.node.supervision import RULE

from support import wait_until


def test_a_spare_started_before_an_environment_was_published_is_never_the_next_worker(tmp_path):
    """Publishing changes the interpreter a worker starts with: the stale spare is ended, not told to go."""
    state = tmp_path / "state"
    spares = Spares(state)
    spares.keep({"worker-0"}, {"worker-0": os.getpid()})
    stale = spares.spares["worker-0"].proc
    try:
        assert stale.args[0] == sys.executable and stale.poll() is None
        # (read once it has exec'd: until then /proc shows the forked supervisor's environment)
        wait_until(lambda: psutil.Process(stale.pid).environ().get(SPARE_ENV) == "1", 30, "the spare's environment")
        published = state / ENV_LINK / "bin"
        published.mkdir(parents=True)
        (published / "python").symlink_to(sys.executable)  # what `daskfleet env publish` leaves locally

        assert spares.take("worker-0") is None  # the supervisor starts a fresh agent instead
        assert stale.wait(30) is not None
        spares.keep({"worker-0"}, {"worker-0": os.getpid() + 1})  # the fresh worker registered
        assert spares.spares["worker-0"].proc.args[0] == str(published / "python")
    finally:
        spares.stop()
    assert all(proc.poll() is not None for proc in [stale, *spares.leaving]) and not spares.spares


def test_a_slot_let_go_of_loses_its_spare_and_one_that_ended_by_itself_is_not_started_again(tmp_path):
    spares = Spares(tmp_path / "state")
    try:
        spares.keep({"worker-0", "worker-1"}, {"worker-0": 1, "worker-1": 2})
        first = spares.spares["worker-1"].proc
        spares.keep({"worker-0"}, {"worker-0": 1})  # worker-1 retired
        assert set(spares.spares) == {"worker-0"} and first.wait(30) is not None
        lost = spares.spares["worker-0"].proc
        lost.kill()
        lost.wait(30)
        spares.keep({"worker-0"}, {"worker-0": 1})
        assert not spares.spares  # not a loop of spares for the same worker run
        spares.keep({"worker-0"}, {"worker-0": 3})  # its next worker registered
        assert "worker-0" in spares.spares
    finally:
        spares.stop()


def test_a_requested_restart_is_at_once_and_a_failure_waits_the_units_delay():
    now = [100.0]
    supervisor = Supervisor(clock=lambda: now[0])

    def once(code: int):  # exits with ``code`` the first time, then stays up
        starts = []

        def start() -> subprocess.Popen:
            starts.append(code)
            argv = [sys.executable, "-c", f"raise SystemExit({code})"] if len(starts) == 1 else ["sleep", "60"]
            return subprocess.Popen(argv, start_new_session=True)

        return start

    try:
        for code in (ExitCode.RESTART_REQUESTED, ExitCode.SCHEDULER_UNREACHABLE):
            supervisor.add(str(int(code)), once(code))
        exits = []
        wait_until(lambda: exits.extend(supervisor.poll()) or len(exits) == 2, 30, "both programs to exit")
        assert {event.name: event.restarting for event in exits} == {"14": True, "75": True}
        assert supervisor.children["14"].proc is not None  # started again in the same round, the clock unmoved
        assert supervisor.children["75"].proc is None
        assert supervisor.children["75"].restart_at == 100.0 + RULE.delay_ms / 1000
    finally:
        supervisor.stop(list(supervisor.children), timeout=5)
    assert RULE.delay_s(ExitCode.MEMORY_EXCEEDED) == RULE.delay_ms / 1000 and RULE.delay_s(ExitCode.ENVIRONMENT_SWITCH) == 0


def test_the_fingerprint_is_computed_again_once_packages_are_installed(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(records, "installed_site_paths", lambda: [str(site)])
    monkeypatch.setattr(records, "_current", None)
    install(site, "alpha", "1.0")
    before = records.current_fingerprint()
    assert records.current_fingerprint() == before
    install(site, "beta", "2.0")
    os.utime(site, ns=(1, 1))  # whatever the file system's clock granularity: the directory changed
    after = records.current_fingerprint()
    assert after != before
    assert after == records.environment_fingerprint(records.environment_records(sys.prefix, [str(site)]))


def install(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
