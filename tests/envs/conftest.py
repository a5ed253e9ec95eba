"""Environments without conda channels: a channel the tests build and serve (see envs/channel.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from envs.channel import ChannelServer, build_channel

from daskfleet.environments.wheel import build_wheel

from support import REPO


@pytest.fixture(scope="session")
def channel_root(tmp_path_factory) -> Path:
    """A directory holding ``channel/``: stub pythons for five platforms and the test projects."""
    root = tmp_path_factory.mktemp("conda")
    build_channel(root / "channel")
    return root


@pytest.fixture(scope="session")
def channel(channel_root: Path) -> Iterator[ChannelServer]:
    """The test channel served over HTTP on 127.0.0.1; ``channel.url + '/channel'`` is the channel URL."""
    with ChannelServer(channel_root) as server:
        yield server


@pytest.fixture(scope="session")
def daskfleet_wheel(tmp_path_factory) -> Path:
    """daskfleet's wheel, built once from this checkout."""
    return build_wheel(REPO, tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $DASKFLEET_HOME: its own package cache and repodata cache."""
    path = tmp_path / "home"
    monkeypatch.setenv("DASKFLEET_HOME", str(path))
    return path


def write_spec(directory: Path, channel_url: str, dependencies: Sequence[str], platforms: Sequence[str] = ("linux-64",)) -> Path:
    """An environment.yml in ``directory`` using the test channel."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"channels:\n  - {channel_url}/channel", "platforms:", *(f"  - {p}" for p in platforms), "dependencies:"]
    python = ".".join(map(str, sys.version_info[:2]))
    lines += [f"  - python {python}.*", *(f"  - {dependency}" for dependency in dependencies)]
    spec = directory / "environment.yml"
    spec.write_text("\n".join(lines) + "\n")
    return spec
