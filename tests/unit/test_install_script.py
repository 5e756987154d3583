"""action/install.py's pure parts: the lock, environment markers, the wheel store and the wheel's paths."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


install = load("buildonce_installer", ROOT / "action" / "installer.py")
finder = load("buildonce_install_script", ROOT / "action" / "install.py")
LINUX_311 = {
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "6.1.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP",
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "implementation_name": "cpython",
    "implementation_version": "3.11.7",
}


# --- the lock -----------------------------------------------------------------------------------------------


def test_the_lock_pins_every_package_with_hashes() -> None:
    requirements = install.parse_lock(LOCK.read_text())
    names = [requirement.name for requirement in requirements]
    assert len(names) == len(set(names))
    assert {"actions-toolkit", "docker", "requests", "tenacity", "zstandard"} <= set(names)
    for requirement in requirements:
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", requirement.version), requirement
        assert requirement.hashes, requirement
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in requirement.hashes)


def test_the_lock_leaves_out_what_buildonce_never_imports() -> None:
    names = {requirement.name for requirement in install.parse_lock(LOCK.read_text())}
    left_out = {"pygithub", "pyjwt", "pynacl", "cryptography", "cffi", "pycparser", "typing-extensions", "pyyaml"}
    assert not names & left_out


def test_a_lock_entry_reads_with_its_marker_and_hashes() -> None:
    text = (
        "# a comment\n"
        "pywin32==312 ; sys_platform == 'win32' \\\n"
        f"    --hash=sha256:{'a' * 64} \\\n"
        f"    --hash=sha256:{'b' * 64}\n"
        "    # via docker\n"
        f"Docker_SDK==7.2.0 --hash=sha256:{'c' * 64}\n"
    )
    first, second = install.parse_lock(text)
    assert (first.name, first.version, first.marker) == ("pywin32", "312", "sys_platform == 'win32'")
    assert first.hashes == {"a" * 64, "b" * 64}
    assert first.text == "pywin32==312"
    assert (second.name, second.marker, second.text) == ("docker-sdk", "", "Docker_SDK==7.2.0")


@pytest.mark.parametrize(
    "text",
    [
        "requests>=2 --hash=sha256:" + "a" * 64 + "\n",  # not pinned
        "requests==2.34.2\n",  # no hash
        "requests==2.34.2 --hash=md5:abc\n",  # not sha256
        "--index-url https://example.invalid/simple\n",  # an option instead of a package
        "https://example.invalid/requests.whl --hash=sha256:" + "a" * 64 + "\n",
    ],
)
def test_a_lock_that_does_not_pin_and_hash_is_refused(text: str) -> None:
    with pytest.raises(install.InstallError, match="regenerate it with scripts/lock"):
        install.parse_lock(text)


# --- markers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("", True),
        ("sys_platform == 'win32'", False),
        ("sys_platform != 'win32'", True),
        ("python_full_version < '3.11'", False),
        ("python_full_version >= '3.11'", True),
        ("python_version >= '3.9' and python_version < '3.12'", True),
        ("python_version > '3.11'", False),
        ("python_version == '3.11'", True),
        ("python_full_version == '3.11.7'", True),
        ("python_version ~= '3.10'", True),
        ("python_full_version ~= '3.10.2'", False),
        ("implementation_name != 'PyPy' and platform_python_implementation != 'PyPy'", True),
        ("sys_platform == 'win32' or sys_platform == 'linux'", True),
        ("(sys_platform == 'win32' or os_name == 'nt') and python_version >= '3'", False),
        ("sys_platform == 'darwin' or (platform_machine == 'x86_64' and python_version < '3.12')", True),
        ("'linux' in sys_platform", True),
        ("'win' not in sys_platform", True),
        ('platform_system == "Linux"', True),
    ],
)
def test_markers_evaluate_as_pep_508_says(marker: str, expected: bool) -> None:
    assert install.evaluate_marker(marker, LINUX_311) is expected


@pytest.mark.parametrize(
    "marker",
    [
        "extra == 'socks'",
        "sys_platform = 'linux'",
        "(sys_platform == 'linux'",
        "sys_platform ==",
        "python_version < 'x'",
    ],
)
def test_a_marker_that_cannot_be_read_is_an_error_not_a_guess(marker: str) -> None:
    with pytest.raises(install.InstallError, match=r"marker|version"):
        install.evaluate_marker(marker, LINUX_311)


def test_this_interpreter_gets_every_unconditional_package_of_the_lock() -> None:
    requirements = install.parse_lock(LOCK.read_text())
    wanted = install.applicable(requirements, install.marker_environment())
    assert {requirement.name for requirement in requirements if not requirement.marker} <= {
        requirement.name for requirement in wanted
    }


# --- the store ----------------------------------------------------------------------------------------------


def fake_wheel(path: Path, name: str, version: str, files: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
        archive.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def requirement(name: str, version: str, *hashes: str) -> Any:
    return install.Requirement(name, version, "", frozenset(hashes), f"{name}=={version}")


def test_the_store_matches_wheels_by_hash_and_drops_the_rest(tmp_path: Path) -> None:
    good = fake_wheel(tmp_path / "alpha-1.0-py3-none-any.whl", "alpha", "1.0", {"alpha/__init__.py": ""})
    fake_wheel(tmp_path / "beta-2.0-py3-none-any.whl", "beta", "2.0", {"beta/__init__.py": "evil = True\n"})
    wanted = [requirement("alpha", "1.0", good), requirement("beta", "2.0", "0" * 64)]
    seen = install.check_store(tmp_path, wanted, drop=False)
    assert set(seen.found) == {"alpha"}
    assert [missing.name for missing in seen.missing] == ["beta"]
    assert seen.dropped == ["beta-2.0-py3-none-any.whl"]
    assert (tmp_path / "beta-2.0-py3-none-any.whl").exists()  # drop=False only looks
    install.check_store(tmp_path, wanted, drop=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["alpha-1.0-py3-none-any.whl"]


def test_the_store_key_changes_with_the_lock_and_names_the_interpreter() -> None:
    key = install.store_key(b"one")
    assert key != install.store_key(b"two")
    assert key == install.store_key(b"one")
    assert install.sys.implementation.cache_tag.replace("-", "_") in key
    assert re.fullmatch(r"[A-Za-z0-9._-]+", key)


def roots(env: dict[str, str], temp: Path) -> tuple[Path, Path]:
    return Path(finder.store_root(env, str(temp))), Path(finder.installs_root(env, str(temp)))


def test_the_store_and_the_installs_live_in_the_tool_cache_when_there_is_one(tmp_path: Path) -> None:
    assert roots({"RUNNER_TOOL_CACHE": str(tmp_path)}, tmp_path / "temp") == (
        tmp_path / "buildonce-wheels",
        tmp_path / "buildonce",
    )
    assert roots({}, tmp_path / "t") == (tmp_path / "t/buildonce/wheels", tmp_path / "t/buildonce/installs")
    assert roots({"RUNNER_TOOL_CACHE": "relative"}, tmp_path / "t") == (
        tmp_path / "t/buildonce/wheels",
        tmp_path / "t/buildonce/installs",
    )


def test_a_tool_cache_the_runner_names_but_never_made_is_made(tmp_path: Path) -> None:
    """act, and a new self-hosted runner, name a tool cache that does not exist yet."""
    named = tmp_path / "cache" / "tool_cache"
    assert roots({"RUNNER_TOOL_CACHE": str(named)}, tmp_path / "t")[0] == named / "buildonce-wheels"
    assert named.is_dir()


def test_a_tool_cache_that_cannot_be_made_leaves_the_store_in_the_jobs_temp(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    named = blocker / "tool_cache"
    assert roots({"RUNNER_TOOL_CACHE": str(named)}, tmp_path / "t")[0] == tmp_path / "t/buildonce/wheels"


# --- unpacking ----------------------------------------------------------------------------------------------


def test_a_wheel_unpacks_into_site_packages_with_its_purelib_data(tmp_path: Path) -> None:
    wheel = tmp_path / "alpha-1.0-py3-none-any.whl"
    fake_wheel(wheel, "alpha", "1.0", {"alpha/__init__.py": "A = 1\n", "alpha-1.0.data/purelib/extra.py": "B = 2\n"})
    site = tmp_path / "site"
    assert install.unpack(wheel, site) == "alpha-1.0.dist-info"
    assert (site / "alpha" / "__init__.py").read_text() == "A = 1\n"
    assert (site / "extra.py").read_text() == "B = 2\n"
    assert (site / "alpha-1.0.dist-info" / "INSTALLER").read_text() == "buildonce\n"
    assert finder.installed_distributions(str(site)) == {("alpha", "1.0")}


@pytest.mark.parametrize("member", ["../escape.py", "/etc/escape.py", "alpha/../../escape.py", "C:/escape.py"])
def test_a_wheel_path_outside_site_packages_is_refused(tmp_path: Path, member: str) -> None:
    wheel = tmp_path / "alpha-1.0-py3-none-any.whl"
    fake_wheel(wheel, "alpha", "1.0", {member: "x = 1\n"})
    with pytest.raises(install.InstallError, match="outside the venv"):
        install.unpack(wheel, tmp_path / "site")
    assert not (tmp_path / "escape.py").exists()


def test_a_wheel_with_scripts_or_data_is_refused_rather_than_half_installed(tmp_path: Path) -> None:
    wheel = tmp_path / "alpha-1.0-py3-none-any.whl"
    fake_wheel(wheel, "alpha", "1.0", {"alpha-1.0.data/scripts/alpha": "#!python\n"})
    with pytest.raises(install.InstallError, match="only unpacks purelib and platlib"):
        install.unpack(wheel, tmp_path / "site")


# --- the action's steps -------------------------------------------------------------------------------------


ACTIONS = sorted([ROOT / "action.yml", *ROOT.glob("*/action.yml")])


def test_every_action_of_the_project_is_checked_here() -> None:
    assert {path.parent.name for path in ACTIONS} >= {"consume", "merge", "plan", "prune"}


@pytest.mark.parametrize("path", ACTIONS, ids=[path.parent.name for path in ACTIONS])
def test_the_wheels_are_found_then_restored_then_installed(path: Path) -> None:
    steps = yaml.safe_load(path.read_text())["runs"]["steps"]
    ids = [step.get("id", step.get("uses", "").split("@")[0]) for step in steps]
    plan, restore, install_step = (steps[ids.index(name)] for name in ("wheels", "actions/cache", "install"))
    assert ids.index("wheels") + 1 == ids.index("actions/cache") == ids.index("install") - 1
    assert plan["run"].endswith('install.sh" plan')
    assert restore["if"] == "steps.wheels.outputs.restore == 'true'"
    assert restore["with"] == {"path": "${{ steps.wheels.outputs.path }}", "key": "${{ steps.wheels.outputs.key }}"}
    assert re.fullmatch(r"actions/cache@[0-9a-f]{40}", restore["uses"])
    assert install_step["run"].endswith('install.sh"')
    # The plan step installs when there is nothing to restore; the install step runs only when it did not.
    assert install_step["if"] == "steps.wheels.outputs.python == ''"
    python = "${{ steps.install.outputs.python || steps.wheels.outputs.python }}"
    users = [step for step in steps if "BUILDONCE_PYTHON" in step.get("env", {})]
    assert users, "no step runs buildonce"
    assert all(step["env"]["BUILDONCE_PYTHON"] == python for step in users)
    assert "steps.install.outputs.python }}" not in path.read_text().replace(python, "")


# --- the finished installs ----------------------------------------------------------------------------------


def made_install(root: Path, name: str, content: str = "made") -> Path:
    directory = root / name
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / "python").write_text(content)
    (directory / ".buildonce-fingerprint").write_text("x\n")
    return directory


def test_a_made_install_is_renamed_into_an_empty_place(tmp_path: Path) -> None:
    made = made_install(tmp_path, ".building-1")
    said: list[str] = []
    assert install.place(made, tmp_path / ("a" * 32), lambda _: False, said.append) is True
    assert (tmp_path / ("a" * 32) / "bin" / "python").read_text() == "made"
    assert not made.exists()
    assert said == []


def test_the_job_that_renames_second_uses_the_first_ones_install(tmp_path: Path) -> None:
    winner = made_install(tmp_path, "a" * 32, "winner")
    loser = made_install(tmp_path, ".building-2", "loser")
    checked: list[Path] = []

    def unchanged(path: Path) -> bool:
        checked.append(path)
        return True

    assert install.place(loser, winner, unchanged, print) is False
    assert checked == [winner], "the winner's install is checked before it is used"
    assert (winner / "bin" / "python").read_text() == "winner"
    assert not loser.exists(), "the loser's copy is discarded"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a" * 32]


def test_an_install_in_the_way_that_is_not_this_one_is_replaced_with_a_warning(tmp_path: Path) -> None:
    damaged = made_install(tmp_path, "a" * 32, "damaged")
    made = made_install(tmp_path, ".building-3", "made")
    said: list[str] = []
    assert install.place(made, damaged, lambda _: False, said.append) is True
    assert (damaged / "bin" / "python").read_text() == "made"
    assert len(said) == 1
    assert said[0].startswith("::warning")
    assert str(damaged) in said[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a" * 32], "the damaged one is removed"


def test_a_place_that_stays_taken_fails_after_a_few_tries(tmp_path: Path) -> None:
    target = tmp_path / ("a" * 32)
    target.write_text("a file, where a directory should be, that cannot be set aside")
    made = made_install(tmp_path, ".building-4")
    attempts: list[Path] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(install, "set_aside", attempts.append)
        with pytest.raises(install.InstallError, match="could not rename the new install"):
            install.place(made, target, lambda _: False, lambda _: None)
    assert len(attempts) == 3


DAY = 86400


def aged(path: Path, days: float, now: float) -> Path:
    for each in (path / ".buildonce-fingerprint", path):
        if each.exists() and not each.is_symlink():
            os.utime(each, (now - days * DAY, now - days * DAY))
    return path


def test_installs_unused_for_a_month_and_abandoned_temporaries_are_swept(tmp_path: Path) -> None:
    now = time.time()
    root = tmp_path / "buildonce"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("")
    old = aged(made_install(root, "a" * 32), 31, now)
    recent = aged(made_install(root, "b" * 32), 29, now)
    in_use = aged(made_install(root, "c" * 32), 400, now)
    abandoned = aged(made_install(root, ".building-" + "d" * 32 + "-x"), 2, now)
    building = aged(made_install(root, ".building-" + "e" * 32 + "-y"), 0.1, now)
    left_aside = aged(made_install(root, ".discarded-" + "f" * 32 + "-z"), 1.5, now)
    unrelated = aged(made_install(root, "not-an-install"), 400, now)
    link = root / ("9" * 32)
    link.symlink_to(outside)
    aged(outside, 400, now)
    removed = install.sweep(root, in_use.name, now)
    assert sorted(removed) == sorted([old.name, abandoned.name, left_aside.name])
    assert sorted(path.name for path in root.iterdir()) == sorted(
        [recent.name, in_use.name, building.name, unrelated.name, link.name]
    )
    assert (outside / "precious").exists(), "a link is never followed out of the installs' directory"


def test_an_install_a_job_touches_while_it_is_swept_is_put_back(tmp_path: Path) -> None:
    now = time.time()
    old = aged(made_install(tmp_path, "a" * 32), 31, now)
    rename = install.set_aside

    def touched_meanwhile(path: Path) -> Path | None:
        aside: Path | None = rename(path)
        assert aside is not None
        os.utime(aside / ".buildonce-fingerprint", (now, now))  # a job found it just before the rename
        return aside

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(install, "set_aside", touched_meanwhile)
        assert install.sweep(tmp_path, "b" * 32, now) == []
    assert (old / "bin" / "python").read_text() == "made"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a" * 32]


def test_a_sweep_looks_at_a_bounded_number_of_entries(tmp_path: Path) -> None:
    now = time.time()
    for index in range(5):
        aged(made_install(tmp_path, f"{index:032x}"), 40, now)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(install, "MOST_ENTRIES", 2)
        assert len(install.sweep(tmp_path, "", now)) == 2
    assert len(list(tmp_path.iterdir())) == 3


def test_the_stamp_lists_the_fingerprint_and_the_packages(tmp_path: Path) -> None:
    packages = frozenset({("docker", "7.2.0"), ("requests", "2.34.2")})
    (tmp_path / ".buildonce-fingerprint").write_text(finder.stamp_text("f" * 64, packages))
    assert finder.read_stamp(str(tmp_path)) == ("f" * 64, packages)
    (tmp_path / ".buildonce-fingerprint").write_text("f" * 64 + "\nnot a package line\n")
    assert finder.read_stamp(str(tmp_path)) is None
    (tmp_path / ".buildonce-fingerprint").write_text("")
    assert finder.read_stamp(str(tmp_path)) is None


def test_the_fingerprint_covers_the_sources_the_lock_and_both_installer_files(tmp_path: Path) -> None:
    sources = finder.read_sources()
    assert "__init__.py" in sources
    assert "commands/consume.py" in sources
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in sources)
    lock = LOCK.read_bytes()
    digest = finder.fingerprint(lock, sources)
    assert digest == finder.fingerprint(lock, dict(sources))
    assert digest != finder.fingerprint(lock + b"\n", sources)
    assert digest != finder.fingerprint(lock, {**sources, "tags.py": sources["tags.py"] + b"\n"})
    assert digest != finder.fingerprint(lock, {**sources, "new.py": b""})
    copy = tmp_path / "action"
    copy.mkdir()
    for name in ("install.py", "installer.py"):
        (copy / name).write_bytes((ROOT / "action" / name).read_bytes())
    (copy / "installer.py").write_text((copy / "installer.py").read_text() + "\n# changed\n")
    changed = load("buildonce_install_copy", copy / "install.py")
    assert changed.fingerprint(lock, sources) != digest


def test_both_installer_files_name_the_same_stamp() -> None:
    assert install.STAMP == finder.STAMP == ".buildonce-fingerprint"
    assert install.MINIMUM_PYTHON == finder.MINIMUM_PYTHON
