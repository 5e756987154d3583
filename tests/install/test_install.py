"""action/install.sh as the action's steps run it: fresh RUNNER_TEMPs, a wheel store, real pip and real wheels.

The store is filled once per session with pip as this machine is configured; every later test reaches no
index at all (``PIP_NO_INDEX``, with ``--find-links`` pointing at a copy of the genuine wheels when a test
needs pip to find one), so what it shows comes from the store and the lock alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from runner_format import commands, parse_outputs

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"


@dataclass
class Step:
    code: int
    log: str
    outputs: dict[str, str]


def base_environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("INPUT_", "GITHUB_", "RUNNER_"))}
    # python3 on PATH is the interpreter running the tests: the install must use the runner's python3.
    env["PATH"] = f"{Path(sys.executable).resolve().parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def offline(links: Path | None = None) -> dict[str, str]:
    """pip with no index and no configuration: only ``links`` (a directory of wheels), if given."""
    env = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links) if links else ""}
    if links is None:
        del env["PIP_FIND_LINKS"]
    return env


def run_step(root: Path, temp: Path, tool_cache: Path | None, *args: str, env: dict[str, str] | None = None) -> Step:
    """``bash install.sh ARGS`` as a step of one job: RUNNER_TEMP, a fresh GITHUB_OUTPUT, a workspace."""
    temp.mkdir(parents=True, exist_ok=True)
    output = temp / f"output-{len(list(temp.glob('output-*')))}"
    output.write_text("")
    workspace = temp.parent / "workspace"
    decoy = workspace / "buildonce"
    decoy.mkdir(parents=True, exist_ok=True)
    (decoy / "__init__.py").write_text("raise SystemExit('the workspace shadowed the installed buildonce')\n")
    step_env = base_environment(RUNNER_TEMP=str(temp), GITHUB_OUTPUT=str(output))
    if tool_cache is not None:
        tool_cache.mkdir(parents=True, exist_ok=True)
        step_env["RUNNER_TOOL_CACHE"] = str(tool_cache)
    if env and "PIP_CONFIG_FILE" in env:
        step_env = {key: value for key, value in step_env.items() if not key.startswith("PIP_")}
    step_env.update(env or {})
    result = subprocess.run(
        [BASH, "--noprofile", "--norc", "-eo", "pipefail", str(root / "action" / "install.sh"), *args],
        cwd=workspace,
        env=step_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return Step(result.returncode, result.stdout + result.stderr, parse_outputs(output.read_text()))


def copy_action(target: Path) -> Path:
    """The files the install reads, copied, so that a test can change them."""
    for part in ("action", "src/buildonce"):
        shutil.copytree(ROOT / part, target / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements.lock", target / "requirements.lock")
    return target


@dataclass
class Store:
    tool_cache: Path
    path: Path

    def wheels(self) -> list[Path]:
        return sorted(self.path.glob("*.whl"))

    def copy(self, target: Path) -> Store:
        shutil.copytree(self.tool_cache, target)
        return Store(target, target / self.path.relative_to(self.tool_cache))


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A tool cache whose wheel store the first install filled (with pip as this machine is configured)."""
    root = tmp_path_factory.mktemp("store")
    tool_cache = root / "tool-cache"
    step = run_step(ROOT, root / "temp", tool_cache)
    assert step.code == 0, step.log
    assert "downloading" in step.log
    path = next((tool_cache / "buildonce-wheels").iterdir())
    return Store(tool_cache, path)


