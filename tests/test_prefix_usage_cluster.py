"""Where the money went, on a running local cluster: usage per task prefix for several users, the bound on
prefixes, the table, the metrics, and a prefix's profile page opened in a real browser (Debian's chromium)."""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from daskfleet.conventions import IDLE_PREFIX, OTHER_PREFIX
from daskfleet.local import cluster as local
from daskfleet.usage.policy import policy_from_entries
from daskfleet.conventions import ADMIN_ROLE
from daskfleet.usage.records import USAGE_OP, summarize

from support import dashboard_context, user_client, wait_until

#: A local worker-second costs 1 cent; two prefixes per user keep their own figures, the rest is (other).
POLICY = policy_from_entries(prices=["local=36"], record_interval_s=1.0, prefixes_per_user=2)
#: Seconds each task of the three known functions sleeps (two tasks of each per user).
SLEEPS = {"load_rows": 0.5, "fit_model": 0.35, "write_report": 0.2}
TASKS_EACH = 2
#: A sleeping task's measured compute time is its sleep plus the time its thread took to wake and return; on a loaded
#: machine that was 11 ms a task (CI). Up to this much a task still tells the prefixes apart (their sleeps differ by
#: 0.15 s or more).
WAKE_SLACK_S = 0.1


def counts_its_sleep(compute_s: float, slept: float, tasks: int) -> bool:
    """The measured compute time holds the whole sleep and no more than each task's slack beyond it."""
    return slept - 0.005 <= compute_s <= slept + WAKE_SLACK_S * tasks


@pytest.fixture(scope="module")
def prefix_cluster(tmp_path_factory, cluster_ca):
    """One cluster for this module's tests: two one-thread workers, the bound at two prefixes per user."""
    state = tmp_path_factory.mktemp("prefix-cluster")
    cluster = local.up(state, workers=2, ca=cluster_ca, usage=POLICY, smoke=False)
    yield cluster
    local.down(state)


def _functions():
    """The three known functions, by value (the workers cannot import this module): each sleeps as told."""
    import time

    def load_rows(seconds: float, tag: int) -> int:
        time.sleep(seconds)
        return tag

    def fit_model(seconds: float, tag: int) -> int:
        time.sleep(seconds)
        return tag

    def write_report(seconds: float, tag: int) -> int:
        time.sleep(seconds)
        return tag

    return {f.__name__: f for f in (load_rows, fit_model, write_report)}


FUNCTIONS = _functions()


def live_summary(client, since: float):
    return summarize(client.sync(getattr(client.scheduler, USAGE_OP), since=since), since)


def daskfleet(*args: str):
    """The ``daskfleet`` command, run in this process (a fresh interpreter per call costs minutes on a loaded machine):
    the same command code, over the same TLS connection to the cluster."""
    from click.testing import CliRunner

    from daskfleet.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    result.returncode = result.exit_code
    return result


def run_in_stages(alice, bob) -> None:
    """alice runs the functions in the order load_rows, fit_model, write_report; bob in the reverse order, alongside."""
    order = list(SLEEPS)
    for stage, (mine, theirs) in enumerate(zip(order, reversed(order))):
        a = alice.map(FUNCTIONS[mine], [SLEEPS[mine]] * TASKS_EACH, range(stage * 10, stage * 10 + TASKS_EACH))
        b = bob.map(FUNCTIONS[theirs], [SLEEPS[theirs]] * TASKS_EACH, range(100 + stage * 10, 100 + stage * 10 + TASKS_EACH))
        alice.gather(a)
        bob.gather(b)


@pytest.fixture(scope="module")
def workload(prefix_cluster, cluster_ca):
    """Two users ran the three functions; the summary of the live records since just before."""
    start = time.time()
    with user_client(prefix_cluster, cluster_ca, "alice") as alice, user_client(prefix_cluster, cluster_ca, "bob") as bob:
        run_in_stages(alice, bob)
        summary = live_summary(alice, start)
    return start, summary


def test_each_prefix_counts_its_sleeps_and_past_two_the_rest_is_other(workload):
    _, summary = workload
    expected = {  # the first two prefixes each user ran keep their own figures; the third is (other)
        "alice": {"load_rows": "load_rows", "fit_model": "fit_model", OTHER_PREFIX: "write_report"},
        "bob": {"write_report": "write_report", "fit_model": "fit_model", OTHER_PREFIX: "load_rows"},
    }
    for user, rows in expected.items():
        prefixes = summary.prefixes[user]
        assert set(prefixes) - {IDLE_PREFIX} == set(rows), prefixes
        for prefix, function in rows.items():
            slept = SLEEPS[function] * TASKS_EACH
            assert prefixes[prefix].tasks == TASKS_EACH
            assert counts_its_sleep(prefixes[prefix].compute_s, slept, TASKS_EACH), (user, prefix, prefixes[prefix])
            assert prefixes[prefix].cost_usd > 0
        # A user's prefixes add up to the user (and the users to the cluster, as tests/test_usage_cluster.py checks).
        whole = summary.users[user]
        for field in ("compute_s", "worker_s", "cost_usd"):
            assert sum(getattr(u, field) for u in prefixes.values()) == pytest.approx(getattr(whole, field), rel=0.01), field
        assert sum(u.tasks for u in prefixes.values()) == whole.tasks == 3 * TASKS_EACH


