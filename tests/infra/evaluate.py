"""Evaluate the daskfleet Pulumi program under mocks, without a cloud, and return what it declares.

Test machinery, not the program. Tests import it through tests/infra/program.py
(``tests/`` is on pytest's pythonpath, so this file is ``infra.evaluate``)::

    from infra.program import evaluate_program, example_config
    record = evaluate_program()                       # the example stack (Pulumi.example.yaml)
    record = evaluate_program({**example_config(), "ephemeral": True, "expires": "2030-01-01"})
    record.user_data["scheduler"]   # rendered user data (text) per node role
    record.instance_tags["worker"]  # the tags a node role's instances launch with (IMDS serves them)
    record.parameters               # SSM parameter name -> value (the node specs, JSON)
    record.secrets                  # Secrets Manager secret name -> secret string ({"ca","cert","key"}, real PEMs)
    record.outputs                  # stack outputs, resolved; record.secret_outputs names the secret ones
    record.resources                # every resource: type, name, urn, parent, provider, inputs, outputs, dependencies
    record.calls                    # every invoke: token, args

``config`` maps keys without the ``daskfleet:`` namespace to Python values (str, int,
bool, lists); they reach the program through PULUMI_CONFIG, encoded as Pulumi encodes
them. ``images=None`` gives the mocked account one AMI tagged with the configured
environment fingerprint; pass ``images=[]`` for none. ``vpcs``/``subnets`` describe an
existing network for stacks that adopt one. A program that fails (e.g. a configuration
error) raises ``ProgramError`` carrying the error's type name and message.

Each evaluation runs in a fresh Python process (``python -m infra.evaluate``, with tests/ and
infra/ put on its PYTHONPATH here, and infra/ as its working directory as under ``pulumi up``):
Pulumi's mock runtime is process-global, so evaluations never see each other's state.
The TLS keys and certificates are real (``infra.mocks``) and new on every call.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: tests/, the root of the ``infra.*`` test modules; the child process imports them from here.
TESTS_DIR = Path(__file__).resolve().parents[1]
#: infra/, the Pulumi project: its program and the daskfleet_infra package it imports.
INFRA_DIR = TESTS_DIR.parent / "infra"
PROGRAM = INFRA_DIR / "__main__.py"
#: What the child process runs: this module, found through TESTS_DIR on its PYTHONPATH.
CHILD_MODULE = "infra.evaluate"
EXAMPLE_STACK_FILE = INFRA_DIR / "Pulumi.example.yaml"
PROJECT = "daskfleet"
#: The AMI the mocked account holds by default, tagged with the configured fingerprint.
MOCK_AMI_ID = "ami-0a1b2c3d4e5f60718"


class ProgramError(Exception):
    """The program raised instead of completing; ``kind`` is the exception's type name."""

    def __init__(self, kind: str, message: str, traceback: str = "", declared: Sequence[str] = ()):
        super().__init__(f"{kind}: {message}" + (f"\n{traceback}" if traceback else ""))
        self.kind = kind
        self.message = message
        self.traceback = traceback
        #: Type tokens of the custom resources declared before the failure.
        self.declared = list(declared)


