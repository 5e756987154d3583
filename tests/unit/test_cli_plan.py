from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from events import FIXTURES, runner_env
from runner_format import commands, parse_outputs

from buildonce.cli import main


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, env=env, stdout=out)
    return code, out.getvalue()


@pytest.fixture
def runner(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "out").write_text("")
    (tmp_path / "summary").write_text("")
    return {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}


def test_plan_writes_outputs(runner: dict[str, str]) -> None:
    env = {**runner_env("pull-request"), **runner, "INPUT_IMAGES": "ghcr.io/acme/widget"}
    code, log = run(["plan"], env)
    assert code == 0, log
    outputs = parse_outputs(Path(runner["GITHUB_OUTPUT"]).read_text())
    assert outputs["tags"] == "ghcr.io/acme/widget:pr-123-abc1234"
    assert outputs["immutable-tag"] == "pr-123-abc1234"
    assert json.loads(outputs["json"])["tags"] == ["ghcr.io/acme/widget:pr-123-abc1234"]
    assert "immutable tag: pr-123-abc1234" in log


def test_flags_override_inputs_and_event(runner: dict[str, str]) -> None:
    env = {**runner, "GITHUB_SHA": "abc1234def5678abc1234def5678abc1234def56", "INPUT_IMAGES": "x/y"}
    argv = [
        "plan",
        "--event",
        str(FIXTURES / "push-branch.json"),
        "--event-name",
        "push",
        "--input",
        "images=ghcr.io/acme/widget",
        "-i",
        "sha-length=10",
    ]
    code, log = run(argv, env)
    assert code == 0, log
    outputs = parse_outputs(Path(runner["GITHUB_OUTPUT"]).read_text())
    assert outputs["tags"] == "ghcr.io/acme/widget:feature-add-new-feature-abc1234def"


def test_json_flag_prints_only_json_on_stdout(tmp_path: Path) -> None:
    env = {**runner_env("push-default"), "INPUT_IMAGES": "ghcr.io/acme/widget"}
    result = subprocess.run(
        [sys.executable, "-m", "buildonce", "plan", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tag-names"] == "latest\nsha-0123456"
    assert "immutable tag" in result.stderr


BAD_INPUTS = [
    ({"INPUT_IMAGES": "ghcr.io/Acme/App"}, "images"),
    ({"INPUT_IMAGES": "a/b", "INPUT_TAGS": "bad tag"}, "tags"),
    ({"INPUT_IMAGES": "a/b", "INPUT_LABELS": "novalue"}, "labels"),
    ({"INPUT_IMAGES": "a/b", "INPUT_SHA-LENGTH": "3"}, "sha-length"),
    ({"INPUT_IMAGES": "a/b", "INPUT_PUSH": "sometimes"}, "push"),
    ({"INPUT_IMAGES": "a/b", "INPUT_LOAD": "y"}, "load"),
    ({"INPUT_IMAGES": "a/b", "INPUT_ARTIFACT": "1"}, "artifact"),
    ({"INPUT_IMAGES": "a/b", "INPUT_PR-SHA": "tip"}, "pr-sha"),
    ({"INPUT_IMAGES": "a/b", "INPUT_METADATA-JSON": "{oops"}, "metadata-json"),
    ({"INPUT_IMAGES": ""}, "images"),
]


@pytest.mark.parametrize(("inputs", "name"), BAD_INPUTS)
def test_bad_input_is_one_error_exit_1_and_no_outputs(
    runner: dict[str, str], inputs: dict[str, str], name: str
) -> None:
    env = {**runner_env("pull-request"), **runner, **inputs}
    code, log = run(["plan"], env)
    assert code == 1
    errors = commands(log, "error")
    assert len(errors) == 1
    assert f"'{name}'" in errors[0]
    assert Path(runner["GITHUB_OUTPUT"]).read_text() == ""


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"GITHUB_EVENT_PATH": "/nonexistent/event.json"}, "does not exist"),
        ({"GITHUB_EVENT_NAME": "issue_comment"}, "not supported"),
    ],
)
def test_bad_context_is_one_error(runner: dict[str, str], change: dict[str, str], fragment: str) -> None:
    env = {**runner_env("push-branch"), **runner, "INPUT_IMAGES": "a/b", **change}
    code, log = run(["plan"], env)
    assert code == 1
    errors = commands(log, "error")
    assert len(errors) == 1
    assert fragment in errors[0]
    assert Path(runner["GITHUB_OUTPUT"]).read_text() == ""


