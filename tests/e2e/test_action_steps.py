"""action.yml and consume/action.yml run step by step, as the runner runs a composite action.

Each ``run:`` step gets its ``env:`` rendered from the inputs (a small evaluator for the expressions the
actions use) and runs under ``bash --noprofile --norc -eo pipefail`` with fresh ``GITHUB_OUTPUT`` and
``GITHUB_ENV`` files; each ``uses:`` step is recorded with its rendered ``with:`` and answered by the test
(the artifact actions need GitHub's service). The action's ``outputs:`` are then evaluated from the step
outputs and compared with what the real registry serves. Distinctive values for several inputs make an input
wired to the wrong variable fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import registry_api
import yaml
from events import runner_env
from registry_server import RegistryServer
from runner_format import commands, parse_outputs

ROOT = Path(__file__).resolve().parents[2]
BUILD_ACTION = ROOT / "action.yml"
CONSUME_ACTION = ROOT / "consume" / "action.yml"
BASH = shutil.which("bash") or "/bin/bash"
FAST = {"retry-wait-seconds": "0.2", "retry-attempts": "2", "timeout-minutes": "2"}
PR_HEAD = "abc1234" + "a" * 33
"""The head commit of pull request #123 in tests/fixtures/events/pull-request.json."""


# --- expressions --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>\|\||&&|==|!=|!|\(|\))|(?P<path>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*))"
)
_CONTEXTS = frozenset({"inputs", "github", "runner", "steps", "env"})


def _truthy(value: Any) -> bool:
    return value not in (None, "", False, 0)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Expression:
    """``${{ }}`` expressions: context paths, '' strings, ==, !=, !, &&, || and parentheses, as GitHub
    evaluates them (|| and && yield an operand; == on strings ignores case). Anything else is an error, so
    an action that starts using more fails here rather than passing untested."""

    def __init__(self, text: str, contexts: dict[str, Any]) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text.rstrip()):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise ValueError(f"cannot evaluate {text!r} at {text[position:]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match[kind]))
            position = match.end()
        self.contexts = contexts
        self.index = 0

    def evaluate(self) -> Any:
        value = self._or()
        if self.index != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.index]}")
        return value

    def _peek(self) -> str:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else ""

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self.index += 1
            right = self._and()
            value = value if _truthy(value) else right
        return value

    def _and(self) -> Any:
        value = self._compare()
        while self._peek() == "&&":
            self.index += 1
            right = self._compare()
            value = right if _truthy(value) else value
        return value

    def _compare(self) -> Any:
        left = self._unary()
        if self._peek() in ("==", "!="):
            operator = self._peek()
            self.index += 1
            right = self._unary()
            equal = _text(left).lower() == _text(right).lower()
            return equal if operator == "==" else not equal
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self.index += 1
            return not _truthy(self._unary())
        return self._primary()

    def _primary(self) -> Any:
        kind, token = self.tokens[self.index]
        self.index += 1
        if token == "(":
            inner = self._or()
            assert self._peek() == ")", "unbalanced parentheses"
            self.index += 1
            return inner
        if kind == "string":
            return token[1:-1].replace("''", "'")
        if kind != "path":
            raise ValueError(f"unexpected {token!r}")
        root, *rest = token.split(".")
        if root not in _CONTEXTS:
            raise ValueError(f"the context {root!r} is not known to this evaluator")
        value: Any = self.contexts[root]
        for part in rest:
            value = value.get(part) if isinstance(value, dict) else None
        return value


def evaluate(text: str, contexts: dict[str, Any]) -> Any:
    return Expression(text, contexts).evaluate()


def render(template: Any, contexts: dict[str, Any]) -> str:
    """A value with ``${{ }}`` parts, as the runner renders it into a string."""
    text = template if isinstance(template, str) else _text(template)  # YAML's true is the string "true"
    return re.sub(r"\$\{\{(.*?)\}\}", lambda match: _text(evaluate(match[1], contexts)), text)


