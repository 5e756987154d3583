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
import time
import zipfile
from collections.abc import Callable
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
        """A machine of its own: a tool cache that holds this wheel store and no finished install."""
        shutil.copytree(self.tool_cache, target)
        return Store(target, target / self.path.relative_to(self.tool_cache))


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A tool cache whose wheel store the first install filled (with pip as this machine is configured); the
    finished install that install made is moved out, so that a copy of it is a machine with the wheels alone."""
    root = tmp_path_factory.mktemp("store")
    tool_cache = root / "tool-cache"
    step = run_step(ROOT, root / "temp", tool_cache)
    assert step.code == 0, step.log
    assert "downloading" in step.log
    (tool_cache / "buildonce").rename(root / "first-install")
    path = next((tool_cache / "buildonce-wheels").iterdir())
    return Store(tool_cache, path)


@pytest.fixture
def machine(store: Store, tmp_path: Path) -> Store:
    return store.copy(tmp_path / "tool-cache")


def installs(tool_cache: Path) -> list[str]:
    """The names in the tool cache's installs directory: finished installs, and any temporary leftovers."""
    directory = tool_cache / "buildonce"
    return sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []


def site_of(python: str) -> Path:
    return next((Path(python).parent.parent / "lib").glob("python*/site-packages"))


