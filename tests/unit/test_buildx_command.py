from __future__ import annotations

import json
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

import pytest
from events import payload, runner_env

from buildonce.docker import config as docker_config
from buildonce.docker.buildx import Output, build_command, buildx_program, check_paths
from buildonce.docker.config import Login, docker_config_with_login
from buildonce.errors import InputError
from buildonce.github.context import build_context
from buildonce.github.workflow import Inputs
from buildonce.options import build_options
from buildonce.plan import make_plan

SECRET = "s3cr3t-value-that-must-not-leak"


def command(extra: dict[str, str], output: Output = Output.ENGINE, env: dict[str, str] | None = None) -> list[str]:
    inputs = Inputs({}, {"images": "ghcr.io/acme/widget", **extra})
    options = build_options(inputs)
    ctx = build_context(runner_env("pull-request"), payload("pull-request"))
    plan = make_plan(ctx, options.plan, now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    cmd = build_command(
        options,
        plan,
        output=output,
        metadata_file=Path("/m.json"),
        iidfile=Path("/iid"),
        layout_dir=Path("/layout"),
        source_date_epoch=1700000000,
        env=env or {},
    )
    assert all(SECRET not in arg for arg in cmd.argv)
    return cmd.argv


def test_argument_list_has_every_planned_piece() -> None:
    argv = command(
        {
            "platforms": "linux/amd64,linux/arm64",
            "build-args": "A=1\nB=two words",
            "target": "prod",
            "cache-from": "type=gha",
            "cache-to": "type=gha,mode=max",
            "provenance": "false",
            "sbom": "true",
            "no-cache": "true",
            "pull": "true",
            "network": "host",
            "builder": "ci",
            "file": "x/Dockerfile",
        }
    )
    assert argv[:5] == ["docker", "buildx", "build", "--progress", "plain"]
    assert argv[-2:] == ["--", "."]
    pairs = list(pairwise(argv))
    for pair in [
        ("--platform", "linux/amd64,linux/arm64"),
        ("--build-arg", "A=1"),
        ("--build-arg", "B=two words"),
        ("--build-arg", "SOURCE_DATE_EPOCH=1700000000"),
        ("--target", "prod"),
        ("--cache-from", "type=gha"),
        ("--cache-to", "type=gha,mode=max"),
        ("--provenance", "false"),
        ("--sbom", "true"),
        ("--network", "host"),
        ("--builder", "ci"),
        ("--file", "x/Dockerfile"),
        ("--tag", "ghcr.io/acme/widget:pr-123-abc1234"),
        ("--metadata-file", "/m.json"),
        ("--iidfile", "/iid"),
    ]:
        assert pair in pairs, pair
    assert "--no-cache" in argv
    assert "--pull" in argv
    assert "--load" in argv
    assert ("--label", "dev.buildonce.pr.number=123") in pairs
    assert ("--annotation", "manifest:org.opencontainers.image.revision=" + "5" * 40) in pairs


def test_layout_output() -> None:
    argv = command({}, Output.LAYOUT)
    assert ("--output", "type=oci,dest=/layout,tar=false") in list(pairwise(argv))
    assert "--load" not in argv


def test_user_source_date_epoch_wins() -> None:
    argv = command({"build-args": "SOURCE_DATE_EPOCH=5"})
    assert argv.count("--build-arg") == 1


def test_secret_values_go_through_the_environment_only() -> None:
    inputs = Inputs(
        {},
        {"images": "a/b", "secrets": f"token={SECRET}", "secret-envs": "npm=NPM_TOKEN", "secret-files": "cert=ca.pem"},
    )
    options = build_options(inputs)
    ctx = build_context(runner_env("push-branch"), payload("push-branch"))
    plan = make_plan(ctx, options.plan, now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    cmd = build_command(
        options, plan, output=Output.ENGINE, metadata_file=Path("m"), iidfile=Path("i"), env={"NPM_TOKEN": "x"}
    )
    assert all(SECRET not in arg for arg in cmd.argv)
    assert cmd.env == {"BUILDONCE_SECRET_0": SECRET}
    pairs = list(pairwise(cmd.argv))
    assert ("--secret", "id=token,env=BUILDONCE_SECRET_0") in pairs
    assert ("--secret", "id=npm,env=NPM_TOKEN") in pairs
    assert ("--secret", "id=cert,src=ca.pem") in pairs
    with pytest.raises(InputError, match="NPM_TOKEN"):
        build_command(options, plan, output=Output.ENGINE, metadata_file=Path("m"), iidfile=Path("i"), env={})


def test_a_context_starting_with_a_dash_is_not_a_flag() -> None:
    argv = command({"context": "-weird"})
    assert argv[-2:] == ["--", "-weird"]


def test_check_paths(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    with pytest.raises(InputError, match="input 'context'"):
        check_paths(build_options(Inputs({}, {"images": "a/b", "context": "nope"})), tmp_path)
    with pytest.raises(InputError, match="input 'file'"):
        check_paths(build_options(Inputs({}, {"images": "a/b", "context": "ctx"})), tmp_path)
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    check_paths(build_options(Inputs({}, {"images": "a/b", "context": "ctx"})), tmp_path)
    check_paths(build_options(Inputs({}, {"images": "a/b", "context": "https://github.com/a/b.git"})), tmp_path)


def test_login_overlay_keeps_the_users_config_and_removes_itself(tmp_path: Path) -> None:
    config = tmp_path / "docker"
    (config / "buildx").mkdir(parents=True)
    (config / "config.json").write_text('{"auths": {"other.io": {"auth": "eDp5"}}, "credsStore": "desktop"}')
    env = {"DOCKER_CONFIG": str(config), "PATH": "/usr/bin"}
    with docker_config_with_login(env, Login("ghcr.io", "bob", SECRET)) as overlay_env:
        overlay = Path(overlay_env["DOCKER_CONFIG"])
        assert overlay != config
        data = (overlay / "config.json").read_text()
        assert '"other.io"' in data
        assert '"ghcr.io"' in data
        assert "credsStore" not in data
        assert (overlay / "buildx").resolve() == (config / "buildx").resolve()
        assert (overlay / "config.json").stat().st_mode & 0o077 == 0
    assert not overlay.exists()
    assert SECRET not in (config / "config.json").read_text()
    with docker_config_with_login(env, None) as same:
        assert same == env


def test_the_engine_gets_only_the_immutable_names_loaded_or_not() -> None:
    images = {"images": "ghcr.io/acme/a\nquay.io/acme/b", "tags": "x,y"}
    for inputs in (images, {**images, "load": "false", "artifact": "false"}):
        tags = [value for flag, value in pairwise(command(inputs)) if flag == "--tag"]
        assert tags == ["ghcr.io/acme/a:pr-123-abc1234", "quay.io/acme/b:pr-123-abc1234"]
    assert command({**images, "load": "false", "artifact": "false"}, Output.LAYOUT).count("--tag") == 6


def plugin(directory: Path, *, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    made = directory / "docker-buildx"
    made.write_text("#!/bin/sh\n")
    made.chmod(0o755 if executable else 0o644)
    return made


def test_buildx_is_run_as_the_plugin_the_docker_cli_would_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-lib"
    monkeypatch.setattr(docker_config, "SYSTEM_PLUGIN_DIRS", (str(tmp_path / "none"), str(system)))
    config = tmp_path / "config"
    env = {"DOCKER_CONFIG": str(config), "HOME": str(tmp_path / "home")}
    # Nowhere to be found: the CLI is asked, and says what is missing.
    assert buildx_program(env) == ["docker", "buildx"]
    plugin(system / "cli-plugins" / "x")  # not where the CLI looks
    assert buildx_program(env) == ["docker", "buildx"]
    in_system = plugin(system)
    assert buildx_program(env) == [str(in_system)]
    # The user's own plugin (setup-buildx-action puts it there) comes before the system's.
    plugin(config / "cli-plugins", executable=False)
    assert buildx_program(env) == [str(in_system)]
    users = plugin(config / "cli-plugins")
    assert buildx_program(env) == [str(users)]
    # config.json's extra directories come first of all.
    extra = plugin(tmp_path / "extra")
    (config / "config.json").write_text(
        json.dumps({"cliPluginsExtraDirs": [str(tmp_path / "missing"), str(extra.parent)]})
    )
    assert buildx_program(env) == [str(extra)]
    # Without DOCKER_CONFIG, the home directory's config is the CLI's.
    home_plugin = plugin(tmp_path / "home" / ".docker" / "cli-plugins")
    assert buildx_program({"HOME": str(tmp_path / "home")}) == [str(home_plugin)]


def test_the_build_runs_the_program_it_is_given() -> None:
    inputs = Inputs({}, {"images": "ghcr.io/acme/widget"})
    options = build_options(inputs)
    ctx = build_context(runner_env("pull-request"), payload("pull-request"))
    plan = make_plan(ctx, options.plan, now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    argv = build_command(
        options,
        plan,
        output=Output.ENGINE,
        metadata_file=Path("/m.json"),
        iidfile=Path("/iid"),
        program=["/opt/plugins/docker-buildx"],
    ).argv
    assert argv[:4] == ["/opt/plugins/docker-buildx", "build", "--progress", "plain"]
