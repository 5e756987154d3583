"""Install buildonce, or find it installed: the set-up of the composite actions (install.sh runs this, python3 -I -S).

An install is a virtual environment kept on the machine, $RUNNER_TOOL_CACHE/buildonce/<fingerprint> (or
under $RUNNER_TEMP when there is no tool cache to write to), where the fingerprint covers both installer
files, requirements.lock, buildonce's sources, the interpreter and the system the lock's markers look at.
A job on a machine that kept it (a self-hosted runner, a later job on the same machine, a second install in
one job) finds it there and checks it before using it: the completion stamp holds this fingerprint, the
interpreter is there, its packages are the ones the installer recorded from the lock (the stamp lists them,
and the fingerprint covers the lock they were read from), and buildonce's copied sources are the action's
own, byte for byte. That is all this file does, with os, sys, hashlib and sysconfig alone, because the plan
step runs it in every job; it reads no wheel.

When the install is not there, or fails a check, installer.py makes it: from the hash-checked wheels of a
store that actions/cache restores (see there), in a temporary directory renamed into place when complete.
actions/cache restores only the wheel store, never a finished install, so that a cache entry can add no code.

    install.py plan   the step before the cache: with the install found, restore=false and python; else
                      installer.py writes key, path and restore, and installs when there is nothing to restore
    install.py        find the install, or make it; write the output python
"""

# ruff: noqa: PTH103, PTH110, PTH112, PTH117, PTH118, PTH120, PTH123, PTH208
# os.path, not pathlib, whose import alone would be a fifth of the plan step's time.
from __future__ import annotations

import hashlib
import os
import sys
import sysconfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)
LOCK = os.path.join(ROOT, "requirements.lock")
SOURCES = os.path.join(ROOT, "src", "buildonce")
INSTALLER = os.path.join(HERE, "installer.py")
MINIMUM_PYTHON = (3, 10)
FORMAT = "2"
"""Part of the fingerprint: a change to how an install is laid out makes new installs."""
STAMP = ".buildonce-fingerprint"
"""The completion stamp, written last: the fingerprint, then the packages; its mtime is the install's last use."""


def source_files(directory: str) -> list[str]:
    """The files under ``directory`` but bytecode, by their path relative to it, in a stable order."""
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
        relative = os.path.relpath(folder, directory).replace(os.sep, "/")
        found += [name if relative == "." else f"{relative}/{name}" for name in sorted(files) if name[-4:] != ".pyc"]
    return found


def read_sources(directory: str = SOURCES) -> dict[str, bytes]:
    """buildonce's source files by their path relative to ``directory``: read once, so that the files
    fingerprinted, checked and copied are the same bytes."""
    found: dict[str, bytes] = {}
    for relative in source_files(directory):
        with open(os.path.join(directory, relative), "rb") as stream:
            found[relative] = stream.read()
    return found


def system() -> tuple[str, ...]:
    """What the lock's markers may ask of the machine besides the interpreter: its OS, kernel and processor."""
    if hasattr(os, "uname"):
        uname = os.uname()
        return (os.name, sys.platform, uname.sysname, uname.release, uname.version, uname.machine)
    import platform

    described = platform.uname()
    return (os.name, sys.platform, described.system, described.release, described.version, described.machine)


def fingerprint(lock_bytes: bytes, sources: Mapping[str, bytes]) -> str:
    """Same installer, same lock, same sources, same interpreter on the same system: the same install."""
    digest = hashlib.sha256()
    for part in (FORMAT, sys.executable, sys.version, *system()):
        digest.update(part.encode() + b"\0")
    for path in (__file__, INSTALLER):
        with open(path, "rb") as stream:
            digest.update(hashlib.sha256(stream.read()).digest())
    digest.update(hashlib.sha256(lock_bytes).digest())
    for relative, content in sources.items():
        digest.update(relative.encode() + b"\0")
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


def tool_cache(env: Mapping[str, str]) -> str | None:
    """The runner's tool cache, which outlives the job on a machine that is kept, if it can be written.

    A runner may name a tool cache that no tool has made yet (a new self-hosted runner, act): it is made
    here, as the toolkit's tool-cache makes it; one that cannot be made or written is not used."""
    named = env.get("RUNNER_TOOL_CACHE", "")
    if not named or not os.path.isabs(named):
        return None
    try:
        os.makedirs(named, exist_ok=True)
    except OSError:
        return None
    return named if os.path.isdir(named) and os.access(named, os.W_OK) else None


def store_root(env: Mapping[str, str], temp: str) -> str:
    """Where the wheel stores are: in the runner's tool cache, else in the job's temp."""
    cache = tool_cache(env)
    return os.path.join(cache, "buildonce-wheels") if cache else os.path.join(temp, "buildonce", "wheels")


def installs_root(env: Mapping[str, str], temp: str) -> str:
    """Where the finished installs are, one directory per fingerprint: beside the wheel stores."""
    cache = tool_cache(env)
    return os.path.join(cache, "buildonce") if cache else os.path.join(temp, "buildonce", "installs")


def venv_python(directory: str) -> str:
    return (
        os.path.join(directory, "Scripts", "python.exe")
        if os.name == "nt"
        else os.path.join(directory, "bin", "python")
    )


