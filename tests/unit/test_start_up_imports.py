"""What a job pays to start: the modules each command's path imports, in a fresh interpreter.

consume runs in every test job of a matrix, so its path imports what it uses and no more: no argument parser
(the actions' command lines are read directly), no Docker SDK, no retry library before a fault, nothing of
the build, the artifact or the layouts."""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import buildonce.__main__
from buildonce import cli
from buildonce.commands import COMMANDS

NEVER_ON_CONSUMES_PATH = (
    "argparse",
    "docker",
    "requests",
    "urllib3",
    "tenacity",
    "tarfile",
    "tempfile",
    "buildonce.layout",
    "buildonce.artifact",
    "buildonce.tarimage",
    "buildonce.buildkey",
    "buildonce.docker.buildx",
    "buildonce.docker.engine",
    "buildonce.commands.build",
    "buildonce.commands.sign",
    "buildonce.prune_options",
)


def imported_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    shown = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    return set(json.loads(shown.stdout.splitlines()[-1]))


def test_consumes_path_imports_nothing_it_does_not_use() -> None:
    modules = imported_after(
        "from buildonce.cli import parse_arguments\n"
        "parse_arguments(['consume', '--input', 'defer-artifact=false'])\n"
        "import buildonce.commands.consume, buildonce.registry.client, buildonce.commands.connect"
    )
    assert "buildonce.registry.client" in modules  # the probe itself ran
    assert sorted(modules & set(NEVER_ON_CONSUMES_PATH)) == []


NOT_BEFORE_BUILDX = (
    "argparse",
    "concurrent.futures",
    "docker",
    "tenacity",
    "tempfile",
    "shutil",
    "hashlib",  # the build key's hash: loaded when a key is computed (not here, outside a work tree)
    "platform",
    "buildonce.consume_options",
    "buildonce.prune_options",
    "buildonce.commands.build_job",
    "buildonce.commands.promote",
    "buildonce.commands.publish",
    "buildonce.commands.sign",
    "buildonce.docker.cosign",
    "buildonce.docker.engine",
    "buildonce.layout",
    "buildonce.oci",
    "buildonce.registry.client",
    "buildonce.report",
)


def test_a_builds_path_to_buildx_leaves_what_runs_beside_and_after_it_to_the_preparing_thread() -> None:
    modules = imported_after(
        "from buildonce.cli import parse_arguments\nparse_arguments(['build'])\nimport buildonce.commands.build"
    )
    assert "buildonce.commands.build" in modules
    assert sorted(modules & set(NOT_BEFORE_BUILDX)) == []


def test_the_collector_is_off_while_importing_and_on_while_the_command_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[bool] = []
    module = types.ModuleType("probe_command")
    module.run = lambda call: seen.append(gc.isenabled())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "probe_command", module)
    probe = dataclasses.replace(COMMANDS["plan"], entry="probe_command:run")
    monkeypatch.setitem(COMMANDS, "plan", probe)
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    was = gc.isenabled()
    gc.disable()  # as buildonce.__main__ starts
    try:
        assert cli.main(["plan"], env=env, stdout=io.StringIO(), loaded=buildonce.__main__._collect_from_here) == 0
    finally:
        gc.unfreeze()
        if was:
            gc.enable()
    assert seen == [True]


def test_a_build_that_signs_nothing_never_loads_the_signing_step() -> None:
    """The preparation beside buildx imports what publishes the image; cosign's step only when it signs."""
    modules = imported_after("import buildonce.commands.build_job")
    assert "buildonce.commands.publish" in modules  # the probe itself ran
    assert sorted(modules & {"buildonce.commands.sign", "buildonce.docker.cosign"}) == []