def condition(text: str, contexts: dict[str, Any]) -> bool:
    inner = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", text)
    return _truthy(evaluate(inner[1] if inner else text, contexts))


# --- the composite runner -----------------------------------------------------------------------------------


@dataclass
class Uses:
    """A ``uses:`` step the test answers: the action and its rendered ``with:``."""

    action: str
    inputs: dict[str, str]


UsesHandler = Callable[[Uses], tuple[bool, dict[str, str]]]
"""Answers a ``uses:`` step: (succeeded, outputs)."""


def succeed(call: Uses) -> tuple[bool, dict[str, str]]:
    return True, {}


@dataclass
class Step:
    id: str
    outcome: str
    outputs: dict[str, str]
    log: str = ""


@dataclass
class ActionRun:
    steps: list[Step]
    outputs: dict[str, str]
    calls: list[Uses] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(step.outcome == "failure" for step in self.steps)

    @property
    def log(self) -> str:
        return "\n".join(step.log for step in self.steps)

    def step(self, step_id: str) -> Step:
        return next(step for step in self.steps if step.id == step_id)


@dataclass
class Runner:
    """One job: its workspace, its RUNNER_TEMP, the event, and the environment every step starts from."""

    workspace: Path
    temp: Path
    github_env: dict[str, str]
    base_env: dict[str, str] = field(default_factory=dict)
    handlers: dict[str, UsesHandler] = field(default_factory=dict)

    def run(self, action_file: Path, inputs: dict[str, str]) -> ActionRun:
        action = yaml.safe_load(action_file.read_text())
        unknown = set(inputs) - set(action["inputs"])
        assert not unknown, f"{action_file.name} has no inputs {unknown}"
        values = {name: inputs.get(name, spec.get("default", "")) for name, spec in action["inputs"].items()}
        contexts: dict[str, Any] = {
            "inputs": values,
            "github": {
                "action_path": str(action_file.parent),
                "repository": self.github_env["GITHUB_REPOSITORY"],
                "run_id": self.github_env["GITHUB_RUN_ID"],
                "workspace": str(self.workspace),
                "event_name": self.github_env["GITHUB_EVENT_NAME"],
            },
            "runner": {"temp": str(self.temp)},
            "steps": {},
            "env": {},
        }
        run = ActionRun(steps=[], outputs={})
        added_env: dict[str, str] = {}
        failed = False
        for number, spec in enumerate(action["runs"]["steps"]):
            step_id = spec.get("id", f"~{number}")
            if failed or ("if" in spec and not condition(spec["if"], contexts)):
                step = Step(step_id, "skipped", {})
            elif "uses" in spec:
                call = Uses(spec["uses"], {key: render(value, contexts) for key, value in spec["with"].items()})
                run.calls.append(call)
                handler = self.handlers.get(call.action.split("@")[0], succeed)
                succeeded, outputs = handler(call)
                step = Step(step_id, "success" if succeeded else "failure", outputs)
            else:
                step = self.run_script(step_id, spec, contexts, action_file.parent, added_env)
            if step.outcome == "failure" and spec.get("continue-on-error") is True:
                step.outcome = "failure-continued"  # outcome failure, conclusion success: the job goes on
            elif step.outcome == "failure":
                failed = True
            run.steps.append(step)
            outcome = "failure" if step.outcome == "failure-continued" else step.outcome
            contexts["steps"][step_id] = {"outputs": step.outputs, "outcome": outcome}
        if not failed:
            run.outputs = {name: render(spec["value"], contexts) for name, spec in action["outputs"].items()}
        return run

    def run_script(
        self, step_id: str, spec: dict[str, Any], contexts: dict[str, Any], action_dir: Path, added: dict[str, str]
    ) -> Step:
        assert spec["shell"] == "bash"
        files = self.temp / "_runner_files" / uuid.uuid4().hex
        files.mkdir(parents=True)
        output, github_env, script = files / "output", files / "env", files / "script.sh"
        output.write_text("")
        github_env.write_text("")
        script.write_text(spec["run"])
        env = {
            **self.base_env,
            **self.github_env,
            **added,
            "GITHUB_ACTION_PATH": str(action_dir),
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_ENV": str(github_env),
            "GITHUB_STEP_SUMMARY": str(files / "summary"),
            "RUNNER_TEMP": str(self.temp),
        }
        env.update({key: render(value, contexts) for key, value in spec.get("env", {}).items()})
        result = subprocess.run(
            [BASH, "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        added.update(parse_outputs(github_env.read_text()))
        outcome = "success" if result.returncode == 0 else "failure"
        return Step(step_id, outcome, parse_outputs(output.read_text()), result.stdout + result.stderr)


def base_environment() -> dict[str, str]:
    """The machine's environment, less anything a runner sets per job or step."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("INPUT_", "GITHUB_", "RUNNER_"))}


# --- fixtures -----------------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def job(workspace: Path, temp: Path, fixture: str, **handlers: UsesHandler) -> Runner:
    # A checkout may hold a directory named buildonce; it must not shadow the installed package.
    decoy = workspace / "buildonce"
    decoy.mkdir(parents=True, exist_ok=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "__main__.py").write_text("raise SystemExit('the workspace shadowed the installed buildonce')\n")
    return Runner(workspace, temp, runner_env(fixture), base_environment(), dict(handlers))


@pytest.fixture(scope="session")
def runner_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One RUNNER_TEMP for the session, as for the steps of one job: the install runs once, then is reused.
    return tmp_path_factory.mktemp("runner-temp")


@pytest.fixture(scope="session")
def installed(engine: None, runner_temp: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the install step alone, once, and return the interpreter it reports."""
    workspace = tmp_path_factory.mktemp("install-workspace")
    action = yaml.safe_load(BUILD_ACTION.read_text())
    spec = next(step for step in action["runs"]["steps"] if step.get("id") == "install")
    runner = job(workspace, runner_temp, "pull-request")
    step = runner.run_script("install", spec, {}, ROOT, {})
    assert step.outcome == "success", step.log
    python = step.outputs["python"]
    assert Path(python).is_file()
    assert python.startswith(str(runner_temp))
    # The same buildonce is there now: a second call in the job skips the install and reports the same venv.
    again = runner.run_script("install", spec, {}, ROOT, {})
    assert again.outcome == "success", again.log
    assert "is already installed" in again.log
    assert again.outputs == {"python": python}
    return python


def write_context(directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hello.txt").write_text(text)
    (directory / "Dockerfile").write_text(
        "FROM scratch\nARG MARKER=unset\nLABEL org.example.marker=${MARKER}\nCOPY hello.txt /hello.txt\n"
    )


def download_from(artifact: Path) -> UsesHandler:
    """A download-artifact stand-in: put the build's tar and checksum, what it uploaded, where the step asked.

    Only those two: the builds of a session share one artifact directory in RUNNER_TEMP."""

    def download(call: Uses) -> tuple[bool, dict[str, str]]:
        target = Path(call.inputs["path"])
        target.mkdir(parents=True, exist_ok=True)
        for item in (artifact, artifact.with_name(f"{artifact.name}.sha256")):
            shutil.copy(item, target / item.name)
        return True, {"download-path": str(target)}

    return download


def remove_local(*references: str) -> None:
    """Drop images from the engine, so that only a load from the artifact can bring them back."""
    subprocess.run(["docker", "image", "rm", "-f", *references], capture_output=True, check=False)


def failed_download(call: Uses) -> tuple[bool, dict[str, str]]:
    return False, {}


@dataclass(frozen=True)
class Built:
    image: str
    repository: str
    marker: str
    canary: Path
    inputs: dict[str, str]
    run: ActionRun
    workspace: Path


def build_inputs(image: str, marker: str, canary: Path) -> dict[str, str]:
    return {
        **FAST,
        "images": image,
        "context": "app",
        "tags": f"extra-{marker}",
        # The second label would run a command if any step pasted inputs into shell text.
        "labels": f"org.example.input-label={marker}\norg.example.shell=$(touch {canary}) `touch {canary}`",
        "build-args": f"MARKER={marker}",
        "sha-length": "9",
        "tag-prefix": "ci-",
        "label-namespace": "org.example.ci",
        "artifact-name": f"image-{marker}",
        "artifact-compression": "gzip",
        "artifact-retention-days": "3",
    }


@pytest.fixture(scope="module")
def built(
    registry: RegistryServer, installed: str, runner_temp: Path, tmp_path_factory: pytest.TempPathFactory
) -> Built:
    marker = uuid.uuid4().hex[:12]
    repository = unique("action")
    image = f"{registry.address}/{repository}"
    workspace = tmp_path_factory.mktemp("build-workspace")
    write_context(workspace / "app", f"hello {marker}")
    canary = workspace / "canary"
    inputs = build_inputs(image, marker, canary)
    run = job(workspace, runner_temp, "pull-request").run(BUILD_ACTION, inputs)
    assert not run.failed, run.log
    return Built(image, repository, marker, canary, inputs, run, workspace)


# --- build --------------------------------------------------------------------------------------------------


def test_build_outputs_carry_the_digest_the_registry_serves(built: Built, registry: RegistryServer) -> None:
    outputs = built.run.outputs
    assert outputs["immutable-tag"] == "ci-pr-123-abc1234aa"  # sha-length and tag-prefix
    assert outputs["tag-names"].splitlines() == ["ci-pr-123-abc1234aa", f"extra-{built.marker}"]  # tags
    digest = outputs["digest"]
    assert digest.startswith("sha256:")
    for tag in outputs["tag-names"].splitlines():
        assert registry_api.digest_of(registry.address, built.repository, tag) == digest, tag
    assert outputs["image"] == f"{built.image}@{digest}"
    assert (outputs["push"], outputs["pushed"], outputs["reused"], outputs["attempts"]) == (
        "true",
        "true",
        "false",
        "1",
    )
    assert json.loads(outputs["json"])["tags"] == outputs["tags"].splitlines()
    assert json.loads(outputs["metadata"])["containerimage.digest"] == digest


def test_build_inputs_reach_the_image(built: Built, registry: RegistryServer) -> None:
    (config,) = registry_api.configs(registry.address, built.repository, built.run.outputs["immutable-tag"])
    labels = config["config"]["Labels"]
    assert labels["org.example.marker"] == built.marker  # build-args
    assert labels["org.example.input-label"] == built.marker  # labels
    assert labels["org.example.ci.pr.number"] == "123"  # label-namespace
    assert labels["org.example.ci.pr.head-sha"] == PR_HEAD
    assert f"org.example.ci.pr.head-sha={PR_HEAD}" in built.run.outputs["labels"].splitlines()
    # Inputs are data: the command in a label's value is kept as text and never runs.
    assert labels["org.example.shell"] == f"$(touch {built.canary}) `touch {built.canary}`"
    assert not built.canary.exists()


def test_build_saves_and_uploads_the_artifact(built: Built) -> None:
    outputs = built.run.outputs
    artifact = Path(outputs["artifact-path"])
    assert outputs["artifact"] == "true"
    assert outputs["artifact-name"] == f"image-{built.marker}"  # artifact-name
    assert artifact.name == f"image-{built.marker}.tar.gz"  # artifact-compression
    assert artifact.read_bytes()[:2] == b"\x1f\x8b"
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == outputs["artifact-sha256"]
    checksum = Path(f"{artifact}.sha256").read_text().split()
    assert checksum == [outputs["artifact-sha256"], artifact.name]
    (upload,) = built.run.calls
    assert upload.action.startswith("actions/upload-artifact@")
    assert upload.inputs["name"] == outputs["artifact-name"]
    assert upload.inputs["path"].splitlines() == [str(artifact), f"{artifact}.sha256"]
    assert upload.inputs["retention-days"] == "3"  # artifact-retention-days
    assert upload.inputs["if-no-files-found"] == "error"
    assert upload.inputs["overwrite"] == "true"


def test_rerun_reuses_the_image(built: Built, runner_temp: Path) -> None:
    run = job(built.workspace, runner_temp, "pull-request").run(BUILD_ACTION, built.inputs)
    assert not run.failed, run.log
    assert run.outputs["reused"] == "true"
    assert run.outputs["digest"] == built.run.outputs["digest"]
    assert any("Image reused" in line for line in run.log.splitlines())
    assert [call.inputs["name"] for call in run.calls] == [f"image-{built.marker}"]


def test_no_artifact_means_no_upload(
    registry: RegistryServer, installed: str, runner_temp: Path, tmp_path: Path
) -> None:
    write_context(tmp_path / "app", "no artifact")
    inputs = {**FAST, "images": f"{registry.address}/{unique('noart')}", "context": "app", "artifact": "false"}
    run = job(tmp_path, runner_temp, "push-default").run(BUILD_ACTION, inputs)
    assert not run.failed, run.log
    assert run.outputs["artifact-path"] == ""
    assert run.outputs["immutable-tag"].startswith("sha-")
    assert run.calls == []
    assert run.steps[-1].outcome == "skipped"


def runner_path(directory: Path, *, docker_without_buildx: bool) -> str:
    """A PATH with bash and, optionally, a docker CLI that has no buildx plugin; nothing else."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bash").symlink_to(BASH)
    if docker_without_buildx:
        docker = directory / "docker"
        docker.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = buildx ]; then echo "docker: \'buildx\' is not a docker command." >&2; exit 1; fi\n'
            'echo "Docker version 0.0.0"\n'
        )
        docker.chmod(0o755)
        return f"{directory}:/usr/bin:/bin"
    return str(directory)


@pytest.mark.parametrize(
    ("case", "message"),
    [("no-docker", "the docker CLI is not on this runner's PATH"), ("no-buildx", "docker buildx is not available")],
)
def test_a_runner_without_docker_or_buildx_fails_first(
    case: str, message: str, runner_temp: Path, tmp_path: Path
) -> None:
    runner = job(tmp_path / "workspace", runner_temp, "pull-request")
    runner.base_env["PATH"] = runner_path(tmp_path / "bin", docker_without_buildx=case == "no-buildx")
    run = runner.run(BUILD_ACTION, {"images": "127.0.0.1:1/never"})
    assert run.failed
    first = run.steps[0]
    assert first.outcome == "failure"
    (error,) = commands(first.log, "error")
    assert message in error
    assert [step.outcome for step in run.steps[1:]] == ["skipped"] * (len(run.steps) - 1)
    assert run.outputs == {}


# --- consume ------------------------------------------------------------------------------------------------


def consume_inputs(built: Built, **extra: str) -> dict[str, str]:
    # The build's sha-length, tag-prefix and label-namespace: consume finds and checks nothing without them.
    return {
        **FAST,
        "image": built.image,
        "sha-length": "9",
        "tag-prefix": "ci-",
        "label-namespace": "org.example.ci",
        **extra,
    }


def test_consume_finds_the_build_from_a_workflow_run(
    built: Built, registry: RegistryServer, runner_temp: Path, tmp_path: Path
) -> None:
    artifact = Path(built.run.outputs["artifact-path"])
    runner = job(tmp_path, runner_temp, "workflow-run-pr", **{"actions/download-artifact": download_from(artifact)})
    inputs = consume_inputs(
        built, **{"artifact-name": built.run.outputs["artifact-name"], "run-id": "30433642", "github-token": "t0ken"}
    )
    run = runner.run(CONSUME_ACTION, inputs)
    assert not run.failed, run.log
    # The registry serves the image: the artifact is named, but nothing is downloaded or loaded.
    assert run.calls == []
    assert (run.step("download").outcome, run.step("artifact").outcome) == ("skipped", "skipped")
    assert run.step("registry").outputs["need-artifact"] == "false"
    served = registry_api.digest_of(registry.address, built.repository, "ci-pr-123-abc1234aa")
    assert run.outputs == {
        "image": f"{built.image}@{served}",
        "digest": served,
        "source": "registry",
        "tag": "ci-pr-123-abc1234aa",
    }
    assert {name: run.step("registry").outputs[name] for name in run.outputs} == run.outputs
    assert served == built.run.outputs["digest"]
    assert commands(run.log, "warning") == []


def test_consume_by_digest_without_an_artifact(built: Built, runner_temp: Path, tmp_path: Path) -> None:
    digest = built.run.outputs["digest"]
    inputs = consume_inputs(built, digest=digest, sha=PR_HEAD)
    run = job(tmp_path, runner_temp, "push-default").run(CONSUME_ACTION, inputs)
    assert not run.failed, run.log
    assert run.calls == []  # no artifact-name: no download
    assert run.outputs == {"image": f"{built.image}@{digest}", "digest": digest, "source": "registry", "tag": ""}


def test_consume_checks_the_commit_it_is_given(built: Built, runner_temp: Path, tmp_path: Path) -> None:
    inputs = consume_inputs(built, digest=built.run.outputs["digest"], sha="f" * 40)
    run = job(tmp_path, runner_temp, "push-default").run(CONSUME_ACTION, inputs)
    assert run.failed
    (error,) = commands(run.step("registry").log, "error")
    assert "f" * 40 in error
    assert run.outputs == {}


def test_a_stale_image_fails_without_downloading_the_artifact(built: Built, runner_temp: Path, tmp_path: Path) -> None:
    # The tag planned from the event exists, but it names another commit than the one this job tests: the
    # artifact must not stand in for it (it would be as stale), and must not even be downloaded.
    later = "abc1234aa" + "e" * 31
    artifact = Path(built.run.outputs["artifact-path"])
    runner = job(tmp_path, runner_temp, "workflow-run-pr", **{"actions/download-artifact": download_from(artifact)})
    run = runner.run(CONSUME_ACTION, consume_inputs(built, sha=later, **{"artifact-name": "image"}))
    assert run.failed
    assert run.step("registry").outcome == "failure"
    (error,) = commands(run.step("registry").log, "error")
    assert later in error
    assert PR_HEAD in error
    assert run.calls == []
    assert (run.step("download").outcome, run.step("artifact").outcome) == ("skipped", "skipped")
    assert run.outputs == {}


def empty_download(call: Uses) -> tuple[bool, dict[str, str]]:
    """A download that succeeds but brings no image tar, as a wrong artifact-name of another upload would."""
    target = Path(call.inputs["path"])
    target.mkdir(parents=True, exist_ok=True)
    (target / "report.txt").write_text("not an image")
    return True, {"download-path": str(target)}


@pytest.mark.parametrize(
    ("download", "outcome", "message"),
    [
        (failed_download, "failure-continued", "its download failed"),
        (empty_download, "success", "holds no .tar, .tar.gz or .tar.zst file"),
    ],
    ids=["download-fails", "no-tar"],
)
def test_a_needed_artifact_that_does_not_come_is_a_clear_error(
    download: UsesHandler, outcome: str, message: str, built: Built, runner_temp: Path, tmp_path: Path
) -> None:
    runner = job(tmp_path, runner_temp, "workflow-run-pr", **{"actions/download-artifact": download})
    # A tag the registry does not have: the registry step leaves the image to the artifact.
    name = "gone\n::notice::100%"  # a line break would start a workflow command of its own if not escaped
    inputs = consume_inputs(built, tag=f"never-{built.marker}", **{"artifact-name": name})
    run = runner.run(CONSUME_ACTION, inputs)
    assert run.step("registry").outcome == "success", run.log
    assert run.step("registry").outputs["need-artifact"] == "true"
    assert [call.inputs["name"] for call in run.calls] == [name]
    assert run.step("download").outcome == outcome
    assert run.failed
    assert run.step("artifact").outcome == "failure"
    (error,) = commands(run.step("artifact").log, "error")
    assert message in error
    assert f"'{name}'" in error
    assert commands(run.log, "notice") == []
    assert run.outputs == {}


def built_without_a_registry(tmp_path: Path, runner_temp: Path, **extra: str) -> tuple[str, ActionRun]:
    """A build whose registry is gone by the time anything consumes it: only its artifact is left."""
    server = RegistryServer(tmp_path / "registry").start()
    image = f"{server.address}/{unique('down')}"
    write_context(tmp_path / "build" / "app", "served from the artifact")
    try:
        inputs = {**FAST, "images": image, "context": "app", **extra}
        built = job(tmp_path / "build", runner_temp, "pull-request").run(BUILD_ACTION, inputs)
        assert not built.failed, built.log
    finally:
        server.stop()
    return image, built


def test_registry_down_consumes_the_downloaded_artifact(installed: str, runner_temp: Path, tmp_path: Path) -> None:
    image, built = built_without_a_registry(tmp_path, runner_temp, **{"artifact-compression": "zstd"})
    artifact = Path(built.outputs["artifact-path"])
    assert artifact.name.endswith(".tar.zst")
    remove_local(f"{image}:pr-123-abc1234")
    runner = job(
        tmp_path / "downstream",
        runner_temp,
        "workflow-run-pr",
        **{"actions/download-artifact": download_from(artifact)},
    )
    name = built.outputs["artifact-name"]
    inputs = {
        **FAST,
        "image": image,
        "artifact-name": name,
        "run-id": "30433642",
        "github-token": "t0ken",
        "retry-attempts": "1",
    }
    run = runner.run(CONSUME_ACTION, inputs)
    assert not run.failed, run.log
    # The registry step gave up on the registry without failing, and left the image to the artifact.
    registry_step = run.step("registry")
    assert registry_step.outcome == "success"
    assert registry_step.outputs == {"image": "", "digest": "", "source": "", "tag": "", "need-artifact": "true"}
    assert any("the artifact is needed" in warning for warning in commands(registry_step.log, "warning"))
    (download,) = run.calls
    assert download.action.startswith("actions/download-artifact@")
    assert download.inputs == {
        "name": name,
        "path": f"{runner_temp}/buildonce-download/{name}",
        "run-id": "30433642",
        "github-token": "t0ken",
    }
    assert run.step("download").outcome == "success"
    loaded = run.step("artifact")
    assert f"Loading the downloaded artifact: {runner_temp}/buildonce-download/{name}/{artifact.name}" in loaded.log
    assert loaded.outputs["need-artifact"] == "false"
    assert run.outputs == {name: loaded.outputs[name] for name in ("image", "digest", "source", "tag")}
    assert run.outputs["source"] == "artifact"
    assert run.outputs["image"] == f"{image}:pr-123-abc1234"
    assert run.outputs["tag"] == "pr-123-abc1234"
    assert run.outputs["digest"].startswith("sha256:")
    assert f"Loaded {image}:pr-123-abc1234" in loaded.log


def test_source_artifact_skips_the_registry(installed: str, runner_temp: Path, tmp_path: Path) -> None:
    image, built = built_without_a_registry(tmp_path, runner_temp)
    artifact = Path(built.outputs["artifact-path"])
    remove_local(f"{image}:pr-123-abc1234")
    runner = job(
        tmp_path / "downstream",
        runner_temp,
        "workflow-run-pr",
        **{"actions/download-artifact": download_from(artifact)},
    )
    inputs = {**FAST, "image": image, "artifact-name": built.outputs["artifact-name"], "source": "artifact"}
    run = runner.run(CONSUME_ACTION, inputs)
    assert not run.failed, run.log
    assert run.step("registry").outcome == "skipped"
    assert [call.inputs["name"] for call in run.calls] == [built.outputs["artifact-name"]]
    assert run.outputs["source"] == "artifact"
    assert run.outputs["image"] == f"{image}:pr-123-abc1234"
    assert commands(run.log, "warning") == []  # nothing asked the registry, so nothing warns about it


def test_source_registry_never_downloads(built: Built, runner_temp: Path, tmp_path: Path) -> None:
    runner = job(tmp_path, runner_temp, "workflow-run-pr", **{"actions/download-artifact": empty_download})
    inputs = consume_inputs(built, tag=f"never-{built.marker}", source="registry", **{"artifact-name": "image"})
    run = runner.run(CONSUME_ACTION, inputs)
    assert run.failed
    assert run.step("registry").outcome == "failure"
    (error,) = commands(run.step("registry").log, "error")
    assert f"never-{built.marker}" in error
    assert run.calls == []
    assert run.outputs == {}


def test_fork_pull_request_is_consumed_from_the_downloaded_artifact(
    registry: RegistryServer, installed: str, runner_temp: Path, tmp_path: Path
) -> None:
    image = f"{registry.address}/{unique('fork')}"
    write_context(tmp_path / "build" / "app", "a fork's pull request")
    built = job(tmp_path / "build", runner_temp, "pull-request-fork").run(
        BUILD_ACTION, {**FAST, "images": image, "context": "app"}
    )
    assert not built.failed, built.log
    assert built.outputs["pushed"] == "false"
    artifact = Path(built.outputs["artifact-path"])
    remove_local(f"{image}:pr-7-7777777")
    runner = job(
        tmp_path / "downstream",
        runner_temp,
        "workflow-run-fork-pr",
        **{"actions/download-artifact": download_from(artifact)},
    )
    # GitHub leaves workflow_run.pull_requests empty for a fork: no tag to look up, so the artifact is needed.
    inputs = {**FAST, "image": image, "artifact-name": built.outputs["artifact-name"], "run-id": "30433643"}
    run = runner.run(CONSUME_ACTION, inputs)
    assert not run.failed, run.log
    assert run.step("registry").outputs["need-artifact"] == "true"
    assert len(run.calls) == 1
    assert run.outputs["source"] == "artifact"
    assert run.outputs["image"] == f"{image}:pr-7-7777777"


def test_the_expression_evaluator() -> None:
    contexts: dict[str, Any] = {
        "inputs": {"run-id": "", "name": "Widget"},
        "github": {"run_id": "7"},
        "runner": {},
        "steps": {"s": {"outputs": {"artifact-path": "/x"}}},
        "env": {},
    }
    assert render("${{ inputs.run-id || github.run_id }}", contexts) == "7"
    assert render("a/${{ inputs.name }}/b", contexts) == "a/Widget/b"
    assert render("${{ steps.nope.outputs.x }}", contexts) == ""
    assert condition("steps.s.outputs.artifact-path != ''", contexts)
    assert not condition("inputs.run-id != ''", contexts)
    assert condition("${{ inputs.name == 'widget' && !(inputs.run-id) }}", contexts)
    with pytest.raises(ValueError, match="not known"):
        render("${{ secrets.TOKEN }}", contexts)
    with pytest.raises(ValueError, match="cannot evaluate"):
        render("${{ format('{0}', inputs.name) }}", contexts)
