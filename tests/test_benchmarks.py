"""`make bench` itself, without running the cluster benchmarks (each takes minutes on real clusters): every target names
a ratio some benchmark returns (a renamed ratio would otherwise never be checked), every benchmark needs only the
directory `make bench` gives it, the workloads' report turns figures into the ratios its targets read, each workload
runs on the cluster whose turn it is, and a short run of the transport benchmark (seconds, no cluster)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    """The ``benchmarks`` package, imported from the checkout (it is not installed)."""
    monkeypatch.syspath_prepend(str(REPO))
    for name in [name for name in sys.modules if name == "benchmarks" or name.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("benchmarks.__main__")


def _key_pattern(node: ast.expr) -> str | None:
    """A ratio's name as a regular expression: a string key as itself, an f-string's fields as ``.+``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(re.escape(part.value) if isinstance(part, ast.Constant) else ".+" for part in node.values)
    return None


def _returned_keys(module_path: Path) -> set[str]:
    """The names a module gives its ratios, as patterns: the string keys of its dict literals and of its
    ``ratios[...] = ...`` assignments."""
    keys: list[ast.expr] = []
    for node in ast.walk(ast.parse(module_path.read_text())):
        if isinstance(node, ast.Dict):
            keys.extend(key for key in node.keys if key is not None)
        elif isinstance(node, ast.Assign):
            keys.extend(target.slice for target in node.targets if isinstance(target, ast.Subscript))
    return {pattern for pattern in map(_key_pattern, keys) if pattern is not None}


def test_every_target_names_a_ratio_a_benchmark_returns(bench):
    returned = set().union(*(_returned_keys(path) for path in (REPO / "benchmarks").glob("*.py")
                             if path.name != "__main__.py"))
    unchecked = sorted(target for target in bench.TARGETS
                       if not any(re.fullmatch(pattern, target) for pattern in returned))
    assert not unchecked, f"targets no benchmark returns (their verdict would never print): {unchecked}"


def test_every_benchmark_make_bench_runs_needs_only_its_directory(bench):
    called = [node.func.value.id for node in ast.walk(ast.parse(inspect.getsource(bench.main)))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
              and isinstance(node.func.value, ast.Name)]
    assert len(called) == len(set(called)) >= 10, called
    for name in called:
        parameters = list(inspect.signature(getattr(bench, name).run).parameters.values())
        assert parameters and all(parameter.default is not inspect.Parameter.empty for parameter in parameters[1:]), (
            f"benchmarks.{name}.run needs more than the directory `make bench` gives it")


def test_localcluster_report_prints_every_ratio_and_survives_a_cluster_that_never_restarted(bench, capsys):
    lc = importlib.import_module("benchmarks.localcluster")
    times = {name: {label: [1.0 + index / 10 for index in range(3)] for label in lc.CONTENDERS}
             for name in lc.WORKLOADS}
    for values in times.values():
        values[lc.DASKFLEET] = [2 * value for value in values[lc.DASKFLEET]]  # daskfleet twice as slow
    ratios = lc.report(times, {lc.DASKFLEET: [0.2, 0.21], lc.PLAIN: [2.0, 2.2]}, dict.fromkeys(lc.CONTENDERS, 1.0))
    assert ratios["workloads, daskfleet speed / LocalCluster (geo mean)"] == pytest.approx(0.5)
    assert ratios["  LocalCluster TLS speed / LocalCluster (geo mean)"] == pytest.approx(1.0)
    assert ratios["client.restart() daskfleet / LocalCluster (time)"] == pytest.approx(0.205 / 2.1)
    assert "single future" in capsys.readouterr().out
    # a restart that never completed: its ratio is left out, the workloads' are still printed
    ratios = lc.report(times, {lc.DASKFLEET: [0.2], lc.PLAIN: []}, dict.fromkeys(lc.CONTENDERS, 1.0))
    assert "client.restart() daskfleet / LocalCluster (time)" not in ratios
    assert "none completed" in capsys.readouterr().out


def test_every_workload_runs_on_the_cluster_it_is_timed_for(bench, monkeypatch, tmp_path):
    """Each contender's turn runs on its own cluster, even while another client is the current one (the collections'
    ``.compute()`` follows the current client: three workloads once ran every turn on the last cluster entered)."""
    from distributed import Client, LocalCluster  # noqa: PLC0415

    lc = importlib.import_module("benchmarks.localcluster")
    monkeypatch.setattr(lc, "SMALL_TASKS", 20)
    monkeypatch.setattr(lc, "ROUND_TRIPS", 2)
    lc.write_parquet(tmp_path / "parquet", files=2, rows=2_000)
    shape = dict(processes=False, n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    with LocalCluster(**shape) as timed_cluster, LocalCluster(**shape) as other_cluster, \
            Client(timed_cluster) as timed_client, Client(other_cluster) as other_client:
        assert Client.current() is other_client  # entered last
        for name, workload in lc.WORKLOADS.items():
            before = timed_cluster.scheduler.transition_counter, other_cluster.scheduler.transition_counter
            assert lc.timed(workload, timed_client, tmp_path) > 0
            after = timed_cluster.scheduler.transition_counter, other_cluster.scheduler.transition_counter
            assert after[0] > before[0] and after[1] == before[1], f"{name} ran on the other cluster"


def test_a_throughput_verdict_reads_the_rounds_own_ratios(bench):
    """One slow minute on one contender's turn does not decide its verdict; the ratio of the medians, which it
    would, is printed beside it."""
    common = importlib.import_module("benchmarks.common")
    theirs = [400.0, 300.0, 420.0, 310.0, 410.0]  # the machine's speed drifts from round to round
    mine = [0.99 * rate for rate in theirs]  # 1 % slower in every round
    mine[0] = 0.99 * 300.0  # and my turn of round 1 fell on a slow minute
    assert common.rounds_ratio(mine, theirs) == pytest.approx(0.99)
    assert common.medians_ratio(mine, theirs) < 0.8
    with pytest.raises(ValueError):
        common.rounds_ratio(mine, theirs[:-1])


def test_the_transport_benchmark_times_tls_against_tcp_over_the_same_paths(bench, monkeypatch, tmp_path, capsys):
    """A short run of the transport benchmark: every scheme's listener answers, the three ratios come back, and the
    TLS server's ``recv`` hands over at most one 16 KiB record per call (what the benchmark's reading rests on)."""
    transport = importlib.import_module("benchmarks.transport")
    monkeypatch.setattr(transport, "ROUNDS", 2)
    monkeypatch.setattr(transport, "SMALL_ECHOES", 20)
    monkeypatch.setattr(transport, "TRANSFERS", 10)
    ratios = transport.run(tmp_path / "transport")
    assert set(ratios) == {"transport TLS / TCP, distributed comm, small message (time)",
                           "transport TLS / TCP, distributed comm, 2 MB (time)",
                           "transport TLS / TCP, raw sockets, 2 MB (time)"}
    assert all(value > 0 for value in ratios.values())
    calls = dict(re.findall(r"recv calls per 2 MB transfer, (tcp|tls): ([\d.]+)", capsys.readouterr().out))
    assert float(calls["tls"]) >= transport.TRANSFER_BYTES / 16384 and float(calls["tcp"]) > 0