def test_errors_cancellations_shared_keys_and_worker_client_are_charged_honestly(prefix_cluster, cluster_ca):
    from distributed import Event

    def slow_failure(seconds: float) -> None:
        import time

        time.sleep(seconds)
        raise ValueError("failed after its work")

    def wait_for_stop(name: str) -> str:
        from distributed import Event

        Event(name).wait(60)
        return "stopped"

    def shared_step(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    def fan_out(count: int) -> float:
        from distributed import worker_client

        def inner_step(seconds: float, tag: int) -> float:
            import time

            time.sleep(seconds)
            return seconds

        with worker_client() as client:
            return sum(client.gather(client.map(inner_step, [0.2] * count, range(count))))

    start = time.time()
    with user_client(prefix_cluster, cluster_ca, "carol") as carol, \
            user_client(prefix_cluster, cluster_ca, "ops", ADMIN_ROLE) as ops:  # run_on_scheduler is for admins
        with pytest.raises(ValueError, match="failed after its work"):
            carol.submit(slow_failure, 0.3).result(timeout=60)
        stop = Event("prefix-test-stop", client=carol)
        submitted = time.time()
        waiting = carol.submit(wait_for_stop, "prefix-test-stop")
        wait_until(lambda: ops.run_on_scheduler(lambda dask_scheduler: any(
            ts.key == waiting.key for ws in dask_scheduler.workers.values() for ts in ws.executing)), 60,
            "the scheduler to see the task executing")
        waiting.cancel()
        cancelled = time.time()
        stop.set()  # the worker's thread runs on after a cancel: let it end
        with user_client(prefix_cluster, cluster_ca, "dave") as dave:
            assert dave.submit(fan_out, 2).result(timeout=60) == pytest.approx(0.4)
            with user_client(prefix_cluster, cluster_ca, "erin") as erin, \
                    user_client(prefix_cluster, cluster_ca, "frank") as frank:
                first = erin.submit(shared_step, 0.2, key="shared_step-0017")
                assert first.result(timeout=60) == 0.2
                assert frank.submit(shared_step, 0.2, key="shared_step-0017").result(timeout=60) == 0.2
                summary = live_summary(carol, start)
    carol_prefixes = summary.prefixes["carol"]
    failed = carol_prefixes["slow_failure"]
    assert failed.tasks == 1 and failed.compute_s >= 0.3  # an error still counts its work (and formatting the error)
    stopped = carol_prefixes["wait_for_stop"]
    assert stopped.tasks == 0 and 0 < stopped.compute_s <= cancelled - submitted  # no result, but its run time
    dave_prefixes = summary.prefixes["dave"]  # the task's own submissions: dave's, under their own prefix
    assert dave_prefixes["fan_out"].tasks == 1 and dave_prefixes["inner_step"].tasks == 2
    assert counts_its_sleep(dave_prefixes["inner_step"].compute_s, 0.4, 2), dave_prefixes["inner_step"]
    assert summary.prefixes["erin"]["shared_step"].tasks == 1  # a key both asked for ran once, for the first
    assert "shared_step" not in summary.prefixes.get("frank", {})


def test_usage_by_prefix_table_live_and_from_the_records(prefix_cluster, workload):
    start, _ = workload
    state = prefix_cluster.state_dir
    since = ["--since", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start - 1))]
    table = daskfleet("usage", "local", "--state-dir", state, "--by", "prefix", *since)
    assert table.returncode == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith("usage by task prefix since") and lines[1].split() == [
        "prefix", "user", "tasks", "compute", "h", "worker", "h", "cost", "USD", "share"]
    rows = [line.split() for line in lines[3:] if not line.startswith("-")]
    costs = [float(row[-2]) for row in rows[:-1] if not row[0].startswith("(") or row[0] in (OTHER_PREFIX, IDLE_PREFIX)]
    assert costs == sorted(costs, reverse=True)  # largest first
    assert ["load_rows", "alice", str(TASKS_EACH)] in [row[:3] for row in rows]
    assert rows[-1][0] == "total" and rows[-1][-1] == "100.0%"

    def recorded():
        out = daskfleet("usage", "local", "--state-dir", state, "--by", "prefix", "--user", "bob", "--top", "2",
                        "--records", "--json", *since)
        report = json.loads(out.stdout)
        return report if report["total"]["tasks"] == 3 * TASKS_EACH else None

    report = wait_until(recorded, 60, "bob's figures in the usage records")
    assert report["source"] == "records" and {row["user"] for row in report["rows"]} == {"bob"}
    assert len(report["rows"]) == 2 and report["more"]["rows"] >= 1  # --top 2: the rest summed in one line
    first, second = (row["cost_usd"] for row in report["rows"])
    assert first >= second >= report["more"]["cost_usd"] / report["more"]["rows"]  # largest first
    assert sum(row["share"] for row in report["rows"]) + report["more"]["share"] == pytest.approx(1.0)


