"""Publish → boot → switch on AWS without AWS: a running cluster follows a newly published environment.

Like test_end_to_end.py: the program is evaluated under mocks, its parameters, secrets and the
images' lock are loaded into a moto server (nodes and the user get their certificates from
aws.e2e.VendorLambda), and each node runs the exact commands of its unit
(the environment step ``ExecStartPre``, then ``ExecStart``) against its own local IMDSv2
endpoint, restarted as systemd would after the environment-switch exit code. What differs from
an instance: each node's ``/`` is a directory of its own ($DASKFLEET_NODE_ROOT), where
images/provision/install-env.sh built its "image" from the tests' conda channel (see
tests/envs/channel.py for what that emulates), and DNS is emulated as in test_end_to_end.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import yaml
from aws.e2e import VendorLambda, node_role_credentials, user_credentials
from aws.imds import ImdsServer
from envs.test_lock_and_install import locked
from infra.program import evaluate_program, example_config

import daskfleet
from daskfleet import conventions
from daskfleet.aws import userdata
from daskfleet.aws.source import IMDS_ENDPOINT_ENV
from daskfleet.environments.install import daskfleet_wheel_version
from daskfleet.environments.lockfile import read_lock
from daskfleet.errors import ExitCode
from daskfleet.node.sources import SCHEDULER_INFO_FILE

from support import REPO

NODE_ADDRESS = "127.0.0.1"
INSTALL_STEP = REPO / "images" / "provision" / "install-env.sh"


class Node:
    """One instance: its root (the image), its IMDS, and its unit run the way systemd runs it."""

    def __init__(self, role: str, root: Path, stack, env: dict[str, str], imds: ImdsServer, logs: Path):
        self.role, self.root, self.imds, self.log = role, root, imds, logs / f"{role}.log"
        document = yaml.safe_load(stack.user_data[role].removeprefix("#cloud-config\n"))
        (env_file,) = [f["content"] for f in document["write_files"] if f["path"] == userdata.NODE_ENV_FILE]
        environment = dict(line.split("=", 1) for line in env_file.splitlines() if line)
        unit = userdata.render_unit()
        self.pre = userdata.expand_unit_command(unit, role, environment, "ExecStartPre")
        self.start = userdata.expand_unit_command(unit, role, environment)
        self.run_dir = logs / "run" / role
        self.env = {**env, IMDS_ENDPOINT_ENV: imds.url, "RUNTIME_DIRECTORY": str(self.run_dir),
                    conventions.NODE_ROOT_ENV: str(root)}
        self.exits: list[int] = []
        self.process: subprocess.Popen | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def _on_node(self, argv: list[str]) -> list[str]:
        """The unit's absolute executable, under this node's root."""
        return [str(self.root) + argv[0], *argv[1:]]

    def _supervise(self) -> None:
        """systemd's part: the environment step, then the agent; restarted at once after an environment switch."""
        with open(self.log, "ab") as log:
            while not self._stopped:
                subprocess.run(self._on_node(self.pre), env=self.env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.process = subprocess.Popen(self._on_node(self.start), env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                code = self.process.wait()
                self.exits.append(code)
                if code != ExitCode.ENVIRONMENT_SWITCH:
                    return

    def boot(self) -> Node:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._thread.join(timeout=30)


def _image(root: Path, lock: Path, wheel: Path, fingerprint: str) -> None:
    """images/provision/install-env.sh, for real, into this node's root."""
    env = {**os.environ, "DASKFLEET_ROOT": str(root), "DASKFLEET_LOCK": str(lock), "DASKFLEET_WHEEL": str(wheel),
           "DASKFLEET_FINGERPRINT": fingerprint, "DASKFLEET_PLATFORM": "linux-64", "DASKFLEET_BOOTSTRAP_PYTHON": sys.executable}
    result = subprocess.run(["bash", str(INSTALL_STEP)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def _deploy(aws, stack, cluster: str, region: str) -> str:
    """The stack's parameters, secrets, log group, bucket (with the images' lock) and key, in moto."""
    client = lambda service: boto3.client(service, region_name=region, endpoint_url=aws.endpoint)  # noqa: E731
    key = client("kms").create_key()["KeyMetadata"]
    client("kms").create_alias(AliasName=conventions.kms_alias(cluster), TargetKeyId=key["KeyId"])
    for name, value in stack.parameters.items():
        spec = json.loads(value)
        if "role" not in spec:  # the certificate vendor's policy: no node spec
            client("ssm").put_parameter(Name=name, Value=value, Type="String")
            continue
        spec["kms_key"] = key["Arn"]  # the fleet's key, as the spec names it: here moto's
        if spec.get("role") == "worker":
            port = spec["scheduler_address"].rsplit(":", 1)[1]
            spec["scheduler_address"] = f"tls://{NODE_ADDRESS}:{port}"  # the DNS record, emulated
        else:
            spec["rollout"] = {"poll_s": 1.0, "switch_timeout_s": 120.0}  # the stack's poll is 10 s
        client("ssm").put_parameter(Name=name, Value=json.dumps(spec), Type="String")
    for name, value in stack.secrets.items():
        client("secretsmanager").create_secret(Name=name, SecretString=value)
    client("logs").create_log_group(logGroupName=conventions.log_group_name(cluster))
    bucket = stack.outputs["bucketName"]
    client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    (image_lock,) = [r for r in stack.resources if r.type == "aws:s3/bucketObjectv2:BucketObjectv2"]
    client("s3").put_object(Bucket=bucket, Key=image_lock.inputs["key"], Body=image_lock.inputs["content"].encode())
    return bucket


def s3_spec(aws, region: str, cluster: str) -> str:
    ssm = boto3.client("ssm", region_name=region, endpoint_url=aws.endpoint)
    return ssm.get_parameter(Name=conventions.spec_parameter_name(cluster, "worker"))["Parameter"]["Value"]


def _daskfleet(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskfleet", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def _worker_fingerprint(client) -> str | None:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return next((w.get(conventions_fingerprint_key()) for w in workers), None)


def conventions_fingerprint_key() -> str:
    from daskfleet.trust.gatekeeper import FINGERPRINT_KEY

    return FINGERPRINT_KEY


def _wait(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.5)


def test_a_published_environment_reaches_a_running_aws_cluster_through_its_bucket(
    aws, home, channel, channel_root, tmp_path, daskfleet_wheel, monkeypatch, request
):
    version = daskfleet_wheel_version(daskfleet_wheel)
    first, second = locked(tmp_path, channel, "first", ["alpha ==1.0"]), locked(tmp_path, channel, "second", ["alpha ==1.1"])
    first_fp, second_fp = (read_lock(lock).fingerprint("linux-64", version) for lock in (first, second))
    # One worker at least: the scaler would retire an idle one (adaptive from 0) while a slow machine lingers between
    # steps, and moto's group cannot launch another.
    stack = evaluate_program({**example_config(), "environmentFingerprint": first_fp, "environmentLock": str(first),
                              "workerMinSize": 1})
    cluster, region = stack.outputs["cluster"], stack.outputs["region"]
    monkeypatch.setenv("AWS_REGION", region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    bucket = _deploy(aws, stack, cluster, region)
    vendor = VendorLambda.of_stack(aws.endpoint, stack, {cluster})  # where nodes and the user get their certificates
    request.addfinalizer(vendor.close)
    for name, value in vendor.env.items():
        monkeypatch.setenv(name, value)
    principal = example_config()["users"][0].split("=", 1)[1]
    env = {key: value for key, value in os.environ.items() if key.startswith(("AWS_", "DASKFLEET_HOME")) or key in ("PATH", "HOME")}
    roles = {role: node_role_credentials(aws.endpoint, stack, cluster, role, region) for role in conventions.NODE_ROLES}
    nodes = {}
    try:
        for index, role in enumerate(conventions.NODE_ROLES):
            root = tmp_path / f"{role}-root"
            _image(root, first, daskfleet_wheel, first_fp)
            imds = ImdsServer(instance_id=f"i-0{index}23456789abcdef", region=region, private_ipv4=NODE_ADDRESS,
                              tags=stack.instance_tags[role], user_data=stack.user_data[role].encode()).start()
            nodes[role] = Node(role, root, stack, {**env, **roles[role]}, imds, tmp_path).boot()
            if role == "scheduler":
                _wait(lambda: (tmp_path / "run" / "scheduler" / SCHEDULER_INFO_FILE).exists(), "the scheduler listening")
        forwarded = stack.outputs["forwardedSchedulerAddress"].replace("localhost", NODE_ADDRESS)
        for name, value in user_credentials(aws.endpoint, principal, region).items():  # from here on, the user's login
            monkeypatch.setenv(name, value)
        with daskfleet.connect(cluster, address=forwarded, wake=False, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            assert _worker_fingerprint(client) == first_fp

            # Publish the lock that differs in one package, as a user, while a computation runs.
            futures = client.map(lambda x: __import__("time").sleep(0.02) or x + 1, range(300))
            channel.requests.clear()
            published = _daskfleet("env", "publish", cluster, "--lock", second, "--wheel", daskfleet_wheel)
            assert published.returncode == 0, published.stderr
            assert "uploaded 1 package(s)" in published.stdout and "~ alpha 1.0 (py_0) -> 1.1 (py_0)" in published.stdout
            s3 = boto3.client("s3", region_name=region, endpoint_url=aws.endpoint)
            packages = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="envs/packages/").get("Contents", [])]
            alpha = read_lock(second).for_platform("linux-64")
            (changed,) = [p for p in alpha if p.name == "alpha"]
            assert packages == [conventions.package_object_key(changed.digest)]  # only what the images lack
            head = s3.head_object(Bucket=bucket, Key=packages[0])
            assert head["ServerSideEncryption"] == "aws:kms"
            assert head["SSEKMSKeyId"] == json.loads(s3_spec(aws, region, cluster))["kms_key"]  # the key the spec names

            _wait(lambda: _worker_fingerprint(client) == second_fp, "the worker re-registered on the new environment")
            assert sum(client.gather(futures)) == sum(range(1, 301))
            workers = list(client.scheduler_info()["workers"])  # a member's tasks on each (client.run is for admins)
            assert {w: client.submit(lambda: __import__("alpha").__version__, workers=[w], pure=False).result(timeout=60)
                    for w in workers} == dict.fromkeys(workers, "1.1")
        worker_log = nodes["worker"].log.read_text()
        assert "switched to " + second_fp in worker_log and "1 package(s) from the bucket" in worker_log
        assert nodes["worker"].exits[0] == ExitCode.ENVIRONMENT_SWITCH

        # A corrupted object in the bucket: the node keeps its environment and says why, without crash-looping.
        third = locked(tmp_path, channel, "third", ["alpha ==1.1", "gamma"])
        (gamma,) = [p for p in read_lock(third).for_platform("linux-64") if p.name == "gamma"]
        s3.put_object(Bucket=bucket, Key=conventions.package_object_key(gamma.digest), Body=b"not a package")
        assert _daskfleet("env", "publish", cluster, "--lock", third, "--wheel", daskfleet_wheel).returncode == 0
        status = _wait(lambda: (lambda s: s if s["roll"].get("failed") else None)(json.loads(_daskfleet(
            "env", "status", cluster, "--address", forwarded, "--json").stdout)), "the failure reported")
        (error,) = status["roll"]["failed"].values()
        assert "gamma 0.1" in error and "sha256" in error
        assert status["roll"]["workers"] == {nodes["worker"].imds.instance_id: second_fp}
        shipped = boto3.client("logs", region_name=region, endpoint_url=aws.endpoint).get_log_events(
            logGroupName=conventions.log_group_name(cluster),
            logStreamName=f"environment/{nodes['worker'].imds.instance_id}")["events"]
        assert any("gamma 0.1" in event["message"] for event in shipped)
        time.sleep(3)
        assert len(nodes["worker"].exits) == 2  # told once, failed once, asked no more

        # Rollback: back to the previous environment, which the worker still runs.
        ssm = boto3.client("ssm", region_name=region, endpoint_url=aws.endpoint)
        pointed = lambda: json.loads(ssm.get_parameter(  # noqa: E731
            Name=conventions.published_env_parameter_name(cluster))["Parameter"]["Value"])["fingerprints"]["linux-64"]
        third_fp = read_lock(third).fingerprint("linux-64", version)
        assert pointed() == third_fp
        rolled = _daskfleet("env", "rollback", cluster)
        assert rolled.returncode == 0, rolled.stderr
        assert f"{cluster} (linux-64): {third_fp} -> {second_fp}" in rolled.stdout
        assert pointed() == second_fp  # the pointer moved back; the worker already runs it
        with daskfleet.connect(cluster, address=forwarded, wake=False, timeout=30) as client:
            assert client.submit(sum, range(10)).result(timeout=60) == 45
            assert _worker_fingerprint(client) == second_fp
    finally:
        for node in nodes.values():
            node.stop()
            node.imds.stop()
    audit = [json.loads(line) for line in (tmp_path / "run" / "scheduler" / "audit.jsonl").read_text().splitlines()]
    assert [entry["event"] for entry in audit if entry["event"].startswith("environment-")][:3] == [
        "environment-published", "environment-switch", "environment-published"]


def test_an_interrupted_publish_leaves_the_cluster_on_its_previous_environment(
    aws, home, channel, tmp_path, daskfleet_wheel, monkeypatch
):
    from daskfleet.aws import published as publishing
    from daskfleet.aws.calls import Caller
    from daskfleet.environments.cache import PackageCache
    from daskfleet.errors import DaskfleetError

    lock = locked(tmp_path, channel, "next", ["alpha ==1.1"])
    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=aws.endpoint)
    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=aws.endpoint)
    s3.create_bucket(Bucket="daskfleet-analytics-0a1b2c3", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    ssm.put_parameter(Name=conventions.spec_parameter_name("analytics", "worker"), Type="String", Value=json.dumps(
        {"cluster": "analytics", "role": "worker", "scheduler_address": "tls://x:8786", "bucket": "daskfleet-analytics-0a1b2c3"}))
    caller = Caller("the test", "", ExitCode.CONFIG)
    target = publishing.ClusterTarget.resolve(boto3.session.Session(region_name="eu-west-1"), "analytics", caller)
    uploads = []

    def fail_on_the_second(self, key, path, on_bytes=lambda _n: None):
        uploads.append(key)
        if len(uploads) == 2:
            raise DaskfleetError(f"s3://{self.name}/{key}: connection reset", ExitCode.SOURCE_UNAVAILABLE)
        return original(self, key, path, on_bytes)

    original = publishing.ClusterBucket.upload
    monkeypatch.setattr(publishing.ClusterBucket, "upload", fail_on_the_second)
    with pytest.raises(DaskfleetError, match="connection reset"):
        publishing.publish(target, lock, cache=PackageCache(home / "pkgs"), wheel=daskfleet_wheel,
                           wheel_version=daskfleet_wheel_version(daskfleet_wheel), by="alice")
    assert publishing.read_published(target) is None  # the pointer never moved
    assert len(uploads) == 2


class _NodeSource:
    """What a node's environment step reads from its AwsSource: the cluster, its spec, and its clients."""

    def __init__(self, cluster: str, spec: dict, region: str, endpoint: str):
        self.cluster, self.spec, self.region, self.endpoint = cluster, spec, region, endpoint

    def describe(self) -> str:
        return f"aws:{self.cluster}"

    def fetch_spec(self, role: str) -> dict:
        return {**self.spec, "role": role}

    def client(self, service: str):
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint)


def test_a_node_installs_nothing_when_the_published_lock_is_not_the_pointers_fingerprint(
    aws, home, channel, tmp_path, daskfleet_wheel, monkeypatch
):
    from daskfleet.aws import published as publishing
    from daskfleet.aws.calls import Caller
    from daskfleet.aws.follow import follow
    from daskfleet.environments.cache import PackageCache
    from daskfleet.environments.wheel import WHEELS_DIR
    from daskfleet.errors import DaskfleetError

    lock = locked(tmp_path, channel, "next", ["alpha ==1.1"])
    spec = {"cluster": "analytics", "role": "worker", "scheduler_address": "tls://x:8786", "bucket": "daskfleet-analytics-0a1b2c3"}
    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=aws.endpoint)
    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=aws.endpoint)
    s3.create_bucket(Bucket=spec["bucket"], CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    ssm.put_parameter(Name=conventions.spec_parameter_name("analytics", "worker"), Type="String", Value=json.dumps(spec))
    target = publishing.ClusterTarget.resolve(boto3.session.Session(region_name="eu-west-1"), "analytics",
                                              Caller("the test", "", ExitCode.CONFIG))
    done = publishing.publish(target, lock, cache=PackageCache(home / "pkgs"), wheel=daskfleet_wheel,
                              wheel_version=daskfleet_wheel_version(daskfleet_wheel), by="alice")
    installs = done.published.fingerprint_for("linux-64")
    monkeypatch.setenv(conventions.NODE_ROOT_ENV, str(tmp_path / "node"))
    source = _NodeSource("analytics", spec, "eu-west-1", aws.endpoint)

    # A pointer whose fingerprint is not what its lock installs: refused before anything is fetched or installed.
    other = "sha256:" + "f" * 64
    wrong = done.published.model_copy(update={"fingerprints": {"linux-64": other}})
    with pytest.raises(DaskfleetError, match=f"the published lock installs {installs}, but the pointer says {other}"):
        follow(source, "worker", wrong)
    envs = conventions.node_path(conventions.NODE_ENVS_DIR)
    assert not conventions.node_path(conventions.node_env_prefix(other)).exists()
    assert not envs.exists() or list(envs.iterdir()) == []  # no half-built prefix beside it either
    assert not (conventions.node_path(conventions.NODE_PACKAGE_CACHE) / WHEELS_DIR).exists()  # nor the wheel fetched
    assert not conventions.node_path(conventions.NODE_ENV_LINK).exists()

    # The pointer as published: the same check passes, and the node installs and switches to it.
    outcome = follow(source, "worker", done.published)
    assert outcome.message.startswith(f"switched to {installs} (")
    assert conventions.node_path(conventions.NODE_ENV_LINK).resolve() == conventions.node_path(
        conventions.node_env_prefix(installs))