def run_buildonce(python: str, cwd: Path) -> str:
    found = subprocess.run(
        [python, "-I", "-c", "import sys, buildonce, docker, zstandard; print(sys.prefix); print(buildonce.__file__)"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=True,
    )
    return found.stdout


def test_a_fresh_job_installs_from_the_store_without_reaching_an_index(machine: Store, tmp_path: Path) -> None:
    """With the store complete there is nothing to restore: the plan step installs, and says where."""
    plan = run_step(ROOT, tmp_path / "temp", machine.tool_cache, "plan", env=offline())
    assert plan.code == 0, plan.log
    [name] = installs(machine.tool_cache)
    assert re.fullmatch(r"[0-9a-f]{32}", name)
    python = str(machine.tool_cache / "buildonce" / name / "bin" / "python")
    assert plan.outputs == {"key": machine.path.name, "path": str(machine.path), "restore": "false", "python": python}
    assert "downloading" not in plan.log
    assert commands(plan.log, "warning") == []
    version = subprocess.run([python, "-I", "-m", "buildonce", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("buildonce "), version
    # The install step, had the action not skipped it, finds that install and names the same interpreter.
    step = run_step(ROOT, tmp_path / "temp", machine.tool_cache, env=offline())
    assert step.code == 0, step.log
    assert "is already installed" in step.log
    assert step.outputs == {"python": python}


def test_the_next_job_on_the_machine_finds_the_finished_install_without_the_store(
    machine: Store, tmp_path: Path
) -> None:
    first = run_step(ROOT, tmp_path / "job-1", machine.tool_cache, "plan", env=offline())
    assert first.code == 0, first.log
    # Finding the install reads no wheel: with the store gone, the next job still finds it.
    shutil.rmtree(machine.path)
    plan = run_step(ROOT, tmp_path / "job-2", machine.tool_cache, "plan", env=offline())
    assert plan.code == 0, plan.log
    assert plan.outputs == {"restore": "false", "python": first.outputs["python"]}
    assert "is already installed" in plan.log
    assert commands(plan.log, "warning") == []
    assert installs(machine.tool_cache) == [Path(first.outputs["python"]).parent.parent.name]
    assert str(machine.tool_cache / "buildonce") in run_buildonce(plan.outputs["python"], tmp_path)


def imported(argv: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    """The modules a Python process imports, as -X importtime lists them."""
    python = str(Path(sys.executable).resolve().parent / "python3")
    result = subprocess.run(
        [python, "-I", "-X", "importtime", *argv], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", result.stderr, re.MULTILINE))


def test_finding_the_install_imports_only_what_finding_it_needs(machine: Store, tmp_path: Path) -> None:
    """The plan step runs in every job: with the install there it loads neither the installer nor what making
    an install takes (pathlib, re, zipfile, venv, subprocess...)."""
    assert run_step(ROOT, tmp_path / "job-1", machine.tool_cache, "plan", env=offline()).code == 0
    temp = tmp_path / "job-2"
    temp.mkdir()
    output = temp / "output"
    output.write_text("")
    env = base_environment(RUNNER_TEMP=str(temp), GITHUB_OUTPUT=str(output), RUNNER_TOOL_CACHE=str(machine.tool_cache))
    modules = imported([str(ROOT / "action" / "install.py"), "plan"], env, temp) - imported(["-c", "pass"], env, temp)
    assert "python" in parse_outputs(output.read_text()), "the install was found"
    heavy = {"buildonce_installer", "pathlib", "re", "zipfile", "venv", "subprocess", "tempfile", "shutil", "platform"}
    assert not modules & (heavy | {"concurrent.futures", "dataclasses", "typing"}), sorted(modules)
    assert "hashlib" in modules


def test_the_finished_install_is_marked_as_used_by_each_job(machine: Store, tmp_path: Path) -> None:
    first = run_step(ROOT, tmp_path / "job-1", machine.tool_cache, "plan", env=offline())
    stamp = Path(first.outputs["python"]).parent.parent / ".buildonce-fingerprint"
    long_ago = time.time() - 90 * 86400
    os.utime(stamp, (long_ago, long_ago))
    assert run_step(ROOT, tmp_path / "job-2", machine.tool_cache, "plan", env=offline()).code == 0
    assert stamp.stat().st_mtime > time.time() - 3600


def test_an_empty_store_leaves_the_install_to_the_step_after_the_restore(tmp_path: Path) -> None:
    plan = run_step(ROOT, tmp_path / "temp", tmp_path / "tool-cache", "plan", env=offline())
    assert plan.code == 0, plan.log
    assert "python" not in plan.outputs
    assert installs(tmp_path / "tool-cache") == []


def test_zstandards_cffi_backend_is_left_packed_and_zstd_still_works(machine: Store, tmp_path: Path) -> None:
    step = run_step(ROOT, tmp_path / "temp", machine.tool_cache, env=offline())
    assert step.code == 0, step.log
    python = step.outputs["python"]
    site = site_of(python)
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


@pytest.mark.parametrize("tool_cache", [True, False], ids=["tool-cache", "no-tool-cache"])
def test_a_second_install_in_the_job_finds_the_first(machine: Store, tmp_path: Path, tool_cache: bool) -> None:
    temp = tmp_path / "temp"
    if not tool_cache:  # the store in the job's temp, as a restore puts it there when there is no tool cache
        shutil.copytree(machine.path, temp / "buildonce" / "wheels" / machine.path.name)
    cache = machine.tool_cache if tool_cache else None
    first = run_step(ROOT, temp, cache, env=offline())
    assert first.code == 0, first.log
    where = machine.tool_cache / "buildonce" if tool_cache else temp / "buildonce" / "installs"
    assert Path(first.outputs["python"]).parent.parent.parent == where
    plan = run_step(ROOT, temp, cache, "plan", env=offline())
    assert plan.outputs == {"restore": "false", "python": first.outputs["python"]}, "the install is there"
    again = run_step(ROOT, temp, cache, env=offline())
    assert again.code == 0, again.log
    assert "is already installed" in again.log
    assert again.outputs == first.outputs


def test_a_changed_source_gets_an_install_of_its_own(machine: Store, tmp_path: Path) -> None:
    root = copy_action(tmp_path / "action-copy")
    first = run_step(root, tmp_path / "job-1", machine.tool_cache, env=offline())
    assert first.code == 0, first.log
    # The action's sources change (a new version of the action): a new fingerprint, a new install beside the
    # first, which another job may still be using.
    with (root / "src" / "buildonce" / "tags.py").open("a") as stream:
        stream.write("\nCHANGED = True\n")
    step = run_step(root, tmp_path / "job-2", machine.tool_cache, "plan", env=offline())
    assert step.code == 0, step.log
    assert "is already installed" not in step.log
    assert step.outputs["python"] != first.outputs["python"]
    assert len(installs(machine.tool_cache)) == 2
    assert "CHANGED = True" in (site_of(step.outputs["python"]) / "buildonce" / "tags.py").read_text()
    assert "CHANGED" not in (site_of(first.outputs["python"]) / "buildonce" / "tags.py").read_text()
    # So does a change to the installer itself.
    with (root / "action" / "installer.py").open("a") as stream:
        stream.write("\n# changed\n")
    third = run_step(root, tmp_path / "job-3", machine.tool_cache, "plan", env=offline())
    assert third.code == 0, third.log
    assert len(installs(machine.tool_cache)) == 3


def damage_a_source(site: Path, install: Path) -> None:
    (site / "buildonce" / "tags.py").write_text("raise SystemExit('changed')\n")


def damage_by_adding_a_module(site: Path, install: Path) -> None:
    (site / "buildonce" / "commands" / "planted.py").write_text("raise SystemExit('planted')\n")


def damage_by_adding_a_package(site: Path, install: Path) -> None:
    (site / "extra-1.0.dist-info").mkdir()


def damage_by_removing_a_package(site: Path, install: Path) -> None:
    shutil.rmtree(next(site.glob("tenacity-*.dist-info")))


def damage_the_interpreter(site: Path, install: Path) -> None:
    (install / "bin" / "python").unlink()


def damage_the_stamp(site: Path, install: Path) -> None:
    (install / ".buildonce-fingerprint").write_text("0" * 64 + "\n")


def damage_by_leaving_it_half_made(site: Path, install: Path) -> None:
    (install / ".buildonce-fingerprint").unlink()


@pytest.mark.parametrize(
    "damage",
    [
        damage_a_source,
        damage_by_adding_a_module,
        damage_by_adding_a_package,
        damage_by_removing_a_package,
        damage_the_interpreter,
        damage_the_stamp,
        damage_by_leaving_it_half_made,
    ],
    ids=lambda damage: damage.__name__.removeprefix("damage_"),
)
def test_a_damaged_or_changed_install_is_replaced_with_a_warning(
    machine: Store, tmp_path: Path, damage: Callable[[Path, Path], None]
) -> None:
    first = run_step(ROOT, tmp_path / "job-1", machine.tool_cache, "plan", env=offline())
    assert first.code == 0, first.log
    python = first.outputs["python"]
    install = Path(python).parent.parent
    site = site_of(python)
    damage(site, install)
    plan = run_step(ROOT, tmp_path / "job-2", machine.tool_cache, "plan", env=offline())
    assert plan.code == 0, plan.log
    assert "is already installed" not in plan.log
    warnings = commands(plan.log, "warning")
    assert len(warnings) == 1, plan.log
    assert str(install) in warnings[0]
    assert plan.outputs["python"] == python
    assert installs(machine.tool_cache) == [install.name], "the damaged one is replaced, not kept beside it"
    assert (site / "buildonce" / "tags.py").read_bytes() == (ROOT / "src" / "buildonce" / "tags.py").read_bytes()
    assert not (site / "extra-1.0.dist-info").exists()
    assert not (site / "buildonce" / "commands" / "planted.py").exists()
    assert list(site.glob("tenacity-*.dist-info"))
    assert str(install) in run_buildonce(python, tmp_path)
    # And the next job finds the new one as it is.
    again = run_step(ROOT, tmp_path / "job-3", machine.tool_cache, "plan", env=offline())
    assert "is already installed" in again.log
    assert commands(again.log, "warning") == []


def test_installs_racing_on_one_machine_end_with_one_good_install(machine: Store, tmp_path: Path) -> None:
    """Jobs that start at once on one machine all make the install: the first rename wins, the others check it
    and use it, and no half-made copy is left behind."""
    jobs = []
    for index in range(3):
        temp = tmp_path / f"job-{index}"
        temp.mkdir()
        output = temp / "output"
        output.write_text("")
        env = base_environment(
            RUNNER_TEMP=str(temp), GITHUB_OUTPUT=str(output), RUNNER_TOOL_CACHE=str(machine.tool_cache)
        )
        env = {key: value for key, value in env.items() if not key.startswith("PIP_")} | offline()
        argv = [BASH, "--noprofile", "--norc", str(ROOT / "action" / "install.sh")]
        jobs.append(
            (
                output,
                subprocess.Popen(argv, env=env, cwd=temp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            )
        )
    pythons = set()
    logs = []
    for output, process in jobs:
        log, _ = process.communicate(timeout=300)
        logs.append(log)
        assert process.returncode == 0, log
        assert commands(log, "warning") == [], log
        pythons.add(parse_outputs(output.read_text())["python"])
    [python] = pythons
    assert installs(machine.tool_cache) == [Path(python).parent.parent.name], "no temporary copy left"
    won = [log for log in logs if re.search(r"^installed buildonce .* in ", log, re.MULTILINE)]
    lost = [log for log in logs if "first; using that one" in log]
    late = [log for log in logs if "is already installed" in log]
    assert len(won) == 1
    assert len(won) + len(lost) + len(late) == 3
    assert str(Path(python).parent.parent) in run_buildonce(python, tmp_path)


def test_a_finished_install_runs_from_wherever_it_is_renamed_to(machine: Store, tmp_path: Path) -> None:
    """An install is made in a temporary directory and renamed into place; a venv renamed again still runs,
    from its new place (sys.prefix comes from the interpreter's location and pyvenv.cfg)."""
    step = run_step(ROOT, tmp_path / "temp", machine.tool_cache, env=offline())
    assert step.code == 0, step.log
    install = Path(step.outputs["python"]).parent.parent
    moved = install.rename(tmp_path / "moved-elsewhere")
    prefix, module = run_buildonce(str(moved / "bin" / "python"), tmp_path).splitlines()
    assert Path(prefix) == moved
    assert Path(module).is_relative_to(moved)
    assert not install.exists()


def test_installs_no_job_has_used_for_a_month_are_removed(machine: Store, tmp_path: Path) -> None:
    root = machine.tool_cache / "buildonce"
    root.mkdir()
    old, recent = root / ("a" * 32), root / ("b" * 32)
    abandoned, unrelated = root / ".building-cccc", root / "not-an-install"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("")
    for directory in (old, recent, abandoned, unrelated):
        directory.mkdir()
        (directory / ".buildonce-fingerprint").write_text("x\n")
    (root / ("d" * 32)).symlink_to(outside)
    now = time.time()
    for path, days in ((old, 31), (recent, 29), (abandoned, 2), (unrelated, 400), (outside, 400)):
        for each in (path / ".buildonce-fingerprint", path) if path != outside else (path,):
            if each.exists():
                os.utime(each, (now - days * 86400, now - days * 86400))
    step = run_step(ROOT, tmp_path / "temp", machine.tool_cache, "plan", env=offline())
    assert step.code == 0, step.log
    current = Path(step.outputs["python"]).parent.parent.name
    assert installs(machine.tool_cache) == sorted([current, "b" * 32, "d" * 32, "not-an-install"])
    assert (outside / "keep").exists(), "nothing outside the installs' directory is touched"
    assert f"removed {old}" in step.log


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
    assert installs(tmp_path / "tool-cache") == [], "no install, finished or half-made, is left"


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
    site = site_of(step.outputs["python"])
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


def test_the_installed_set_is_exactly_what_buildonce_imports(machine: Store, tmp_path: Path) -> None:
    step = run_step(ROOT, tmp_path / "temp", machine.tool_cache, env=offline())
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
