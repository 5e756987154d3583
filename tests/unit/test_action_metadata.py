"""The action metadata, the example workflows and the README tables, held to the code and to the linters.

actionlint does not lint an action's own file, so each composite action is also turned into the equivalent
reusable workflow (its inputs as ``workflow_call`` inputs, its steps as one job's steps) and linted that way:
that checks every expression, every ``steps.<id>`` reference and every ``inputs.<name>`` against what exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from events import payload, runner_env

from buildonce.commands.consume import Consumed
from buildonce.commands.leg import LegReport
from buildonce.commands.merge import MergeReport
from buildonce.commands.prune import prune_outputs
from buildonce.github.context import build_context
from buildonce.github.workflow import Inputs
from buildonce.legs import Leg
from buildonce.options import (
    BUILD_INPUTS,
    CONSUME_INPUTS,
    MERGE_INPUTS,
    PLAN_COMMAND_INPUTS,
    PRUNE_INPUTS,
    plan_options,
)
from buildonce.plan import Plan, make_plan
from buildonce.report import BuildReport
from buildonce.signing import Signed

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = {
    "build": ROOT / "action.yml",
    "consume": ROOT / "consume" / "action.yml",
    "merge": ROOT / "merge" / "action.yml",
    "plan": ROOT / "plan" / "action.yml",
    "prune": ROOT / "prune" / "action.yml",
}
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
README = ROOT / "README.md"
# Inputs that only the action itself uses, for the steps around buildonce.
ACTION_ONLY_INPUTS = {
    "build": {"artifact-retention-days": "1", "github-attestation": "false"},
    "consume": {"artifact-name": "", "run-id": "", "github-token": ""},
    "merge": {},
    "plan": {},
    "prune": {},
}
# Options the action sets itself and does not offer as inputs. defer-artifact: consume/action.yml sets it
# when there is an artifact to download, so that the registry step leaves the image to the download instead
# of failing. A caller setting it without an artifact-name would get a step that passes with no image.
SET_BY_THE_ACTION: dict[str, set[str]] = {
    "build": set(),
    "consume": {"defer-artifact"},
    "merge": set(),
    "plan": set(),
    "prune": set(),
}
OPTIONS = {
    "build": BUILD_INPUTS,
    "consume": CONSUME_INPUTS,
    "merge": MERGE_INPUTS,
    "plan": PLAN_COMMAND_INPUTS,
    "prune": PRUNE_INPUTS,
}
# The steps that run buildonce in each action: consume asks the registry, then (only if it must) the artifact.
RUNS_BUILDONCE = {
    "build": ("build",),
    "consume": ("registry", "artifact"),
    "merge": ("merge",),
    "plan": ("plan",),
    "prune": ("prune",),
}
# Where a step hands buildonce something other than the input of the same name: action/consume.sh passes it
# as an --input flag, which wins over any INPUT_* variable (act sets a composite's own inputs in its steps).
SET_BY_SCRIPT = {
    ("consume", "registry"): {"defer-artifact"},
    ("consume", "artifact"): {"source", "defer-artifact", "artifact-path"},
}
CONSUME_SCRIPT = ROOT / "action" / "consume.sh"
# The condition of consume's download and artifact steps: the registry step left the image to the artifact,
# or was skipped because source is artifact and there is an artifact-name to download.
NEEDS_ARTIFACT = "steps.registry.outputs.need-artifact == 'true' || steps.registry.outcome == 'skipped'"
OWN_ACTIONS = re.compile(r"^buildonce/buildonce(/consume|/merge|/plan|/prune)?@v1$")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
EXPRESSION = re.compile(r"^\$\{\{ (?P<body>.+?) \}\}$")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def tool(name: str) -> str:
    # The tools are dev dependencies, installed beside the interpreter that runs the tests.
    found = Path(sys.executable).parent / name
    if found.is_file():
        return str(found)
    which = shutil.which(name)
    if which is None:
        pytest.fail(f"{name} is not installed; scripts/bootstrap installs it into .venv")
    return which


def actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    shellcheck = shutil.which("shellcheck") or ""
    argv = [tool("actionlint"), "-no-color", "-oneline", f"-shellcheck={shellcheck}", "-pyflakes=", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def as_workflow(action: dict[str, Any]) -> dict[str, Any]:
    """The reusable workflow equivalent to a composite action, for actionlint."""
    return {
        "name": action["name"],
        "on": {
            "workflow_call": {
                "inputs": {
                    name: {"type": "string", "required": False, "default": spec.get("default", "")}
                    for name, spec in action["inputs"].items()
                },
                "outputs": {name: {"value": f"${{{{ jobs.action.outputs.{name} }}}}"} for name in action["outputs"]},
            }
        },
        "jobs": {
            "action": {
                "runs-on": "ubuntu-latest",
                "outputs": {name: spec["value"] for name, spec in action["outputs"].items()},
                "steps": action["runs"]["steps"],
            }
        },
    }


def lint_action(action: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    workflow = tmp_path / "action-as-workflow.yml"
    workflow.write_text(yaml.safe_dump(as_workflow(action), sort_keys=False))
    return actionlint(str(workflow), cwd=tmp_path)


def all_steps() -> list[tuple[str, dict[str, Any]]]:
    steps = [(path.name, step) for path in ACTIONS.values() for step in load(path)["runs"]["steps"]]
    for path in WORKFLOWS:
        for job in load(path)["jobs"].values():
            steps += [(path.name, step) for step in job.get("steps", [])]
    return steps


def env_name(input_name: str) -> str:
    return "INPUT_" + input_name.upper().replace("-", "_")


def step_by_id(action: dict[str, Any], step_id: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [step for step in action["runs"]["steps"] if step.get("id") == step_id]
    assert len(matches) == 1, f"one step with id {step_id!r} expected"
    return matches[0]


# --- linters ------------------------------------------------------------------------------------------------


def test_there_are_example_workflows() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"pull-request.yml", "downstream-workflow-run.yml", "fork-pull-request.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_example_workflow_passes_actionlint(path: Path) -> None:
    result = actionlint(str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind", sorted(ACTIONS))
def test_action_steps_pass_actionlint_as_a_workflow(kind: str, tmp_path: Path) -> None:
    result = lint_action(load(ACTIONS[kind]), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_action_lint_finds_a_wrong_input_name(tmp_path: Path) -> None:
    # The translation must not make the lint vacuous: a misspelt input is caught.
    action = load(ACTIONS["build"])
    step_by_id(action, "build")["env"]["INPUT_IMAGES"] = "${{ inputs.imagez }}"
    result = lint_action(action, tmp_path)
    assert result.returncode != 0
    assert "imagez" in result.stdout


def test_actions_pass_actionlint_when_used_with_every_input(tmp_path: Path) -> None:
    # actionlint reads local actions' metadata and checks the inputs a workflow gives them.
    for kind, path in ACTIONS.items():
        target = tmp_path / ("." if kind == "build" else kind)
        target.mkdir(exist_ok=True)
        shutil.copy(path, target / "action.yml")
    uses = {"build": "./", "consume": "./consume", "merge": "./merge", "plan": "./plan", "prune": "./prune"}
    steps = [{"uses": uses[kind], "with": dict.fromkeys(load(path)["inputs"], "x")} for kind, path in ACTIONS.items()]
    workflow = {"on": "push", "jobs": {"use": {"runs-on": "ubuntu-latest", "steps": steps}}}
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "use.yml").write_text(yaml.safe_dump(workflow))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    result = actionlint(cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actions_match_the_github_actions_schema() -> None:
    argv = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", *map(str, ACTIONS.values())]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_match_the_github_workflows_schema() -> None:
    argv = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- inputs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ACTIONS))
def test_inputs_are_the_options_with_the_same_defaults(kind: str) -> None:
    inputs = load(ACTIONS[kind])["inputs"]
    declared = {name: spec.get("default") for name, spec in inputs.items()}
    offered = {name: default for name, default in OPTIONS[kind].items() if name not in SET_BY_THE_ACTION[kind]}
    assert declared == {**offered, **ACTION_ONLY_INPUTS[kind]}
    assert SET_BY_THE_ACTION[kind] <= set(OPTIONS[kind])


@pytest.mark.parametrize("kind", sorted(ACTIONS))
def test_every_input_has_a_description_and_a_string_default(kind: str) -> None:
    for name, spec in load(ACTIONS[kind])["inputs"].items():
        assert isinstance(spec.get("description"), str), name
        assert spec["description"].strip(), name
        assert isinstance(spec.get("default"), str), name
        assert spec.get("required", False) is False, name


@pytest.mark.parametrize(
    ("kind", "step_id"), [(kind, step_id) for kind in sorted(ACTIONS) for step_id in RUNS_BUILDONCE[kind]]
)
def test_every_option_is_wired_into_each_step_that_runs_buildonce(kind: str, step_id: str) -> None:
    env = step_by_id(load(ACTIONS[kind]), step_id)["env"]
    offered = [name for name in OPTIONS[kind] if name not in SET_BY_THE_ACTION[kind]]
    for name in offered:
        assert env.get(env_name(name)) == f"${{{{ inputs.{name} }}}}", name
    given = {key for key in env if key.startswith("INPUT_")}
    assert given == {env_name(name) for name in offered}
    # An option the action sets itself must be set in every step that runs buildonce, not left to its default.
    assert SET_BY_THE_ACTION[kind] <= SET_BY_SCRIPT.get((kind, step_id), set())


def test_what_consume_sh_decides_goes_as_flags() -> None:
    script = CONSUME_SCRIPT.read_text()
    registry = step_by_id(load(ACTIONS["consume"]), "registry")["env"]
    expected = "${{ inputs.artifact-name != '' && inputs.artifact-path == '' }}"
    assert registry["BUILDONCE_DEFER_ARTIFACT"] == expected
    assert '--input "defer-artifact=$BUILDONCE_DEFER_ARTIFACT"' in script
    for flag in ("--input source=artifact", "--input defer-artifact=false", '--input "artifact-path=$tar"'):
        assert flag in script
    # An override goes as a flag, never as an exported INPUT_ variable that another spelling could outweigh.
    assert "export INPUT_" not in script


def test_action_only_inputs_reach_their_steps() -> None:
    upload = next(step for step in load(ACTIONS["build"])["runs"]["steps"] if "upload-artifact" in step.get("uses", ""))
    assert upload["with"]["retention-days"] == "${{ inputs.artifact-retention-days }}"
    assert upload["with"]["name"] == "${{ steps.build.outputs.artifact-name }}"
    assert upload["if"] == "steps.build.outputs.artifact-path != ''"
    assert "${{ steps.build.outputs.artifact-path }}.sigstore.json" in upload["with"]["path"]
    build = load(ACTIONS["build"])
    attest = next(step for step in build["runs"]["steps"] if "attest-build-provenance" in step.get("uses", ""))
    assert attest["if"] == "inputs.github-attestation == 'true' && steps.build.outputs.pushed == 'true'"
    # The digest buildonce verified in the registry, never one parsed from a log; kept off the registry.
    assert attest["with"]["subject-digest"] == "${{ steps.build.outputs.digest }}"
    assert attest["with"]["subject-name"] == "${{ steps.build.outputs.subject-name }}"
    assert attest["with"]["push-to-registry"] is False
    steps = [step.get("id") or step.get("name") for step in build["runs"]["steps"]]
    assert steps.index("signing") < steps.index("Install cosign") < steps.index("build")
    install = next(step for step in build["runs"]["steps"] if step.get("name") == "Install cosign")
    assert install["if"] == "steps.signing.outputs.install == 'true'"
    assert install["with"]["cosign-release"] == "v2.5.0"
    consume = load(ACTIONS["consume"])
    download = step_by_id(consume, "download")
    assert download["uses"].startswith("actions/download-artifact@")
    # Downloaded only when needed, after the registry step; the artifact step then runs whatever the download's
    # outcome, and fails with buildonce's error when there is no tar (continue-on-error keeps it running).
    steps = [step.get("id") for step in consume["runs"]["steps"]]
    assert steps.index("registry") < steps.index("download") < steps.index("artifact")
    assert download["if"] == NEEDS_ARTIFACT
    assert step_by_id(consume, "artifact")["if"] == NEEDS_ARTIFACT
    assert step_by_id(consume, "artifact")["env"]["BUILDONCE_DOWNLOAD_OUTCOME"] == "${{ steps.download.outcome }}"
    assert download["continue-on-error"] is True
    assert download["with"]["name"] == "${{ inputs.artifact-name }}"
    assert download["with"]["run-id"] == "${{ inputs.run-id || github.run_id }}"
    assert download["with"]["github-token"] == "${{ inputs.github-token }}"


@pytest.mark.parametrize(("where", "step"), all_steps(), ids=lambda value: value if isinstance(value, str) else "")
def test_no_expression_inside_shell_text(where: str, step: dict[str, Any]) -> None:
    # An expression in `run:` is pasted into the script before bash sees it: a crafted branch name or
    # title would become a command. Values go through `env:` instead.
    assert "${{" not in step.get("run", ""), f"{where}: {step.get('name') or step.get('id')}"


@pytest.mark.parametrize("kind", sorted(ACTIONS))
def test_composite_run_steps_use_bash_and_scripts_that_exist(kind: str) -> None:
    action_dir = ACTIONS[kind].parent
    for step in load(ACTIONS[kind])["runs"]["steps"]:
        if "run" not in step:
            continue
        assert step["shell"] == "bash"
        for script in re.findall(r'"\$GITHUB_ACTION_PATH/([^"]+\.sh)"', step["run"]):
            assert (action_dir / script).resolve().is_file(), script


# --- outputs ------------------------------------------------------------------------------------------------


def a_plan() -> Plan:
    env = runner_env("pull-request")
    context = build_context(env, payload("pull-request"))
    options = plan_options(Inputs({"INPUT_IMAGES": "ghcr.io/acme/widget"}))
    return make_plan(context, options, now=datetime.now(timezone.utc))


def build_step_outputs() -> set[str]:
    """A build's outputs (the signing step's among them), and a leg's (distribute: leg), which are a build's
    and the leg's own."""
    plan = a_plan()
    leg = Leg("linux/amd64", "a" * 40, "t", {"digest": "sha256:" + "a" * 64})
    leg_outputs = LegReport(plan, leg, reused=False, written=0, path=Path("leg.json")).outputs()
    build_outputs = BuildReport(plan=plan).outputs()
    assert set(build_outputs) <= set(leg_outputs)
    return set(build_outputs) | set(leg_outputs) | set(Signed().outputs())


