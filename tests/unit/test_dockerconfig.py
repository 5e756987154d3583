from __future__ import annotations

import json
from pathlib import Path

import pytest

from buildonce.docker.config import docker_config_dir, recorded_driver


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "buildx" / "instances").mkdir(parents=True)
    (tmp_path / "buildx" / "instances" / "ci").write_text(json.dumps({"Name": "ci", "Driver": "docker-container"}))
    return tmp_path


def env(config: Path, **extra: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(config), **extra}


def test_config_dir() -> None:
    assert docker_config_dir({"DOCKER_CONFIG": "/x"}) == Path("/x")
    assert docker_config_dir({"HOME": "/home/u"}) == Path("/home/u/.docker")


def test_default_builder_without_any_file(config: Path) -> None:
    assert recorded_driver("", env(config)) == ("default", "docker")


def test_named_and_current_builders(config: Path) -> None:
    assert recorded_driver("ci", env(config)) == ("ci", "docker-container")
    assert recorded_driver("", env(config, BUILDX_BUILDER="ci")) == ("ci", "docker-container")
    current = {"Key": "unix:///var/run/docker.sock", "Name": "ci", "Global": False}
    (config / "buildx" / "current").write_text(json.dumps(current))
    assert recorded_driver("", env(config)) == ("ci", "docker-container")
    (config / "buildx" / "current").write_text(json.dumps({**current, "Name": ""}))
    assert recorded_driver("", env(config)) == ("default", "docker")


@pytest.mark.parametrize(
    ("name", "extra", "config_json", "current_key"),
    [
        ("unknown", {}, None, None),
        ("", {"DOCKER_CONTEXT": "remote"}, None, None),
        ("", {}, {"currentContext": "colima"}, None),
        ("", {}, None, "tcp://elsewhere:2375"),
    ],
)
def test_anything_unusual_asks_buildx(
    config: Path, name: str, extra: dict[str, str], config_json: dict[str, str] | None, current_key: str | None
) -> None:
    if config_json is not None:
        (config / "config.json").write_text(json.dumps(config_json))
    if current_key is not None:
        (config / "buildx" / "current").write_text(json.dumps({"Key": current_key, "Name": "ci", "Global": False}))
    assert recorded_driver(name, env(config, **extra)) is None
