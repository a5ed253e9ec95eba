"""Which old URNs a program's resources carry over, as the Pulumi engine decides it, and a snapshot of a program.

Test machinery (``infra.urns``). The engine matches a resource to state by its URN or any of its
aliases: its own (``Alias`` specs, resolved against where the resource is now) and those it
inherits from its parent's aliases (the parent's alias URN as its parent, and the parent's name
prefix of its own name replaced by the alias's name: engine ``inheritedChildAlias``). ``carried_over``
maps each URN a program answers to the resource that answers it.

``snapshot`` records what an evaluation declared, by URN: type and inputs, with every value that is
new on each evaluation (PEM material) replaced by a marker. ``python -m infra.urns PROGRAM_DIR OUT``
writes one for the program in PROGRAM_DIR (tests/infra/data/README.md says how the committed one was made).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from infra.evaluate import ProgramRecord, ResourceRecord, evaluate_program

ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
PEM_MARKER = "<new on every evaluation: PEM material>"


def _qualified_type(urn: str) -> str:
    return urn.split("::")[2]


def make_urn(stack: str, project: str, parent: str, type_: str, name: str) -> str:
    """The engine's URN: under a parent other than the root stack, the type is the parent's chain and its own."""
    if parent and _qualified_type(parent) != ROOT_STACK_TYPE:
        type_ = f"{_qualified_type(parent)}${type_}"
    return f"urn:pulumi:{stack}::{project}::{type_}::{name}"


def _stack_and_project(urn: str) -> tuple[str, str]:
    parts = urn.split("::")
    return parts[0].removeprefix("urn:pulumi:"), parts[1]


def _own_alias(resource: ResourceRecord, alias: Mapping[str, Any]) -> str:
    if alias.get("urn"):
        return alias["urn"]
    stack, project = _stack_and_project(resource.urn)
    parent = "" if alias.get("no_parent") else (alias.get("parent") or resource.parent)
    return make_urn(alias.get("stack") or stack, alias.get("project") or project, parent,
                    alias.get("type") or resource.type, alias.get("name") or resource.name)


def alias_urns(record: ProgramRecord) -> dict[str, set[str]]:
    """Each resource's URN -> every URN it also answers to (own and inherited aliases)."""
    by_urn = {resource.urn: resource for resource in record.resources}
    found: dict[str, set[str]] = {}

    def aliases(resource: ResourceRecord) -> set[str]:
        if resource.urn in found:
            return found[resource.urn]
        own = {_own_alias(resource, alias) for alias in resource.aliases}
        parent = by_urn.get(resource.parent)
        inherited = set()
        if parent is not None:
            stack, project = _stack_and_project(resource.urn)
            for parent_alias in aliases(parent):
                alias_name = parent_alias.rsplit("::", 1)[1]
                name = (alias_name + resource.name[len(parent.name):] if resource.name.startswith(parent.name)
                        else resource.name)
                inherited.add(make_urn(stack, project, parent_alias, resource.type, name))
        found[resource.urn] = own | inherited
        return found[resource.urn]

    for resource in record.resources:
        aliases(resource)
    return found


def carried_over(record: ProgramRecord) -> dict[str, ResourceRecord]:
    """URN (its own or an alias) -> the resource of ``record`` the engine would match to state under that URN."""
    answers: dict[str, ResourceRecord] = {}
    for resource in record.resources:
        for urn in {resource.urn} | alias_urns(record)[resource.urn]:
            answers.setdefault(urn, resource)
    return answers


def _stable(value: Any) -> Any:
    if isinstance(value, str):
        return PEM_MARKER if "-----BEGIN" in value else value
    if isinstance(value, Mapping):
        return {key: _stable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stable(item) for item in value]
    return value


def snapshot(record: ProgramRecord) -> dict[str, dict[str, Any]]:
    """URN -> {"type", "inputs"} of every resource, PEM material replaced by a marker."""
    return {resource.urn: {"type": resource.type, "inputs": _stable(resource.inputs)}
            for resource in sorted(record.resources, key=lambda r: r.urn)}


def main(argv: list[str]) -> None:
    program_dir, out = Path(argv[0]).resolve(), Path(argv[1])
    # That program's own example stack: the keys it knows.
    document = yaml.safe_load((program_dir / "Pulumi.example.yaml").read_text())
    config = {key.removeprefix("daskfleet:"): value for key, value in document["config"].items()}
    record = evaluate_program(config, program_dir=program_dir)
    out.write_text(json.dumps(snapshot(record), indent=1, sort_keys=True) + "\n")
    print(f"{len(record.resources)} resources of {program_dir} written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