def plan_step_outputs() -> set[str]:
    return {*a_plan().outputs(), "matrix"}


def merge_step_outputs() -> set[str]:
    merged = MergeReport(a_plan(), "sha256:" + "b" * 64, {}, reused=False, children=2).outputs()
    return set(merged) | set(Signed().outputs())


def consume_step_outputs() -> set[str]:
    return set(Consumed(image="", digest="", source="", tag="").outputs())


def prune_step_outputs() -> set[str]:
    return set(prune_outputs([], applied=False))


@pytest.mark.parametrize("kind", sorted(ACTIONS))
def test_every_output_maps_to_an_output_of_the_buildonce_steps(kind: str) -> None:
    action = load(ACTIONS[kind])
    produced = {
        "build": build_step_outputs,
        "consume": consume_step_outputs,
        "merge": merge_step_outputs,
        "plan": plan_step_outputs,
        "prune": prune_step_outputs,
    }[kind]()
    # The last step that ran wins: the registry step writes these empty when it leaves the image to the artifact.
    step_ids = RUNS_BUILDONCE[kind][::-1]
    for step_id in step_ids:
        step_by_id(action, step_id)
    for name, spec in action["outputs"].items():
        assert spec["description"].strip(), name
        match = EXPRESSION.match(spec["value"])
        assert match, f"{name}: {spec['value']!r}"
        assert match["body"] == " || ".join(f"steps.{step_id}.outputs.{name}" for step_id in step_ids), name
    # Every output buildonce writes is passed on, under its own name.
    assert set(action["outputs"]) == produced


