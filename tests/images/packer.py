"""The image template's build block, run here the way Packer runs it on the build instance.

Packer's shell provisioner (https://developer.hashicorp.com/packer/docs/provisioners/shell,
provisioner/shell/provisioner.go): the script is uploaded to the instance, made executable, and
``execute_command`` is rendered and run by the login shell (bash for ec2-user on Amazon Linux):

- ``{{ .Path }}`` is the uploaded script; an ``inline`` list becomes a script whose first line is
  ``#!/bin/sh -e``;
- ``{{ .Vars }}`` is ``env_var_format`` (``"%s='%s' "``) applied to the variables in sorted order:
  ``environment_vars`` plus Packer's own ``PACKER_BUILD_NAME`` and ``PACKER_BUILDER_TYPE``, a
  single quote in a value written as ``'"'"'``;
- without ``execute_command`` the command is ``chmod +x {{.Path}}; {{.Vars}} {{.Path}}``.

The file provisioner copies each source into ``destination``; a directory whose path ends in ``/``
has its contents copied, one without has itself copied. HCL interpolations of the template
(``${var.x}``, ``${local.x}``, ``${path.root}``, ``${basename(...)}``) are resolved from the
values given; any other expression fails the run, so the test cannot skip one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_EXECUTE_COMMAND = "chmod +x {{.Path}}; {{.Vars}} {{.Path}}"
INLINE_SHEBANG = "#!/bin/sh -e"
ENV_VAR_FORMAT = "%s='%s' "


def interpolate(text: str, values: dict[str, str]) -> str:
    """``text`` with every HCL ``${...}`` replaced from ``values`` (``basename(x)`` of one of them too)."""

    def replace(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        call = re.fullmatch(r"basename\((.+)\)", expression)
        if call:
            return PurePosixPath(values[call.group(1)]).name
        if expression not in values:
            raise KeyError(f"the template uses ${{{expression}}}, which the test does not resolve")
        return values[expression]

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def packer_vars(environment_vars: list[str], build_name: str, builder_type: str) -> str:
    """``{{ .Vars }}`` as the shell provisioner renders it."""
    pairs = {"PACKER_BUILD_NAME": build_name, "PACKER_BUILDER_TYPE": builder_type}
    for entry in environment_vars:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ValueError(f"Environment variable not in format 'key=value': {entry}")  # Packer's own check
        pairs[key] = value.replace("'", "'\"'\"'")
    return "".join(ENV_VAR_FORMAT % (key, pairs[key]) for key in sorted(pairs))


def render_execute_command(template: str, variables: str, path: str) -> str:
    """A Go template with ``{{ .Vars }}`` and ``{{ .Path }}`` (spaces inside the braces optional)."""

    def replace(match: re.Match[str]) -> str:
        return {"Vars": variables, "Path": path}[match.group(1)]

    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", replace, template)


@dataclass
class BuildRun:
    """What running the build block did: each shell provisioner's command and completed process."""

    commands: list[str] = field(default_factory=list)
    results: list[subprocess.CompletedProcess] = field(default_factory=list)

    @property
    def last(self) -> subprocess.CompletedProcess:
        return self.results[-1]


def run_build(
    build: dict[str, Any], values: dict[str, str], remote: Path, session_env: dict[str, str],
    *, build_name: str = "node", builder_type: str = "amazon-ebs", timeout: float = 300,
) -> BuildRun:
    """Run the provisioners of ``build`` in order, stopping at the first that fails."""
    run = BuildRun()
    remote.mkdir(parents=True, exist_ok=True)
    for index, step in enumerate(build["provisioner"]):
        ((kind, config),) = step.items()
        if kind == "file":
            _copy(config, values)
            continue
        assert kind == "shell", f"provisioner {kind!r} is not emulated"
        script = remote / f"script_{index}.sh"
        if "inline" in config:
            script.write_text("\n".join([INLINE_SHEBANG, *(interpolate(line, values) for line in config["inline"])]) + "\n")
        else:
            shutil.copyfile(interpolate(config["script"], values), script)
        script.chmod(0o755)
        variables = packer_vars([interpolate(entry, values) for entry in config.get("environment_vars", [])],
                                build_name, builder_type)
        command = render_execute_command(config.get("execute_command", DEFAULT_EXECUTE_COMMAND), variables, str(script))
        run.commands.append(command)
        run.results.append(subprocess.run(["bash", "-c", command], env=session_env, cwd=remote, capture_output=True,
                                          text=True, timeout=timeout, stdin=subprocess.DEVNULL))
        if run.last.returncode != 0:
            break
    return run


def _copy(config: dict[str, Any], values: dict[str, str]) -> None:
    destination = Path(interpolate(config["destination"], values))
    sources = config.get("sources") or [config["source"]]
    for raw in sources:
        source = interpolate(raw, values)
        path = Path(source)
        if path.is_dir():
            target = destination if source.endswith("/") else destination / path.name
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            target = destination / path.name if config["destination"].endswith("/") else destination
            shutil.copyfile(path, target)