@dataclass(frozen=True)
class ResourceRecord:
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    custom: bool
    id: str
    inputs: dict[str, Any]
    #: Top-level inputs the program marked secret.
    secret_inputs: list[str]
    outputs: dict[str, Any]
    #: URNs of the resources this one was declared to wait for (depends_on and inputs computed from them).
    dependencies: list[str] = field(default_factory=list)
    #: Its own aliases as the SDK sent them ({"urn"} or a spec); infra.urns computes the URNs they stand for.
    aliases: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ProgramRecord:
    """Everything one evaluation of the program declared, invoked and exported."""

    resources: list[ResourceRecord]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    calls: list[dict[str, Any]]
    #: Python warnings (except pulumi-aws's own deprecation notices) and engine warnings while evaluating.
    warnings: list[str]
    config: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[ResourceRecord]:
        return [resource for resource in self.resources if resource.type == type_]

    def one(self, type_: str, name: str | None = None) -> ResourceRecord:
        found = [resource for resource in self.of_type(type_) if name is None or resource.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_} {name or ''}, found {[r.name for r in found]}")
        return found[0]

    def component(self, type_: str) -> ResourceRecord:
        return self.one(type_)

    def descendants(self, component: ResourceRecord) -> list[ResourceRecord]:
        """Every resource below ``component`` in the parent tree."""
        below, frontier = [], {component.urn}
        while frontier:
            children = [resource for resource in self.resources if resource.parent in frontier]
            below += children
            frontier = {child.urn for child in children}
        return below

    @property
    def user_data(self) -> dict[str, str]:
        """Node role -> the user data its launch template carries, decoded (a stack of one cluster)."""
        return self.user_data_of(None)

    @property
    def instance_tags(self) -> dict[str, dict[str, str]]:
        """Node role -> the tags its instances are launched with (a stack of one cluster)."""
        return self.instance_tags_of(None)

    def _templates(self, cluster: str | None) -> list[tuple[ResourceRecord, dict[str, str]]]:
        """Each launch template (of ``cluster``, or all) with the tags its instances launch with."""
        found = []
        for template in self.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
            (spec,) = [s for s in template.inputs["tagSpecifications"] if s["resourceType"] == "instance"]
            if cluster is None or spec["tags"]["daskfleet:cluster"] == cluster:
                found.append((template, dict(spec["tags"])))
        return found

    def user_data_of(self, cluster: str | None) -> dict[str, str]:
        """Node role -> the user data of ``cluster``'s launch template, decoded."""
        return {tags["daskfleet:role"]: base64.b64decode(template.inputs["userData"]).decode()
                for template, tags in self._templates(cluster)}

    def instance_tags_of(self, cluster: str | None) -> dict[str, dict[str, str]]:
        """Node role -> the tags ``cluster``'s instances are launched with (instance metadata serves them)."""
        return {tags["daskfleet:role"]: tags for _, tags in self._templates(cluster)}

    @property
    def parameters(self) -> dict[str, str]:
        """SSM parameter name -> value."""
        return {p.inputs["name"]: p.inputs["value"] for p in self.of_type("aws:ssm/parameter:Parameter")}

    @property
    def secrets(self) -> dict[str, str]:
        """Secrets Manager secret name -> its secret string."""
        names = {secret.id: secret.inputs["name"] for secret in self.of_type("aws:secretsmanager/secret:Secret")}
        return {
            names[version.inputs["secretId"]]: version.inputs["secretString"]
            for version in self.of_type("aws:secretsmanager/secretVersion:SecretVersion")
        }


def example_config() -> dict[str, Any]:
    """The example stack's configuration (Pulumi.example.yaml), keys without the namespace."""
    import yaml

    document = yaml.safe_load(EXAMPLE_STACK_FILE.read_text())
    prefix = f"{PROJECT}:"
    return {key.removeprefix(prefix): value for key, value in document["config"].items() if key.startswith(prefix)}


