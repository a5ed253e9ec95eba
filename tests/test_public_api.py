"""The documented public names of ``daskfleet`` keep working whatever else was imported."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import daskfleet
from daskfleet.errors import DaskfleetError


def _import_every_subpackage() -> list[str]:
    names = []
    for module in pkgutil.walk_packages(daskfleet.__path__, "daskfleet."):
        if module.name.endswith("__main__"):  # importing it runs the command line
            continue
        importlib.import_module(module.name)
        names.append(module.name)
    return names


def test_every_public_name_stays_callable_after_importing_every_subpackage():
    imported = _import_every_subpackage()
    assert "daskfleet.client.connect" in imported
    for name in daskfleet.__all__:
        assert callable(getattr(daskfleet, name)), f"daskfleet.{name} was rebound to {getattr(daskfleet, name)!r}"


def test_security_works_after_connect(local_cluster):
    client = daskfleet.connect("local", state_dir=local_cluster.state_dir)
    try:
        assert client.submit(sum, [1, 2]).result(timeout=60) == 3
    finally:
        client.close()
    _import_every_subpackage()
    sec = daskfleet.security("local", state_dir=local_cluster.state_dir)
    assert sec.require_encryption
    with pytest.raises(DaskfleetError, match="no client certificate"):
        daskfleet.security("local", state_dir="/nonexistent/daskfleet-state")