def test_metrics_carry_each_users_prefixes_within_the_bound(prefix_cluster, workload):
    context = dashboard_context(prefix_cluster.state_dir)  # the dashboard port asks for a certificate: metrics'
    dashboard = urllib.parse.urlparse(prefix_cluster.dashboard)
    with urllib.request.urlopen(f"https://{dashboard.netloc}/metrics", context=context, timeout=30) as response:
        text = response.read().decode()
    series = dict(re.findall(r'^(daskfleet_prefix_\w+\{[^}]*\}) (\S+)$', text, re.MULTILINE))
    compute = {key: float(value) for key, value in series.items() if key.startswith("daskfleet_prefix_compute_seconds_total")}
    assert counts_its_sleep(compute['daskfleet_prefix_compute_seconds_total{prefix="load_rows",user="alice"}'],
                            SLEEPS["load_rows"] * TASKS_EACH, TASKS_EACH), compute
    assert f'daskfleet_prefix_cost_usd_total{{prefix="{OTHER_PREFIX}",user="alice"}}' in series
    alices = {re.search(r'prefix="([^"]*)"', key)[1] for key in compute if 'user="alice"' in key}
    assert alices <= {"load_rows", "fit_model", OTHER_PREFIX, IDLE_PREFIX}  # write_report went to (other)


# --- the profile page, opened in Debian's chromium ------------------------------------------------------------


#: Run in the page: the flame graph's rectangles (its Bokeh data source), how many canvas pixels show exactly
#: their colours (drawn bars, not text or axes), and the window the page names (Bokeh draws in shadow roots).
RENDERED = """
if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return null;
const source = Bokeh.documents[0].get_model_by_name(arguments[0]);
if (!source) return null;
function everything(root) {
  const found = [];
  for (const element of root.querySelectorAll("*")) {
    found.push(element);
    if (element.shadowRoot) found.push(...everything(element.shadowRoot));
  }
  return found;
}
const elements = everything(document);
const wanted = new Set(Array.from(source.data.color, (hex) => parseInt(hex.slice(1), 16)));
let barPixels = 0;
for (const canvas of elements.filter((element) => element.tagName === "CANVAS")) {
  if (!canvas.width || !canvas.height) continue;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] === 255 && wanted.has((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2])) barPixels += 1;
  }
}
const shown = elements.find((element) => element.id === "daskfleet-window");
return {rectangles: source.get_length(), colours: wanted.size, bar_pixels: barPixels,
        window: shown ? shown.textContent : null};
"""




@pytest.mark.timeout(600)  # about 10 s; a browser and Bokeh take minutes on a machine loaded 20 times over
def test_the_profile_page_of_a_prefix_opens_and_draws_its_flame_graph(prefix_cluster, workload, chromium, tmp_path):
    page = tmp_path / "load_rows.html"
    out = daskfleet("profile", "local", "--state-dir", prefix_cluster.state_dir, "--prefix", "load_rows", "--out", str(page))
    assert out.returncode == 0, out.output
    window = re.search(r"window: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC – \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)", out.stdout)
    assert window, out.stdout
    assert "load_rows" in out.stdout and str(page) in out.stdout
    chromium.get(page.as_uri())
    deadline, drawn = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        drawn = chromium.execute_script(RENDERED, "daskfleet-flame")
        if drawn and drawn["bar_pixels"] > 10_000:
            break
        time.sleep(0.2)
    try:
        assert drawn, "the page never loaded its Bokeh document with the flame graph"
        assert drawn["rectangles"] >= 2, drawn  # the root, and the task's function (sleeping in C below it)
        assert drawn["bar_pixels"] > 10_000, f"the flame graph's bars were not drawn: {drawn}"
        assert drawn["window"] == window[1]
    except AssertionError as failure:
        shot = tmp_path / "profile-page.png"
        chromium.save_screenshot(str(shot))
        pytest.fail(f"{failure}\nscreenshot of the page: {shot}")