def test_a_fresh_job_installs_from_the_store_without_reaching_an_index(store: Store, tmp_path: Path) -> None:
    """With the store complete there is nothing to restore: the plan step installs, and says where."""
    plan = run_step(ROOT, tmp_path / "temp", store.tool_cache, "plan", env=offline())
    assert plan.code == 0, plan.log
    python = str(tmp_path / "temp" / "buildonce" / "venv" / "bin" / "python")
    assert plan.outputs == {"key": store.path.name, "path": str(store.path), "restore": "false", "python": python}
    assert "downloading" not in plan.log
    assert commands(plan.log, "warning") == []
    version = subprocess.run([python, "-I", "-m", "buildonce", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("buildonce "), version
    # The install step, had the action not skipped it, finds that install and names the same interpreter.
    step = run_step(ROOT, tmp_path / "temp", store.tool_cache, env=offline())
    assert step.code == 0, step.log
    assert "is already installed" in step.log
    assert step.outputs == {"python": python}


def test_an_empty_store_leaves_the_install_to_the_step_after_the_restore(tmp_path: Path) -> None:
    plan = run_step(ROOT, tmp_path / "temp", tmp_path / "tool-cache", "plan", env=offline())
    assert plan.code == 0, plan.log
    assert "python" not in plan.outputs
    assert not (tmp_path / "temp" / "buildonce" / "venv").exists()


def test_zstandards_cffi_backend_is_left_packed_and_zstd_still_works(store: Store, tmp_path: Path) -> None:
    step = run_step(ROOT, tmp_path / "temp", store.tool_cache, env=offline())
    assert step.code == 0, step.log
    python = step.outputs["python"]
    site = next((tmp_path / "temp" / "buildonce" / "venv" / "lib").glob("python3*/site-packages"))
    assert not list((site / "zstandard").glob("_cffi*")), "the cffi backend needs cffi, which is not installed"
    assert not (site / "zstandard" / "backend_cffi.py").exists()
    assert list((site / "zstandard").glob("backend_c.*.so"))
    script = "import zstandard; data = b'x' * 100000; assert zstandard.decompress(zstandard.compress(data)) == data"
    subprocess.run([python, "-I", "-c", script], check=True, timeout=60)


def test_an_empty_store_is_to_be_restored_and_named_by_the_lock(tmp_path: Path) -> None:
    plan = run_step(ROOT, tmp_path / "temp", tmp_path / "tool-cache", "plan")
    assert plan.code == 0, plan.log
    assert plan.outputs["restore"] == "true"
    lock = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    assert plan.outputs["key"].endswith(lock[:24])
    assert plan.outputs["path"] == str(tmp_path / "tool-cache" / "buildonce-wheels" / plan.outputs["key"])


def test_a_second_install_in_the_job_finds_the_first(store: Store, tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    first = run_step(ROOT, temp, store.tool_cache, env=offline())
    assert first.code == 0, first.log
    plan = run_step(ROOT, temp, tmp_path / "empty-tool-cache", "plan", env=offline())
    assert plan.outputs["restore"] == "false", "the install is there: nothing to restore"
    again = run_step(ROOT, temp, store.tool_cache, env=offline())
    assert again.code == 0, again.log
    assert "is already installed" in again.log
    assert again.outputs == first.outputs


def test_a_changed_source_or_installed_copy_is_installed_again(store: Store, tmp_path: Path) -> None:
    root = copy_action(tmp_path / "action-copy")
    temp = tmp_path / "temp"
    assert run_step(root, temp, store.tool_cache, env=offline()).code == 0
    site = next((temp / "buildonce" / "venv" / "lib").glob("python*/site-packages"))
    # The action's sources change (a new version of the action in the same job): a new fingerprint.
    with (root / "src" / "buildonce" / "tags.py").open("a") as stream:
        stream.write("\nCHANGED = True\n")
    step = run_step(root, temp, store.tool_cache, env=offline())
    assert step.code == 0, step.log
    assert "is already installed" not in step.log
    assert "CHANGED = True" in (site / "buildonce" / "tags.py").read_text()
    # The installed copy changes: not the install that was made, so it is made again.
    (site / "buildonce" / "tags.py").write_text("raise SystemExit('changed')\n")
    step = run_step(root, temp, store.tool_cache, env=offline())
    assert "is already installed" not in step.log
    assert (site / "buildonce" / "tags.py").read_bytes() == (root / "src" / "buildonce" / "tags.py").read_bytes()
    # A package added to the venv: not the locked set.
    assert run_step(root, temp, store.tool_cache, env=offline()).log.count("is already installed") == 1
    (site / "extra-1.0.dist-info").mkdir()
    step = run_step(root, temp, store.tool_cache, env=offline())
    assert "is already installed" not in step.log
    assert not (site / "extra-1.0.dist-info").exists()


def test_a_tampered_hash_in_the_lock_refuses_the_genuine_wheel(store: Store, tmp_path: Path) -> None:
    root = copy_action(tmp_path / "action-copy")
    lock = root / "requirements.lock"
    docker_wheel = next(wheel for wheel in store.wheels() if wheel.name.startswith("docker-"))
    genuine = hashlib.sha256(docker_wheel.read_bytes()).hexdigest()
    assert genuine in lock.read_text()
    lock.write_text(lock.read_text().replace(genuine, "0" * 64))
    links = tmp_path / "links"
    shutil.copytree(store.path, links)  # pip finds the genuine wheel, and must refuse it
    temp = tmp_path / "temp"
    # Another lock, another key: and a store under that key that holds the genuine wheels all the same.
    plan = run_step(root, temp, tmp_path / "tool-cache", "plan", env=offline(links))
    assert plan.outputs["key"] != store.path.name
    shutil.copytree(store.path, plan.outputs["path"])
    step = run_step(root, temp, tmp_path / "tool-cache", env=offline(links))
    assert step.code == 1, step.log
    warnings = commands(step.log, "warning")
    assert len(warnings) == 1, step.log
    assert docker_wheel.name in warnings[0]
    errors = commands(step.log, "error")
    assert len(errors) == 1, step.log
    assert "refuses" in errors[0]
    assert "DO NOT MATCH THE HASHES" in step.log
    assert "python" not in step.outputs
    assert not (temp / "buildonce" / "venv" / ".buildonce-fingerprint").exists()


def test_a_tampered_wheel_in_the_store_is_dropped_and_replaced(store: Store, tmp_path: Path) -> None:
    copied = store.copy(tmp_path / "tool-cache")
    docker_wheel = next(wheel for wheel in copied.wheels() if wheel.name.startswith("docker-"))
    with zipfile.ZipFile(docker_wheel, "a") as archive:
        archive.writestr("docker/planted.py", "raise SystemExit('planted')\n")
    links = tmp_path / "links"
    shutil.copytree(store.path, links)
    temp = tmp_path / "temp"
    plan = run_step(ROOT, temp, copied.tool_cache, "plan", env=offline(links))
    assert plan.outputs["restore"] == "true", "a store with a wheel the lock does not allow is not complete"
    step = run_step(ROOT, temp, copied.tool_cache, env=offline(links))
    assert step.code == 0, step.log
    warnings = commands(step.log, "warning")
    assert len(warnings) == 1
    assert docker_wheel.name in warnings[0]
    assert "downloading 1 locked wheels" in step.log
    site = next((temp / "buildonce" / "venv" / "lib").glob("python*/site-packages"))
    assert (site / "docker" / "__init__.py").is_file()
    assert not (site / "docker" / "planted.py").exists()
    assert (
        hashlib.sha256(docker_wheel.read_bytes()).digest()
        == hashlib.sha256((store.path / docker_wheel.name).read_bytes()).digest()
    )


def test_a_missing_wheel_with_no_index_to_fetch_it_fails_clearly(store: Store, tmp_path: Path) -> None:
    copied = store.copy(tmp_path / "tool-cache")
    next(wheel for wheel in copied.wheels() if wheel.name.startswith("tenacity-")).unlink()
    step = run_step(ROOT, tmp_path / "temp", copied.tool_cache, env=offline())
    assert step.code == 1, step.log
    errors = commands(step.log, "error")
    assert len(errors) == 1
    assert "pip could not download the locked wheels" in errors[0]
    assert step.outputs == {}


IMPORTS = r"""
import ast, importlib, importlib.metadata as metadata, json, pkgutil, sys
from pathlib import Path
import buildonce
# Every module buildonce imports, at the top or inside a function, that is neither its own nor the stdlib's.
third_party = set()
for path in Path(buildonce.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        third_party.update(name.split(".")[0] for name in names)
third_party -= set(sys.stdlib_module_names) | {"buildonce", "__future__"}
before = set(sys.modules)
for module in pkgutil.walk_packages(buildonce.__path__, "buildonce."):
    importlib.import_module(module.name)
for name in sorted(third_party):
    importlib.import_module(name)
owners = metadata.packages_distributions()
used = {owner for name in set(sys.modules) - before for owner in owners.get(name.split(".")[0], [])}
installed = {dist.metadata["Name"] for dist in metadata.distributions()}
print(json.dumps({"third_party": sorted(third_party), "used": sorted(used), "installed": sorted(installed)}))
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_installed_set_is_exactly_what_buildonce_imports(store: Store, tmp_path: Path) -> None:
    step = run_step(ROOT, tmp_path / "temp", store.tool_cache, env=offline())
    assert step.code == 0, step.log
    found = subprocess.run(
        [step.outputs["python"], "-I", "-c", IMPORTS], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    seen = json.loads(found.stdout)
    assert set(seen["third_party"]) == {"actions_toolkit", "docker", "requests", "tenacity", "urllib3", "zstandard"}
    used = {normalize(name) for name in seen["used"]}
    installed = {normalize(name) for name in seen["installed"]}
    assert used == installed, (
        f"installed but never imported: {installed - used}; imported, not installed: {used - installed}"
    )
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {normalize(match) for match in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock, re.MULTILINE)}
    assert installed == pinned - {"pywin32"}  # pywin32 is for Windows alone