def encode_config_value(value: Any) -> str:
    """A value as Pulumi hands config to a program: text, with lists and objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def pulumi_config_env(config: Mapping[str, Any], project: str = PROJECT) -> str:
    """The PULUMI_CONFIG environment value for ``config``."""
    return json.dumps({f"{project}:{key}": encode_config_value(value) for key, value in config.items()})


def default_images(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    fingerprint = config.get("environmentFingerprint")
    return [{"id": MOCK_AMI_ID, "tags": {"daskfleet:env-fingerprint": fingerprint}, "root_device_name": "/dev/xvda"}]


#: What the program packs as the certificate vendor's compiled dependencies here (``make vendor-deps`` builds the
#: real ones, which CI need not download): a stand-in, the same on every machine.
VENDOR_DEPS_STUB = TESTS_DIR / "infra" / "data" / "vendor-deps"


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without stack config, and tests/ and infra/ first on PYTHONPATH for the child's imports."""
    # pytest's ``pythonpath`` setting changes only this process's sys.path: the child has to be told.
    path = [str(TESTS_DIR), str(INFRA_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "DASKFLEET_VENDOR_DEPS": str(VENDOR_DEPS_STUB),
           **(extra or {})}
    env.pop("PULUMI_CONFIG", None)
    return env


def evaluate_program(
    config: Mapping[str, Any] | None = None,
    *,
    images: Sequence[Mapping[str, Any]] | None = None,
    vpcs: Mapping[str, Mapping[str, Any]] | None = None,
    subnets: Mapping[str, Mapping[str, Any]] | None = None,
    stack: str = "test",
    timeout: float = 300,
    program_dir: Path = INFRA_DIR,
    project: str = PROJECT,
    shared: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ProgramRecord:
    """Run infra/__main__.py under ProgramMocks in a fresh process; raise ProgramError if it fails.

    ``shared``: a directory where processes of one test run share their evaluations: the first to ask for a request
    evaluates it (holding a lock on it), the others read its result (the same keys and certificates)."""
    config = dict(example_config() if config is None else config)
    request = {
        "config": config,
        "stack": stack,
        "program_dir": str(program_dir),
        "project": project,
        "mocks": {
            "region": config.get("region", "eu-west-1"),
            "images": default_images(config) if images is None else list(images),
            "vpcs": dict(vpcs or {}),
            "subnets": dict(subnets or {}),
        },
    }
    if shared is None or env:
        result = _evaluate(request, program_dir, timeout, env)
    else:
        result = _shared_evaluation(request, program_dir, timeout, shared)
    if result["error"]:
        declared = [resource["type"] for resource in result["resources"] if resource["custom"]]
        raise ProgramError(**result["error"], declared=declared)
    return ProgramRecord(
        resources=[ResourceRecord(**resource) for resource in result["resources"]],
        outputs=result["outputs"],
        secret_outputs=frozenset(result["secret_outputs"]),
        calls=result["calls"],
        warnings=result["warnings"],
        config=config,
    )


def _evaluate(request: Mapping[str, Any], program_dir: Path, timeout: float,
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="daskfleet-evaluate-") as scratch:
        request_path, result_path = Path(scratch, "request.json"), Path(scratch, "result.json")
        request_path.write_text(json.dumps(request))
        completed = subprocess.run(
            [sys.executable, "-m", CHILD_MODULE, str(request_path), str(result_path)],
            cwd=program_dir, env=_child_env(env), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if not result_path.exists():
            raise RuntimeError(
                f"evaluating the program crashed (exit {completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
            )
        return json.loads(result_path.read_text())


def _shared_evaluation(request: Mapping[str, Any], program_dir: Path, timeout: float, shared: Path) -> dict[str, Any]:
    """The result of ``request`` as the first process of the run to ask for it evaluated it (under a lock)."""
    import fcntl
    import hashlib

    shared.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]
    path = shared / f"{key}.json"
    with open(shared / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return json.loads(path.read_text())
        result = _evaluate(request, program_dir, timeout)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(result))
        partial.replace(path)
        return result


# --- the child process ------------------------------------------------------------------------------


def _run(request: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate the program in this process (once: the mock runtime is process-global)."""
    import runpy
    import traceback

    import pulumi

    from infra.mocks import ProgramMocks, RecordingMonitor, json_safe

    project = request.get("project", PROJECT)
    os.environ["PULUMI_CONFIG"] = pulumi_config_env(request["config"], project)
    mocks = ProgramMocks(**request["mocks"])
    engine_log = _EngineLog()
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=request["stack"], preview=False, monitor=RecordingMonitor(mocks), logger=engine_log.logger,
    )
    exported: dict[str, Any] = {}
    secret: list[str] = []

    async def resolve_exports() -> None:
        for name, value in pulumi.runtime.get_root_resource().outputs.items():
            output = pulumi.Output.from_input(value)
            exported[name] = await output.future()
            if await output.is_secret():
                secret.append(name)

    @pulumi.runtime.test  # runs the function and waits for every registration and output, as the engine would
    def program() -> Awaitable[None]:
        runpy.run_path(str(Path(request.get("program_dir", INFRA_DIR)) / PROGRAM.name), run_name="__main__")
        return resolve_exports()

    error = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # pulumi-aws warns about its own deprecated classes when its modules are imported.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="pulumi_aws")
            warnings.filterwarnings("ignore", category=ResourceWarning)
            program()
    except Exception as exc:  # noqa: BLE001 reported to the parent, which raises ProgramError
        expected = isinstance(exc, pulumi.RunError)  # a user-facing error: its message says it all
        error = {"kind": type(exc).__name__, "message": str(exc), "traceback": "" if expected else traceback.format_exc()}
    return {
        "error": error,
        "resources": json_safe(mocks.resources),
        "outputs": json_safe(exported),
        "secret_outputs": secret,
        "calls": json_safe(mocks.calls),
        "warnings": [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
        + engine_log.messages,
    }


class _EngineLog(logging.Handler):
    """What the program logs through the engine (pulumi.log), e.g. pulumi-aws's warnings on deprecated inputs."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self.logger = logging.getLogger("infra.evaluate.engine")
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"engine {record.levelname.lower()}: {record.getMessage()}")


def _main(argv: Sequence[str]) -> None:
    request_path, result_path = argv
    result = _run(json.loads(Path(request_path).read_text()))
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
