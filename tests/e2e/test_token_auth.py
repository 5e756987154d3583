"""Against a registry that wants bearer tokens, as GHCR, Docker Hub and most hosted registries do.

A real Distribution registry with token auth, and a token service (tests/support/token_server.py) that signs
the tokens. buildonce logs in with the username/password inputs; its own registry client (tag check,
verification, layout push, consume lookups) fetches tokens for the scopes each request needs, and the engine
does the same for its push and pull.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from action_run import Run, run_on_fixture
from build_contexts import scratch_context, unique
from events import payload
from registry_server import TEST_PASSWORD, TEST_USER, RegistryServer
from token_server import TokenServer

FAST = {"retry-wait-seconds": "0.2", "timeout-minutes": "2"}


@pytest.fixture(scope="module")
def token_registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    root = tmp_path_factory.mktemp("token-registry")
    with (
        TokenServer(root / "token", {TEST_USER: TEST_PASSWORD}) as tokens,
        RegistryServer(root / "registry", token=tokens) as server,
    ):
        yield server


def tokens_of(server: RegistryServer) -> TokenServer:
    assert server.token is not None
    return server.token


def login_inputs(server: RegistryServer, password: str = TEST_PASSWORD) -> dict[str, str]:
    return {"registry": server.address, "username": TEST_USER, "password": password}


def run(command: str, workdir: Path, fixture: str, inputs: dict[str, str]) -> Run:
    """buildonce with an empty Docker config of its own: the login inputs are the only credentials."""
    config = workdir / "docker-config"
    config.mkdir(parents=True, exist_ok=True)
    return run_on_fixture(command, workdir, fixture, {**FAST, **inputs}, env={"DOCKER_CONFIG": str(config)})


def pull_with_login(server: RegistryServer, reference: str, config: Path) -> None:
    """An independent look: the docker CLI, logged in on its own, pulls the reference."""
    config.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_CONFIG": str(config)}
    subprocess.run(
        ["docker", "login", server.address, "-u", TEST_USER, "--password-stdin"],
        input=TEST_PASSWORD,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    try:
        pulled = subprocess.run(
            ["docker", "pull", "-q", reference], env=env, capture_output=True, text=True, check=False
        )
        assert pulled.returncode == 0, pulled.stderr
    finally:
        subprocess.run(["docker", "image", "rm", reference], capture_output=True, check=False)


def test_build_push_verify_and_rerun_with_bearer_tokens(token_registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("bearer")
    image = f"{token_registry.address}/acme/{repo}"
    inputs = {"images": image, "tags": "edge", **login_inputs(token_registry)}
    first = run("build", scratch_context(tmp_path / "first"), "push-branch", {**inputs, "artifact": "false"})
    assert first.code == 0, first.log
    assert first.outputs["pushed"] == "true"
    assert "Verified in the registry: 2 reference(s)" in first.log
    # The client asked for what each step needs: pull to look the immutable tag up, push to add a tag.
    asked = tokens_of(token_registry).scopes_asked()
    assert f"repository:acme/{repo}:pull" in asked
    assert f"repository:acme/{repo}:pull,push" in asked
    pull_with_login(token_registry, first.outputs["image"], tmp_path / "pull-config")

    again = run("build", scratch_context(tmp_path / "again"), "push-branch", {**inputs, "artifact": "false"})
    assert again.code == 0, again.log
    assert again.outputs["reused"] == "true"
    assert again.outputs["digest"] == first.outputs["digest"]

    consumed = run("consume", tmp_path / "consume", "push-branch", {"image": image, **login_inputs(token_registry)})
    assert consumed.code == 0, consumed.log
    assert consumed.outputs["source"] == "registry"
    assert consumed.outputs["digest"] == first.outputs["digest"]


def test_layout_push_mounts_across_repositories_with_tokens(token_registry: RegistryServer, tmp_path: Path) -> None:
    first, second = (f"{token_registry.address}/acme/{unique(name)}" for name in ("mount-a", "mount-b"))
    inputs = {"images": f"{first}\n{second}", "push-via": "layout", "artifact": "false"}
    built = run("build", scratch_context(tmp_path / "build"), "push-branch", {**inputs, **login_inputs(token_registry)})
    assert built.code == 0, built.log
    digest = built.outputs["digest"]
    # Mounting a blob into the second repository needs pull on the first in the same token.
    second_repo, first_repo = second.split("/", 1)[1], first.split("/", 1)[1]
    assert any(
        f"repository:{second_repo}:pull,push" in request.scopes and f"repository:{first_repo}:pull" in request.scopes
        for request in tokens_of(token_registry).requests
    ), tokens_of(token_registry).requests
    for image in (first, second):
        pull_with_login(token_registry, f"{image}@{digest}", tmp_path / "pull-config")


def test_a_wrong_password_fails_at_once(token_registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{token_registry.address}/acme/{unique('wrong')}"
    inputs = {"images": image, "artifact": "false", "retry-wait-seconds": "30"}
    denied = run("build", scratch_context(tmp_path), "push-branch", {**inputs, **login_inputs(token_registry, "nope")})
    assert denied.code == 1
    assert denied.warnings() == []  # nothing retried
    (error,) = denied.errors()
    assert token_registry.address in error
    assert "nope" not in error


def test_without_credentials_the_error_says_to_log_in(token_registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{token_registry.address}/acme/{unique('anonymous')}"
    denied = run("build", scratch_context(tmp_path), "push-branch", {"images": image, "artifact": "false"})
    assert denied.code == 1
    (error,) = denied.errors()
    assert "log in" in error


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)


def keyed_repo(root: Path) -> Path:
    """A git work tree whose build context (app/) git holds whole, so that the build has a key."""
    (root / "app").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text(".runner/\ndocker-config/\n")
    (root / "app" / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    (root / "app" / "hello.txt").write_text(unique("keyed"))
    git(root, "add", "-A")
    git(root, "-c", "user.name=CI", "-c", "user.email=ci@example.com", "commit", "-q", "-m", "app")
    return root


def run_at(workdir: Path, sha: str, inputs: dict[str, str]) -> Run:
    """A push to a branch at ``sha``, with the login inputs as the only credentials."""
    config = workdir / "docker-config"
    config.mkdir(parents=True, exist_ok=True)
    data = payload("push-branch")
    data["after"] = sha
    data["head_commit"] = {**data["head_commit"], "id": sha}
    env = {"DOCKER_CONFIG": str(config), "GITHUB_SHA": sha}
    return run_on_fixture("build", workdir, "push-branch", {**FAST, **inputs}, env=env, data=data)


def test_a_keyed_build_logs_the_engine_in_for_its_push_and_a_promotions_pull(
    token_registry: RegistryServer, tmp_path: Path
) -> None:
    repo = keyed_repo(tmp_path / "repo")
    image = f"{token_registry.address}/acme/{unique('keyed')}"
    inputs = {"images": image, "context": "app", "artifact": "false", **login_inputs(token_registry)}
    first = run_at(repo, "1" * 40, inputs)
    assert first.code == 0, first.log
    assert first.outputs["build-key"]
    assert "Built sha256" in first.log  # looked up by key, found nothing, built and pushed by the engine
    assert first.outputs["pushed"] == "true"
    pull_with_login(token_registry, first.outputs["image"], tmp_path / "pull-config")

    # Another commit with the same build: promoted registry-side, then pulled by the engine to load it.
    second = run_at(repo, "2" * 40, {**inputs, "load": "true"})
    assert second.code == 0, second.log
    assert second.outputs["promoted-from"] == first.outputs["digest"]
    assert "Built sha256" not in second.log
    loaded = subprocess.run(
        ["docker", "image", "inspect", second.outputs["image"]], capture_output=True, text=True, check=False
    )
    subprocess.run(["docker", "image", "rm", second.outputs["image"]], capture_output=True, check=False)
    assert loaded.returncode == 0, loaded.stderr


def test_a_wrong_password_fails_a_keyed_build_before_buildx_starts(
    token_registry: RegistryServer, tmp_path: Path
) -> None:
    repo = keyed_repo(tmp_path / "repo")
    image = f"{token_registry.address}/acme/{unique('keyed-wrong')}"
    inputs = {"images": image, "context": "app", "artifact": "false", **login_inputs(token_registry, "nope")}
    denied = run_at(repo, "3" * 40, inputs)
    assert denied.code == 1
    (error,) = denied.errors()
    assert token_registry.address in error
    assert "nope" not in error
    assert "Build: docker buildx build" not in denied.log
