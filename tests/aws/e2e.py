"""What the end-to-end tests emulate of AWS: instances (their metadata and directories), the unit as systemd runs
it, DNS, and a user's port forward."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import yaml
from aws.imds import ImdsServer

from daskfleet import conventions
from daskfleet.aws import userdata
from daskfleet.aws.source import IMDS_ENDPOINT_ENV
from daskfleet.node.supervision import RestartRule
from daskfleet.trust import pki


def exec_start(user_data: str) -> tuple[str, list[str]]:
    """(role, argv) systemd runs: the image's unit, for the instance and environment user data gives it."""
    document = yaml.safe_load(user_data.removeprefix("#cloud-config\n"))
    (env_file,) = [f["content"] for f in document["write_files"] if f["path"] == userdata.NODE_ENV_FILE]
    environment = dict(line.split("=", 1) for line in env_file.splitlines() if line)
    enabled = document["runcmd"][-1][-1]  # systemctl enable --now daskfleet-node@<role>.service
    role = enabled.removeprefix("daskfleet-node@").removesuffix(".service")
    return role, userdata.expand_unit_command(userdata.render_unit(), role, environment)


def restart_rule_of(unit: str) -> RestartRule:
    """The restart semantics systemd reads from ``unit``: what a supervisor emulating systemd must apply."""
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
    assert settings["Restart"] == "on-failure"

    def codes(key: str) -> frozenset[int]:
        return frozenset(int(code) for code in settings.get(key, "").split())

    force = codes("RestartForceExitStatus")
    return RestartRule(
        at_once=force, stay_down=(codes("SuccessExitStatus") - force) | {0}, never=codes("RestartPreventExitStatus"),
        delay_ms=int(settings["RestartSec"].removesuffix("ms")), start_limit_burst=int(settings["StartLimitBurst"]),
        start_limit_interval_s=int(settings["StartLimitIntervalSec"]),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_into_moto(endpoint: str, stack, cluster: str, region: str, *, scheduler_host: str, ports: dict | None = None):
    """The stack's parameters, secrets and log group into moto. The worker spec's scheduler host is the emulated
    DNS record; ``ports`` (scheduler, dashboard, worker) replaces the stack's fixed ports by free ones."""
    ssm = boto3.client("ssm", region_name=region, endpoint_url=endpoint)
    secrets = boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint)
    for name, value in stack.parameters.items():
        ssm.put_parameter(Name=name, Value=emulated_spec(value, scheduler_host, ports), Type="String")
    for name, value in stack.secrets.items():
        secrets.create_secret(Name=name, SecretString=value)
    (group,) = [r.inputs["name"] for r in stack.resources if r.type == "aws:cloudwatch/logGroup:LogGroup"
                and r.inputs["name"] == conventions.log_group_name(cluster)]
    boto3.client("logs", region_name=region, endpoint_url=endpoint).create_log_group(logGroupName=group)


def stack_ca(stack, cluster: str) -> pki.IssuedCert:
    """The cluster's CA as the stack keeps it (the vendor's secret): for tests that sign a certificate themselves."""
    ca = json.loads(stack.secrets[conventions.ca_secret_name(cluster)])
    return pki.IssuedCert(ca["cert"], ca["key"])


def declared(stack, type_: str, **inputs):
    return [r for r in stack.of_type(type_) if all(r.inputs.get(key) == value for key, value in inputs.items())]


def node_role_credentials(endpoint: str, stack, cluster: str, role: str, region: str,
                          session_name: str = "i-0123456789abcdef0") -> dict[str, str]:
    """The node role as the program declares it (its inline policies), assumed through moto's STS: the credentials an
    instance of ``role`` gets from its metadata, and what it proves to the certificate vendor."""
    iam = boto3.client("iam", region_name=region, endpoint_url=endpoint)
    sts = boto3.client("sts", region_name=region, endpoint_url=endpoint)
    name = conventions.iam_role_name(cluster, role)
    (role_resource,) = declared(stack, "aws:iam/role:Role", name=name)
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=role_resource.inputs["assumeRolePolicy"])
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    for policy in declared(stack, "aws:iam/rolePolicy:RolePolicy", role=name):
        iam.put_role_policy(RoleName=name, PolicyName=policy.inputs["name"], PolicyDocument=policy.inputs["policy"])
    credentials = sts.assume_role(RoleArn=role_resource.outputs["arn"], RoleSessionName=session_name)["Credentials"]
    return {"AWS_ACCESS_KEY_ID": credentials["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"]}


def user_credentials(endpoint: str, principal_arn: str, region: str) -> dict[str, str]:
    """Credentials whose caller identity is ``principal_arn`` (a stack's user: an IAM user, or a role it assumes)."""
    iam = boto3.client("iam", region_name=region, endpoint_url=endpoint)
    kind, name = principal_arn.rsplit(":", 1)[1].split("/", 1)
    if kind == "user":
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                     "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    sts = boto3.client("sts", region_name=region, endpoint_url=endpoint)
    credentials = sts.assume_role(RoleArn=principal_arn, RoleSessionName=f"{name}-laptop")["Credentials"]
    return {"AWS_ACCESS_KEY_ID": credentials["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"]}


