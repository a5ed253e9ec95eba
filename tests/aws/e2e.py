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
from pathlib import Path

import boto3
import yaml
from aws.imds import ImdsServer

from daskfleet import conventions
from daskfleet.aws import userdata
from daskfleet.aws.source import IMDS_ENDPOINT_ENV
from daskfleet.node.supervision import RestartRule
from daskfleet.trust import pki
from daskfleet.trust.tls import TlsMaterial


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
        secrets.create_secret(Name=name, SecretString=stack_issued_certificate(stack, name, value))
    (group,) = [r.inputs["name"] for r in stack.resources if r.type == "aws:cloudwatch/logGroup:LogGroup"
                and r.inputs["name"] == conventions.log_group_name(cluster)]
    boto3.client("logs", region_name=region, endpoint_url=endpoint).create_log_group(logGroupName=group)


def stack_issued_certificate(stack, name: str, value: str) -> str:
    """moto runs no Lambda function, so these tests reach the clusters as users of a stack from before the certificate
    vendor (tests/aws/test_vendor.py tests the vendor on moto): a person's membership record becomes the certificate
    such a stack issued, signed with the cluster's CA."""
    record = json.loads(value)
    if set(record) != {"ca", "user", "role"}:
        return value
    cluster = name.split("/")[1]
    ca = json.loads(stack.secrets[conventions.ca_secret_name(cluster)])
    issued = pki.issue_certificate(pki.IssuedCert(ca["cert"], ca["key"]), cluster, record["role"], user=record["user"])
    return TlsMaterial(ca["cert"], issued.cert_pem, issued.key_pem).to_secret_json()


def emulated_spec(text: str, scheduler_host: str, ports: dict | None) -> str:
    spec = json.loads(text)
    if "role" not in spec:  # not a node spec: the certificate vendor's policy
        return text
    spec.pop("vendor_function", None)  # users take the stack-issued path (stack_issued_certificate)
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