def test_malformed_event_json(runner: dict[str, str], tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"ref": "refs/heads/x",')
    env = {**runner_env("push-branch"), **runner, "INPUT_IMAGES": "a/b", "GITHUB_EVENT_PATH": str(event)}
    code, log = run(["plan"], env)
    assert code == 1
    assert "not valid JSON" in commands(log, "error")[0]
    assert str(event) in commands(log, "error")[0]


def test_unknown_input_flag(runner: dict[str, str]) -> None:
    code, log = run(["plan", "-i", "imagez=a/b"], {**runner_env("push-branch"), **runner})
    assert code == 1
    assert "imagez" in commands(log, "error")[0]


def test_payload_text_cannot_inject_outputs(runner: dict[str, str], tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "push-branch.json").read_text())
    data["repository"]["description"] = "x\nEOF\nimmutable-tag=pwned\nghadelimiter_x\ndigest<<EOF\nsha256:bad\nEOF"
    event = tmp_path / "event.json"
    event.write_text(json.dumps(data))
    env = {
        **runner_env("push-branch"),
        **runner,
        "GITHUB_EVENT_PATH": str(event),
        "INPUT_IMAGES": "a/b",
        "INPUT_LABELS": "com.acme.note=a<<EOF\ncom.acme.b=EOF",
    }
    code, log = run(["plan"], env)
    assert code == 0, log
    outputs = parse_outputs(Path(runner["GITHUB_OUTPUT"]).read_text())
    assert outputs["immutable-tag"] == "feature-add-new-feature-abc1234"
    assert "digest" not in outputs
    assert outputs["labels"].count("\n") == len(json.loads(outputs["json"])["labels"]) - 1
    # The description is prose: folded onto one line, not refused.
    assert "org.opencontainers.image.description=x EOF immutable-tag=pwned" in outputs["labels"]


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("GITHUB_REF", {"GITHUB_REF": "refs/heads/evil\n::warning::pwned"}),
        ("repository.full_name", {"repository": {"full_name": "acme/widget\n::warning::pwned"}}),
        ("ref", {"ref": "refs/heads/evil\u2028immutable-tag=pwned"}),
        ("head_commit.timestamp", {"head_commit": {"timestamp": "\u001b[2J"}}),
    ],
)
def test_a_control_character_in_the_event_is_one_error(
    runner: dict[str, str], tmp_path: Path, where: str, change: dict[str, object]
) -> None:
    data = json.loads((FIXTURES / "push-branch.json").read_text())
    env = {**runner_env("push-branch"), **runner, "INPUT_IMAGES": "a/b"}
    if where.startswith("GITHUB_"):
        env.update(change)  # type: ignore[arg-type]
    else:
        data.update(change)
        env.pop("GITHUB_REF")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(data))
    env["GITHUB_EVENT_PATH"] = str(event)
    code, log = run(["plan"], env)
    assert code == 1
    (error,) = commands(log, "error")
    assert where in error
    assert "pwned" not in log
    assert Path(runner["GITHUB_OUTPUT"]).read_text() == ""


def test_console_script_and_module_both_run() -> None:
    for argv in (["buildonce", "--version"], [sys.executable, "-m", "buildonce", "--version"]):
        exe = argv if argv[0] != "buildonce" else [str(Path(sys.executable).parent / "buildonce"), "--version"]
        result = subprocess.run(exe, capture_output=True, text=True, check=False)
        assert result.returncode == 0
        assert result.stdout.startswith("buildonce ")


def test_secrets_are_masked_before_anything_else(runner: dict[str, str]) -> None:
    env = {
        **runner_env("push-branch"),
        **runner,
        "INPUT_IMAGES": "BAD IMAGE",
        "INPUT_PASSWORD": "pw-123456",
        "INPUT_SECRETS": "token=tok-abcdef",
        "INPUT_SECRET-ENVS": "npm=NPM_TOKEN",
        "NPM_TOKEN": "npm-987654",
    }
    code, log = run(["plan"], env)
    assert code == 1
    lines = log.splitlines()
    masks = [line for line in lines if line.startswith("::add-mask::")]
    assert masks == lines[: len(masks)]
    assert {line.removeprefix("::add-mask::") for line in masks} == {"pw-123456", "tok-abcdef", "npm-987654"}


def test_verify_without_sha_or_event_says_what_to_give(runner: dict[str, str]) -> None:
    env = {**runner, "INPUT_IMAGE": "127.0.0.1:9/acme/widget:latest"}
    code, log = run(["verify"], env)
    assert code == 1
    (error,) = commands(log, "error")
    assert "input 'sha' is empty and there is no event" in error
    assert Path(runner["GITHUB_OUTPUT"]).read_text() == ""


def test_a_failure_is_summarized_without_outputs(runner: dict[str, str]) -> None:
    env = {**runner_env("push-branch"), **runner, "INPUT_IMAGES": "Bad/Name"}
    code, log = run(["plan"], env)
    assert code == 1
    (error,) = commands(log, "error")
    assert "input 'images'" in error
    assert Path(runner["GITHUB_OUTPUT"]).read_text() == ""
    summary = Path(runner["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.startswith("### buildonce plan failed: Invalid input")
    assert "> input 'images'" in summary


def test_each_command_lists_its_inputs_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["build", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "inputs (with defaults" in text
    assert re.search(r"^  retry-attempts +'3'$", text, flags=re.MULTILINE)
    assert "\n  images\n" in text