class VendorLambda:
    """The fleet's certificate vendor as Lambda runs it, on 127.0.0.1: moto runs no function (it needs Docker), so
    this answers Lambda's Invoke API (``POST /2015-03-31/functions/NAME/invocations``) with the handler's own
    ``answer``, reading the stack's CA, policy and deny-list from moto and sending proofs to moto's STS, as the
    deployed function would with its own role. Nodes and users reach it through botocore's service endpoint
    variable ``AWS_ENDPOINT_URL_LAMBDA`` (``env``), so they call ``lambda:Invoke`` exactly as on AWS.
    ``invocations`` records (function, caller's request role) of each call; ``throttle_next`` answers that many
    next invocations as Lambda does when the account's concurrency is spent (429 TooManyRequestsException).
    ``function``: its name; ``clusters``: those it signs for."""

    def __init__(self, endpoint: str, region: str, function: str, clusters: set[str] | frozenset[str]):
        from daskfleet.aws.vendor_lambda import make_vendor  # noqa: PLC0415

        self.endpoint, self.region = endpoint, region
        self.functions = {function}
        self.invocations: list[tuple[str, str]] = []
        self.throttle_next = 0
        self.throttled = 0
        self._vendor = make_vendor(_FunctionSession(endpoint, self.region), frozenset(clusters), endpoint)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="vendor-lambda", daemon=True)
        self._thread.start()

    @classmethod
    def of_stack(cls, endpoint: str, stack, clusters: set[str] | frozenset[str]) -> VendorLambda:
        """The vendor the program declares (its ``certificateVendor`` output), for ``clusters`` of ``stack``."""
        return cls(endpoint, stack.outputs["region"], stack.outputs["certificateVendor"], clusters)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_LAMBDA": self.url}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> VendorLambda:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler(self):
        from daskfleet.aws.vendor_lambda import answer  # noqa: PLC0415

        lambda_ = self

        class Invoke(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                parts = self.path.split("?")[0].strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if len(parts) != 4 or parts[1] != "functions" or parts[3] != "invocations":
                    return self._send(404, {"message": f"no such API: {self.path}"})
                function = parts[2]
                if function not in lambda_.functions:
                    return self._send(404, {"Type": "User", "message": f"Function not found: {function}"},
                                      error_type="ResourceNotFoundException")
                if lambda_.throttle_next > 0:
                    lambda_.throttle_next -= 1
                    lambda_.throttled += 1
                    return self._send(429, {"Type": "User", "message": "Rate Exceeded."},
                                      error_type="TooManyRequestsException")
                event = json.loads(body)
                lambda_.invocations.append((function, event.get("role", "") if isinstance(event, dict) else ""))
                self._send(200, answer(lambda_._vendor, event))

            def _send(self, status: int, document: dict, error_type: str | None = None) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Amz-Executed-Version", "$LATEST")
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Invoke


class _FunctionSession:
    """The function's own AWS session (its role: here moto's default credentials), whatever the test's environment
    holds meanwhile (a user's login, a fault proxy)."""

    def __init__(self, endpoint: str, region: str):
        self._session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                              region_name=region)
        self._endpoint = endpoint

    def client(self, service: str, **kwargs):
        return self._session.client(service, endpoint_url=self._endpoint, **kwargs)


def emulated_spec(text: str, scheduler_host: str, ports: dict | None) -> str:
    spec = json.loads(text)
    if "role" not in spec:  # not a node spec: the certificate vendor's policy
        return text
    if ports:
        if spec["role"] == "scheduler":
            spec["scheduler_port"], spec["dashboard_port"] = ports["scheduler"], ports["dashboard"]
        else:
            spec["worker_port"] = ports["worker"]
    if spec["role"] == "worker":
        port = ports["scheduler"] if ports else spec["scheduler_address"].rsplit(":", 1)[1]
        spec["scheduler_address"] = f"tls://{scheduler_host}:{port}"  # the DNS record, emulated
    return json.dumps(spec)


def point_dns_at(endpoint: str, stack, cluster: str, region: str, host: str, ports: dict | None) -> None:
    """The DNS updater points the scheduler's name at a new address: emulated in the worker spec's host."""
    name = conventions.spec_parameter_name(cluster, "worker")
    ssm = boto3.client("ssm", region_name=region, endpoint_url=endpoint)
    ssm.put_parameter(Name=name, Value=emulated_spec(stack.parameters[name], host, ports), Type="String", Overwrite=True)


@dataclass
class Instance:
    """An emulated instance: its metadata, and the directories systemd gives its unit (the runtime one anew each
    start, the others kept, as on an instance's disk)."""

    role: str
    imds: ImdsServer
    root: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return self.imds.instance_id

    @property
    def log(self) -> Path:
        return self.root / "journal.log"

    def directory(self, name: str) -> Path:
        return self.root / name

    def start(self) -> subprocess.Popen:
        """What systemd does at each (re)start of the unit."""
        runtime = self.directory("run")
        shutil.rmtree(runtime, ignore_errors=True)
        for name in ("run", "state", "logs", "cache"):
            self.directory(name).mkdir(parents=True, exist_ok=True)
        env = {**self.env, IMDS_ENDPOINT_ENV: self.imds.url, "RUNTIME_DIRECTORY": str(runtime),
               "STATE_DIRECTORY": str(self.directory("state")), "LOGS_DIRECTORY": str(self.directory("logs")),
               "CACHE_DIRECTORY": str(self.directory("cache"))}
        with open(self.log, "ab") as journal:
            return subprocess.Popen([sys.executable, "-m", "daskfleet", *self.argv[1:]], env=env, stdout=journal,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def node_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("AWS_") or key in ("PATH", "HOME")}


class TcpRelay:
    """A user's port forward to the scheduler's DNS name: each new connection goes where ``target`` points now."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._accept, name="relay", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"tls://127.0.0.1:{self._server.getsockname()[1]}"

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket, patience_s: float = 60.0) -> None:
        """Connect to where the name points (waiting, as the forward does, while nothing answers there), then pump."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    client.close()
                    return
                time.sleep(0.2)
        upstream.settimeout(None)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
