"""Fixtures for the Pulumi program's tests: its configuration and its evaluations under mocks.

The mocks are ``ProgramMocks`` (a ``pulumi.runtime.Mocks`` subclass, in tests/infra/mocks.py,
also exported by infra.program): they branch on type tokens, answer AWS invokes from a fake
account and compute pulumi-tls resources with real keys and certificates. Pulumi's mock
runtime is process-global, so each evaluation runs in its own process (tests/infra/evaluate.py);
the scenarios below are evaluated concurrently, once per test run (the xdist workers share them), on first use.

The program's own modules are imported from infra/, the Pulumi project directory, as
``pulumi up`` imports them.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from infra.mocks import ProgramMocks
from infra.program import INFRA_DIR, ProgramError, ProgramRecord, evaluate_program
from infra.scenarios import ON_DEMAND, SCENARIOS

if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))

__all__ = ["ProgramMocks"]


@pytest.fixture
def mocks() -> ProgramMocks:
    """Fresh mocks for a fake account with no AMIs and no network to adopt, to call directly."""
    return ProgramMocks()


class Evaluations:
    """Every scenario evaluated once, all started together on first use; the fleet (the largest) only when asked
    for, so only the test module that needs it waits for it."""

    def __init__(self, shared: Path | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=4)
        self._futures: dict[str, Future] = {}
        self._shared = shared

    def _start(self, name: str) -> None:
        wanted = [name] if name in ON_DEMAND else [each for each in SCENARIOS if each not in ON_DEMAND]
        for each in wanted:
            if each not in self._futures:
                config, kwargs = SCENARIOS[each]
                self._futures[each] = self._pool.submit(evaluate_program, copy.deepcopy(config), **kwargs,
                                                        shared=self._shared)

    def record(self, name: str) -> ProgramRecord:
        self._start(name)
        return self._futures[name].result()

    def failure(self, name: str) -> ProgramError:
        self._start(name)
        error = self._futures[name].exception()
        assert isinstance(error, ProgramError), f"scenario {name} was expected to fail, got {error!r}"
        return error

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def evaluations(program_evaluations: Path | None) -> Iterator[Evaluations]:
    evaluations = Evaluations(program_evaluations)
    yield evaluations
    evaluations.close()


@pytest.fixture(scope="session")
def example(evaluations: Evaluations) -> ProgramRecord:
    """The program under infra/Pulumi.example.yaml: created network, AMI found by fingerprint."""
    return evaluations.record("example")


@pytest.fixture(scope="session")
def adopted(evaluations: Evaluations) -> ProgramRecord:
    """The program adopting a network, ephemeral, with amiId, NAT egress and every optional list."""
    return evaluations.record("adopted")


@pytest.fixture(scope="session")
def with_nat(evaluations: Evaluations) -> ProgramRecord:
    """The example stack with a NAT gateway in its created network."""
    return evaluations.record("nat")


@pytest.fixture(scope="session")
def fleet(evaluations: Evaluations) -> ProgramRecord:
    """A fleet of two private clusters (alice, bob) and a team cluster (scenarios.fleet_config)."""
    return evaluations.record("fleet")


@pytest.fixture(params=["example", "adopted", "nat"])
def every_record(request: pytest.FixtureRequest, evaluations: Evaluations) -> ProgramRecord:
    """Each successful scenario in turn, for invariants that hold whatever the configuration."""
    return evaluations.record(request.param)
