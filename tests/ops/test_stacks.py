"""--orphans with a Pulumi backend: asked through the Pulumi CLI, which this machine does not have."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from daskfleet.errors import DaskfleetError
from daskfleet.ops.janitor import run_janitor
from daskfleet.ops.stacks import live_clusters_from_backend


def fake_pulumi(tmp_path, stacks, outputs) -> str:
    """A `pulumi` that answers `stack ls` and `stack output` from fixed JSON, and records what it was asked."""
    script = tmp_path / "pulumi"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(tmp_path / 'calls')!r}, 'a').write(os.environ['PULUMI_BACKEND_URL'] + ' ' + ' '.join(sys.argv[1:]) + '\\n')\n"
        f"stacks, outputs = {json.dumps(stacks)!r}, {json.dumps(outputs)!r}\n"
        "if sys.argv[1:3] == ['stack', 'ls']:\n    print(stacks)\n"
        "else:\n    print(json.dumps(json.loads(outputs).get(sys.argv[sys.argv.index('--stack') + 1], {})))\n"
    )
    script.chmod(0o755)
    return str(script)


def test_without_the_pulumi_cli_it_stops_with_one_line_saying_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("pulumi") is None
    with pytest.raises(DaskfleetError) as info:
        run_janitor(region="us-east-1", profile=None, yes=True, orphans=True, live=(), pulumi_backend="s3://state",
                    orphan_grace_hours=6, out=sys.stdout)
    assert str(info.value) == ("--pulumi-backend: the Pulumi CLI (pulumi) is not installed; install it from "
                               "https://www.pulumi.com/docs/install/, or name the live clusters with --live")


def test_live_clusters_are_the_cluster_outputs_of_stacks_that_hold_resources(tmp_path):
    pulumi = fake_pulumi(tmp_path, [
        {"name": "org/daskfleet/team-a", "resourceCount": 80}, {"name": "org/daskfleet/empty", "resourceCount": 0},
        {"name": "org/daskfleet/ci-42", "resourceCount": 75}],
        {"org/daskfleet/team-a": {"cluster": "analytics"}, "org/daskfleet/ci-42": {"cluster": "ci-42"}})
    assert live_clusters_from_backend("s3://state", pulumi=pulumi) == {"analytics", "ci-42"}
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "s3://state stack ls --all --project daskfleet --json"
    assert all(call.startswith("s3://state ") for call in calls) and len(calls) == 3


def test_every_cluster_of_a_fleet_stack_is_live(tmp_path):
    """A fleet's clusters tag their resources with their own names: none of them is an orphan of its stack."""
    pulumi = fake_pulumi(tmp_path, [{"name": "org/daskfleet/fleet", "resourceCount": 900}], {
        "org/daskfleet/fleet": {"cluster": "research", "clusters": {"alice": {}, "bob": {}, "team": {}}}})
    assert live_clusters_from_backend("s3://state", pulumi=pulumi) == {"research", "alice", "bob", "team"}


def test_a_stack_with_resources_but_no_cluster_output_stops_the_orphan_search(tmp_path):
    pulumi = fake_pulumi(tmp_path, [{"name": "org/daskfleet/being-created", "resourceCount": 12}], {})
    with pytest.raises(DaskfleetError, match="stack org/daskfleet/being-created holds resources but has no cluster output"):
        live_clusters_from_backend("s3://state", pulumi=pulumi)


@pytest.mark.parametrize(("orphans", "live", "backend", "message"), [
    (False, ("a-cluster",), None, "--live and --pulumi-backend only count with --orphans"),
    (True, (), None, "--orphans: name the live clusters with --live, or a Pulumi backend"),
    (True, ("Bad_Name",), None, "--live: 'Bad_Name' is not a cluster name"),
])
def test_orphan_options_are_checked_before_anything_is_asked_of_aws(orphans, live, backend, message):
    with pytest.raises(DaskfleetError, match=message):
        run_janitor(region="us-east-1", profile=None, yes=False, orphans=orphans, live=live, pulumi_backend=backend,
                    orphan_grace_hours=6, out=sys.stdout)