# --- pins ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*ACTIONS.values(), *WORKFLOWS], ids=lambda path: str(path.relative_to(ROOT)))
def test_third_party_actions_are_pinned_by_commit_sha(path: Path) -> None:
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*(?:- )?uses: (.+)$", line)
        if match:
            reference = match[1].strip()
            assert OWN_ACTIONS.match(reference) or PINNED.match(reference), reference


# --- README -------------------------------------------------------------------------------------------------


def readme_table(heading: str) -> list[tuple[str, str]]:
    """Rows (name, second cell) of the table under a README heading."""
    lines = README.read_text().splitlines()
    assert heading in lines, f"README has no heading {heading!r}"
    rows: list[tuple[str, str]] = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("#"):
            break
        match = re.match(r"^\| `([^`]+)` \| ([^|]*?) \|", line)
        if match:
            rows.append((match[1], match[2].strip()))
    return rows


def markdown_tables(action: dict[str, Any]) -> str:
    """The README's tables for an action, as they should read; shown when they do not, to paste."""

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    rows = ["| Input | Default | Description |", "|---|---|---|"]
    for name, spec in action["inputs"].items():
        default = f"`{spec['default']}`" if spec["default"] else ""
        rows.append(f"| `{name}` | {default} | {cell(spec['description'])} |")
    rows += ["", "| Output | Description |", "|---|---|"]
    rows += [f"| `{name}` | {cell(spec['description'])} |" for name, spec in action["outputs"].items()]
    return "\n".join(rows)


@pytest.mark.parametrize("kind", sorted(ACTIONS))
def test_readme_tables_list_exactly_the_inputs_and_outputs(kind: str) -> None:
    action = load(ACTIONS[kind])
    name = str(ACTIONS[kind].relative_to(ROOT))
    hint = f"the README tables for {name} should read:\n{markdown_tables(action)}"
    inputs = readme_table(f"### Inputs of {name}")
    assert [row[0] for row in inputs] == list(action["inputs"]), hint
    for input_name, default in inputs:
        expected = action["inputs"][input_name]["default"]
        assert default == (f"`{expected}`" if expected else ""), hint
    outputs = readme_table(f"### Outputs of {name}")
    assert [row[0] for row in outputs] == list(action["outputs"]), hint


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_readme_shows_each_example_workflow_as_it_is(path: Path) -> None:
    assert f"```yaml\n{path.read_text()}```" in README.read_text()


def test_readme_quick_start_is_the_demo_and_the_tests() -> None:
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    block = section[section.index("```sh\n") + len("```sh\n") :]
    block = block[: block.index("```")]
    assert block.splitlines() == ["scripts/demo", "scripts/test"]
    for script in ("demo", "test"):
        assert (ROOT / "scripts" / script).stat().st_mode & 0o111
