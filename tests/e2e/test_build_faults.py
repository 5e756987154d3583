"""Registry faults during ``buildonce build``: retried when transient, never by building again.

A fault-injecting proxy sits between the real engine (and buildonce's registry client) and the real
registry. Each build has a RUN step that prints a fresh nonce, so the log shows how often it really ran.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
import registry_api
from action_run import Run, run_on_fixture
from build_contexts import unique
from faultproxy import Drop, Fault, FaultProxy, Hang, Status
from registry_server import TEST_PASSWORD, TEST_USER, RegistryServer


def run_step_context(directory: Path, base: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(
        f'FROM {base}\nARG NONCE\nRUN echo "build-step-ran-$NONCE" && echo "$NONCE" > /nonce\n'
    )
    return directory


def build(workdir: Path, images: str, inputs: dict[str, str] | None = None) -> tuple[Run, str]:
    nonce = uuid.uuid4().hex
    run = run_on_fixture(
        "build",
        workdir,
        "push-branch",
        {
            "images": images,
            "build-args": f"NONCE={nonce}",
            "retry-wait-seconds": "0.2",
            "timeout-minutes": "1",
            **(inputs or {}),
        },
    )
    return run, nonce


def assert_built_once(run: Run, nonce: str) -> None:
    assert run.log.count("::group::Build") == 1
    # BuildKit prints a RUN step's output as "#N <seconds> <text>" only when the step really runs.
    executions = re.findall(rf"^#\d+ \d+\.\d+ build-step-ran-{nonce}$", run.log, flags=re.MULTILINE)
    assert len(executions) == 1


TRANSIENT: list[tuple[str, Fault, str, str]] = [
    ("503 on blob upload", Status(503), "PUT", r"/blobs/uploads/"),
    ("503 on manifest PUT", Status(503), "PUT", r"/manifests/"),
    ("500 on upload start", Status(500), "POST", r"/blobs/uploads/"),
    ("dropped connection", Drop(), "PUT", r"/manifests/"),
]


@pytest.mark.parametrize(("name", "fault", "method", "path"), TRANSIENT, ids=[case[0] for case in TRANSIENT])
@pytest.mark.parametrize("push_via", ["engine", "layout"])
def test_transient_fault_is_retried_without_rebuilding(
    fault_proxy: FaultProxy,
    registry: RegistryServer,
    busybox_image: str,
    tmp_path: Path,
    name: str,
    fault: Fault,
    method: str,
    path: str,
    push_via: str,
) -> None:
    repo = unique("fault")
    rule = fault_proxy.add_rule(fault, method=method, path=path, times=1)
    run, nonce = build(
        run_step_context(tmp_path, busybox_image), f"{fault_proxy.address}/{repo}", {"push-via": push_via}
    )
    assert run.code == 0, run.log
    assert rule.hits == 1
    assert run.outputs["attempts"] == "2"
    assert_built_once(run, nonce)
    (warning,) = run.warnings()
    assert "attempt 1 of 3" in warning
    digest = run.outputs["digest"]
    assert registry_api.digest_of(registry.address, repo, "feature-add-new-feature-abc1234") == digest


def test_hung_push_is_cut_by_the_timeout_and_retried(
    fault_proxy: FaultProxy, registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    repo = unique("hang")
    rule = fault_proxy.add_rule(Hang(300), method="PUT", path=r"/manifests/", times=1)
    started = time.monotonic()
    run, nonce = build(
        run_step_context(tmp_path, busybox_image), f"{fault_proxy.address}/{repo}", {"timeout-minutes": "0.1"}
    )
    elapsed = time.monotonic() - started
    assert run.code == 0, run.log
    assert rule.hits == 1
    assert int(run.outputs["attempts"]) >= 2
    assert_built_once(run, nonce)
    assert elapsed < 120
    assert registry_api.digest_of(registry.address, repo, "feature-add-new-feature-abc1234") == run.outputs["digest"]


def test_retry_after_on_429_is_honoured(
    fault_proxy: FaultProxy, registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    repo = unique("slow-down")
    # buildonce's own registry client sees the header (the engine hides it), so push through the layout.
    rule = fault_proxy.add_rule(Status(429, {"Retry-After": "2"}), method="POST", path=r"/blobs/uploads/", times=1)
    run, nonce = build(
        run_step_context(tmp_path, busybox_image), f"{fault_proxy.address}/{repo}", {"push-via": "layout"}
    )
    assert run.code == 0, run.log
    assert rule.hits == 1
    (warning,) = run.warnings()
    assert "429" in warning
    assert "retrying in 2 s" in warning
    assert_built_once(run, nonce)


def test_transient_faults_that_never_stop_fail_after_the_attempts(
    fault_proxy: FaultProxy, registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    repo = unique("down")
    rule = fault_proxy.add_rule(Status(503), method="PUT", path=r"/manifests/", times=None)
    run, nonce = build(
        run_step_context(tmp_path, busybox_image), f"{fault_proxy.address}/{repo}", {"retry-attempts": "2"}
    )
    assert run.code == 1
    assert rule.hits >= 2
    (error,) = run.errors()
    assert "after 2 attempts" in error
    assert "503" in error
    assert len(run.warnings()) == 1
    assert_built_once(run, nonce)
    assert run.outputs == {}


@pytest.mark.parametrize(("method", "path"), [(None, r"^/v2/"), ("POST", r"/blobs/uploads/")])
def test_401_fails_fast_without_retrying(
    fault_proxy: FaultProxy, registry: RegistryServer, tmp_path: Path, method: str | None, path: str
) -> None:
    repo = unique("denied")
    fault_proxy.add_rule(Status(401, {"WWW-Authenticate": 'Basic realm="test"'}), method=method, path=path, times=None)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    started = time.monotonic()
    run, _ = build(context, f"{fault_proxy.address}/{repo}", {"retry-wait-seconds": "30"})
    assert run.code == 1
    assert time.monotonic() - started < 60
    assert run.warnings() == []
    (error,) = run.errors()
    assert "credentials" in error
    assert registry_api.tags(registry.address, repo) == []


def test_login_inputs_push_to_a_registry_that_requires_them(
    auth_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = unique("login")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    image = f"{auth_registry.address}/{repo}"
    denied, _ = build(context, image)
    assert denied.code == 1
    assert "credentials" in denied.errors()[0]
    run, _ = build(
        context, image, {"registry": auth_registry.address, "username": TEST_USER, "password": TEST_PASSWORD}
    )
    assert run.code == 0, run.log
    assert run.outputs["digest"].startswith("sha256:")
    assert f"::add-mask::{TEST_PASSWORD}" in run.log
    assert run.log.count(TEST_PASSWORD) == 1  # only the mask command itself
    assert not (home / ".docker" / "config.json").exists()
    wrong, _ = build(context, image, {"registry": auth_registry.address, "username": TEST_USER, "password": "nope-x"})
    assert wrong.code == 1
    assert "login to" in wrong.errors()[0]


def test_attempts_counts_retried_look_ups_too(fault_proxy: FaultProxy, busybox_image: str, tmp_path: Path) -> None:
    repo = unique("lookup")
    # The immutable tag's look-up, beside the build: two server errors, then its answer.
    fault_proxy.add_rule(Status(500), method="HEAD", path=r"/manifests/feature-", times=2)
    run, nonce = build(run_step_context(tmp_path, busybox_image), f"{fault_proxy.address}/{repo}")
    assert run.code == 0, run.log
    assert fault_proxy.count("HEAD", r"/manifests/feature-", "status:500") == 2
    assert run.outputs["attempts"] == "3"
    assert_built_once(run, nonce)