def site_packages(directory: str) -> str:
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else ("nt" if os.name == "nt" else "posix_prefix")
    return sysconfig.get_path("purelib", scheme, vars={"base": directory, "platbase": directory})


def stamp_text(digest: str, distributions: frozenset[tuple[str, str]]) -> str:
    return "".join(f"{line}\n" for line in [digest, *sorted(f"{name} {version}" for name, version in distributions)])


def read_stamp(directory: str) -> tuple[str, frozenset[tuple[str, str]]] | None:
    """The fingerprint and the packages a finished install's stamp holds; None if it has none that reads."""
    try:
        with open(os.path.join(directory, STAMP), encoding="utf-8") as stream:
            digest, *packages = stream.read().splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    pairs = [tuple(package.split(" ")) for package in packages]
    if any(len(pair) != 2 for pair in pairs):
        return None
    return digest, frozenset((pair[0], pair[1]) for pair in pairs)


def installed_distributions(site: str) -> frozenset[tuple[str, str]]:
    """(normalized name, version) of every ``name-version.dist-info`` directory in ``site``."""
    found = set()
    for name in os.listdir(site):
        if name.endswith(".dist-info"):
            project, _, version = name[: -len(".dist-info")].rpartition("-")
            words = project.replace("_", "-").replace(".", "-").split("-")
            found.add(("-".join(word for word in words if word).lower(), version))  # as PEP 503 compares names
    return frozenset(found)


class Job:
    """One job's set-up: the runner's variables and the action's files, read once, and where their install is."""

    def __init__(self, env: Mapping[str, str], temp: str) -> None:
        self.env = env
        self.temp = temp
        with open(LOCK, "rb") as stream:
            self.lock_bytes = stream.read()
        self.sources = read_sources()
        self.digest = fingerprint(self.lock_bytes, self.sources)
        self.stores = store_root(env, temp)
        self.installs = installs_root(env, temp)
        self.target = os.path.join(self.installs, self.digest[:32])

    def finished(self, directory: str) -> bool:
        """Whether ``directory`` holds this very install, complete and unchanged (see the module's docstring)."""
        stamp = read_stamp(directory)
        if stamp is None or stamp[0] != self.digest or not os.path.exists(venv_python(directory)):
            return False
        site = site_packages(directory)
        try:
            if installed_distributions(site) != stamp[1]:
                return False
            if source_files(os.path.join(site, "buildonce")) != list(self.sources):
                return False
            for relative, content in self.sources.items():
                with open(os.path.join(site, "buildonce", relative), "rb") as stream:
                    if stream.read() != content:
                        return False
        except OSError:
            return False
        return True

    def recorded(self, directory: str) -> frozenset[tuple[str, str]] | None:
        """The packages the stamp of ``directory`` lists, if it holds this fingerprint."""
        stamp = read_stamp(directory)
        return stamp[1] if stamp is not None and stamp[0] == self.digest else None

    def stamp(self, distributions: frozenset[tuple[str, str]]) -> str:
        """The stamp of this install, with its packages."""
        return stamp_text(self.digest, distributions)

    @staticmethod
    def python(directory: str) -> str:
        return venv_python(directory)

    @staticmethod
    def site(directory: str) -> str:
        return site_packages(directory)

    @staticmethod
    def distributions(site: str) -> frozenset[tuple[str, str]]:
        """The packages in ``site``, read as the reuse check reads them."""
        return installed_distributions(site)

    def found(self) -> bool:
        """Whether this job's install is in place and unchanged. It is marked as used first, and then checked:
        a sweep that sets an unused install aside looks at its mark again before deleting it, so an install
        found here is never one being deleted (and one set aside already is not found)."""
        try:
            os.utime(os.path.join(self.target, STAMP))
        except FileNotFoundError:
            return False
        except OSError:
            pass  # a tool cache this job cannot write to (no sweep can run there either): still checked
        return self.finished(self.target)

    def label(self) -> str:
        for line in self.sources.get("__init__.py", b"").decode(errors="replace").splitlines():
            if line.startswith('__version__ = "') and line.endswith('"'):
                return f"buildonce {line[len('__version__ = ') + 1 : -1]}"
        return "buildonce (unknown version)"

    def output(self, values: Mapping[str, str]) -> None:
        path = self.env.get("GITHUB_OUTPUT", "")
        if path:
            with open(path, "a", encoding="utf-8") as stream:
                stream.writelines(f"{name}={value}\n" for name, value in values.items())


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    temp = env.get("RUNNER_TEMP", "")
    job = Job(env, temp) if temp else None
    if job is not None and sys.version_info >= MINIMUM_PYTHON and list(argv) in ([], ["plan"]) and job.found():
        say(f"{job.label()} is already installed in {job.target}")
        # Nothing to restore: the action skips the cache and the install step, and uses this interpreter.
        job.output(
            {"restore": "false", "python": venv_python(job.target)} if argv else {"python": venv_python(job.target)}
        )
        return 0
    import importlib.util

    spec = importlib.util.spec_from_file_location("buildonce_installer", INSTALLER)
    if spec is None or spec.loader is None:
        raise ImportError(INSTALLER)
    installer = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = installer  # dataclasses look their module up there
    spec.loader.exec_module(installer)
    code: int = installer.main(argv, env, job)
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], os.environ))
