"""Install buildonce into a virtual environment under $RUNNER_TEMP; action/install.sh runs this with python3 -I.

The runtime dependencies are the wheels that requirements.lock names, and only those: each one is checked
against the lock's sha256 hashes before it is unpacked, so a package that differs from the one locked fails
the install instead of running. Only wheels are used (never a source archive, whose build would fetch a
build backend), and buildonce itself is copied from the action's own checkout.

The wheels are kept in a store outside the job, $RUNNER_TOOL_CACHE/buildonce-wheels/<key> (or under
$RUNNER_TEMP when there is no tool cache), which actions/cache restores on hosted runners and which stays on
the machine for the next job elsewhere. Whatever the store holds is checked again against the lock each
time; a file that does not match is dropped, and what is missing is downloaded with the runner's own pip
(`pip download --require-hashes --only-binary :all: --no-deps`). Unpacking a few wheels takes a fraction of
a second, where `pip install` (and the pip bootstrapped into a new venv by `python -m venv`) takes seconds.

    install.py plan   the step before the cache: write key, path and restore (whether to restore) outputs;
                      with nothing to restore, install now and write the output python too
    install.py        install, or find the same install already there; write the output python

The install's fingerprint (this file, the lock, the sources and the interpreter) is kept in the venv: a
second call in the same job finds the same buildonce there and only checks that nothing was changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
SOURCES = ROOT / "src" / "buildonce"
STORE_FORMAT = "1"
"""Part of the store's key: a change to how the store is laid out or chosen gets new keys."""
MINIMUM_PYTHON = (3, 10)


class InstallError(Exception):
    """The install cannot go on; the message says why and how to fix it."""


# --- the lock -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One pinned package of the lock: its name, version, environment marker and allowed sha256 hashes."""

    name: str
    version: str
    marker: str
    hashes: frozenset[str]
    text: str
    """The requirement as the lock spells it, without its marker: what pip is given to download."""


_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]*?))?$")
_HASH = re.compile(r"^--hash=sha256:(?P<hash>[0-9a-f]{64})$")


def normalize(name: str) -> str:
    """A project name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> list[Requirement]:
    """The requirements of a hash-locked file as ``uv pip compile --generate-hashes`` writes it.

    Anything else (an unpinned or unhashed requirement, an option, a URL) is an error: the lock must pin
    every package to one version and its hashes."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("--hash") else raw.strip()
        if not line.strip():
            continue
        continued = line.endswith("\\")
        current += " " + line.rstrip("\\").strip()
        if not continued:
            logical.append(current.strip())
            current = ""
    if current.strip():
        logical.append(current.strip())
    requirements: list[Requirement] = []
    for entry in logical:
        head, *options = re.split(r"\s+(?=--)", entry)
        match = _REQUIREMENT.match(head.strip())
        hashes = [_HASH.match(option) for option in options]
        if match is None or not hashes or None in hashes:
            raise InstallError(f"requirements.lock: cannot read {entry[:120]!r}; regenerate it with scripts/lock")
        requirements.append(
            Requirement(
                name=normalize(match["name"]),
                version=match["version"],
                marker=(match["marker"] or "").strip(),
                hashes=frozenset(found["hash"] for found in hashes if found is not None),
                text=f"{match['name']}=={match['version']}",
            )
        )
    return requirements


# --- environment markers (PEP 508) ----------------------------------------------------------------------


def marker_environment() -> dict[str, str]:
    """The values of this interpreter that a marker may compare, as PEP 508 defines them."""
    implementation = sys.implementation.version
    implementation_version = f"{implementation.major}.{implementation.minor}.{implementation.micro}"
    if implementation.releaselevel != "final":
        implementation_version += implementation.releaselevel[0] + str(implementation.serial)
    return {
        "os_name": os.name,
        "sys_platform": sys.platform,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "python_full_version": platform.python_version(),
        "implementation_name": sys.implementation.name,
        "implementation_version": implementation_version,
    }


_MARKER_TOKEN = re.compile(
    r"\s*(?:(?P<string>'[^']*'|\"[^\"]*\")|(?P<op>===|==|!=|<=|>=|~=|<|>|\(|\)|not\s+in\b|in\b|and\b|or\b)"
    r"|(?P<name>[a-z_]+))"
)
_VERSION_VARIABLES = frozenset({"python_version", "python_full_version", "implementation_version"})


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"^\d+(?:\.\d+)*", version)
    if match is None:
        raise InstallError(f"requirements.lock: {version!r} is not a version this installer can compare")
    return tuple(int(part) for part in match[0].split("."))


def _compare(left: str, op: str, right: str, versions: bool) -> bool:
    if op in ("in", "not in"):
        return (left in right) == (op == "in")
    if op == "===":
        return left == right
    if not versions:
        if op not in ("==", "!="):
            raise InstallError(f"requirements.lock: cannot compare {left!r} {op} {right!r}")
        return (left == right) == (op == "==")
    a, b = _release(left), _release(right)
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    if op == "~=":
        return a >= b and a[: len(_release(right)) - 1] == b[: len(_release(right)) - 1]
    results: dict[str, Callable[[], bool]] = {
        "==": lambda: a == b,
        "!=": lambda: a != b,
        "<": lambda: a < b,
        "<=": lambda: a <= b,
        ">": lambda: a > b,
        ">=": lambda: a >= b,
    }
    return results[op]()


def evaluate_marker(marker: str, environment: Mapping[str, str]) -> bool:
    """Whether a PEP 508 marker holds in ``environment`` (no marker always does).

    Comparisons of the python and implementation versions compare release numbers; other variables compare
    as strings. A marker this cannot read is an error rather than a guess."""
    if not marker.strip():
        return True
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(marker.rstrip()):
        match = _MARKER_TOKEN.match(marker, position)
        if match is None or match.end() == position:
            raise InstallError(f"requirements.lock: cannot read the marker {marker!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, " ".join(match[kind].split())))
        position = match.end()
    index = 0

    def peek() -> str:
        return tokens[index][1] if index < len(tokens) else ""

    def take() -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens):
            raise InstallError(f"requirements.lock: the marker {marker!r} ends too early")
        index += 1
        return tokens[index - 1]

    def value(token: tuple[str, str]) -> tuple[str, bool]:
        kind, text = token
        if kind == "string":
            return text[1:-1], False
        if kind == "name" and text in environment:
            return environment[text], text in _VERSION_VARIABLES
        raise InstallError(f"requirements.lock: the marker {marker!r} names {text!r}, which is not a marker variable")

    def comparison() -> bool:
        if peek() == "(":
            take()
            result = either()
            if take()[1] != ")":
                raise InstallError(f"requirements.lock: unbalanced parentheses in the marker {marker!r}")
            return result
        left, left_version = value(take())
        kind, op = take()
        if kind != "op" or op in ("(", ")", "and", "or"):
            raise InstallError(f"requirements.lock: cannot read the marker {marker!r}")
        right, right_version = value(take())
        return _compare(left, op, right, left_version or right_version)

    def both() -> bool:
        result = comparison()
        while peek() == "and":
            take()
            result = comparison() and result
        return result

    def either() -> bool:
        result = both()
        while peek() == "or":
            take()
            result = both() or result
        return result

    result = either()
    if index != len(tokens):
        raise InstallError(f"requirements.lock: cannot read the marker {marker!r}")
    return result


def applicable(requirements: Iterable[Requirement], environment: Mapping[str, str]) -> list[Requirement]:
    """The requirements whose markers hold here: the packages this interpreter gets."""
    return [requirement for requirement in requirements if evaluate_marker(requirement.marker, environment)]


# --- the wheel store ------------------------------------------------------------------------------------


def store_key(lock_bytes: bytes) -> str:
    """What the chosen wheels depend on: the lock, the interpreter's ABI and the platform (with its libc)."""
    libc = "".join(platform.libc_ver()) or "nolibc"
    parts = [f"v{STORE_FORMAT}", sys.implementation.cache_tag or "", sysconfig.get_platform(), libc]
    where = "-".join(re.sub(r"[^A-Za-z0-9._]+", "_", part) for part in parts)
    return f"buildonce-wheels-{where}-{hashlib.sha256(lock_bytes).hexdigest()[:24]}"


def store_root(env: Mapping[str, str], temp: Path) -> Path:
    """The runner's tool cache, which outlives the job on a machine that is kept, else the job's temp.

    A runner may name a tool cache that no tool has made yet (a new self-hosted runner, act): it is made
    here, as the toolkit's tool-cache makes it; one that cannot be made or written is not used."""
    tool_cache = env.get("RUNNER_TOOL_CACHE", "")
    if tool_cache and Path(tool_cache).is_absolute():
        with contextlib.suppress(OSError):
            Path(tool_cache).mkdir(parents=True, exist_ok=True)
        if Path(tool_cache).is_dir() and os.access(tool_cache, os.W_OK):
            return Path(tool_cache) / "buildonce-wheels"
    return temp / "buildonce" / "wheels"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class StoreCheck:
    found: dict[str, Path]
    """Each applicable requirement's name and its wheel in the store."""
    missing: list[Requirement]
    dropped: list[str]
    """The names of files the store held that no applicable requirement allows."""


def check_store(store: Path, wanted: Sequence[Requirement], *, drop: bool) -> StoreCheck:
    """Match the store's wheels to the wanted requirements by sha256; ``drop`` removes what matches none."""
    by_hash = {digest: requirement for requirement in wanted for digest in requirement.hashes}
    found: dict[str, Path] = {}
    dropped: list[str] = []
    files = sorted(store.glob("*.whl")) if store.is_dir() else []
    for path in files:
        requirement = by_hash.get(sha256_file(path))
        if requirement is None or requirement.name in found:
            dropped.append(path.name)
            if drop:
                path.unlink()
            continue
        found[requirement.name] = path
    missing = [requirement for requirement in wanted if requirement.name not in found]
    return StoreCheck(found, missing, dropped)


def find_pip(python: str, scratch: Path, say: Callable[[str], None]) -> list[str]:
    """The runner's own pip, else the pip that ships inside the interpreter (ensurepip), in a scratch venv."""
    probe = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return [python, "-m", "pip"]
    say(f"{python} has no pip; using the copy of pip that ships with it (ensurepip), which takes a few seconds")
    bootstrap = scratch / "pip-venv"
    try:
        venv.EnvBuilder(with_pip=True, symlinks=os.name != "nt").create(bootstrap)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InstallError(
            f"{python} has neither pip nor ensurepip ({exc}). Add actions/setup-python before this step, or "
            "install pip (Debian and Ubuntu: python3-pip and python3-venv)."
        ) from None
    return [str(venv_python(bootstrap)), "-m", "pip"]


def download(pip: Sequence[str], requirements: Sequence[Requirement], store: Path) -> None:
    """Download the wheels of ``requirements`` into the store, each checked by pip against the lock's hashes."""
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=store.parent) as scratch:
        wanted = Path(scratch) / "requirements.txt"
        wanted.write_text(
            "".join(
                f"{requirement.text} "
                + " ".join(f"--hash=sha256:{digest}" for digest in sorted(requirement.hashes))
                + "\n"
                for requirement in requirements
            )
        )
        target = Path(scratch) / "wheels"
        argv = [
            *pip,
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--require-hashes",
            "--requirement",
            str(wanted),
            "--dest",
            str(target),
        ]
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if result.returncode != 0:
            sys.stdout.write(result.stdout)
            raise InstallError(
                "pip could not download the locked wheels (see its output above); a hash mismatch means a "
                "package differs from the one requirements.lock pins, and the install refuses it."
            )
        for wheel in target.glob("*.whl"):
            wheel.replace(store / wheel.name)


# --- the venv -------------------------------------------------------------------------------------------


def venv_python(directory: Path) -> Path:
    return directory / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def site_packages(directory: Path) -> Path:
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else ("nt" if os.name == "nt" else "posix_prefix")
    base = str(directory)
    return Path(sysconfig.get_path("purelib", scheme, vars={"base": base, "platbase": base}))


def _member_target(site: Path, name: str, data_dir: str) -> Path:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts[:-1]) or ":" in parts[0]:
        raise InstallError(f"a locked wheel holds the path {name!r}, which would land outside the venv")
    if parts[0] == data_dir and len(parts) > 1:
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return site.joinpath(*parts[2:])
        raise InstallError(f"a locked wheel installs {name!r}; this installer only unpacks purelib and platlib")
    return site.joinpath(*parts)


UNUSABLE_MEMBERS = re.compile(r"^zstandard/(_cffi\.[^/]*\.so|backend_cffi\.py)$")
"""Files of a locked wheel that nothing can import here, left packed: zstandard's cffi backend (half its
24 MB) needs cffi, which the lock leaves out; zstandard loads its C backend, and the cffi one only when
asked to (PYTHON_ZSTANDARD_IMPORT_POLICY=cffi), which would fail the same with or without these files."""


def unpack(wheel: Path, site: Path) -> str:
    """Unpack one hash-checked wheel into site-packages, as the wheel format defines it; its dist-info name."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_infos = {name.split("/", 1)[0] for name in names if name.split("/", 1)[0].endswith(".dist-info")}
        if len(dist_infos) != 1:
            raise InstallError(f"{wheel.name} holds {len(dist_infos)} .dist-info directories, not one")
        dist_info = dist_infos.pop()
        metadata = archive.read(f"{dist_info}/WHEEL").decode()
        if not re.search(r"^Wheel-Version:\s*1\.", metadata, re.MULTILINE):
            raise InstallError(f"{wheel.name} is of a wheel version this installer does not know")
        data_dir = dist_info[: -len(".dist-info")] + ".data"
        for info in archive.infolist():
            if info.is_dir() or UNUSABLE_MEMBERS.match(info.filename):
                continue
            target = _member_target(site, info.filename, data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            if info.external_attr >> 16 & 0o111:
                target.chmod(0o755)
    (site / dist_info / "INSTALLER").write_text("buildonce\n")
    return dist_info


def copy_sources(site: Path) -> None:
    target = site / "buildonce"
    for source in sorted(SOURCES.rglob("*")):
        if "__pycache__" in source.parts or not source.is_file() or source.suffix == ".pyc":
            continue
        destination = target / source.relative_to(SOURCES)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)


def source_files() -> list[Path]:
    return sorted(
        path
        for path in SOURCES.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def fingerprint(lock_bytes: bytes) -> str:
    """Same installer, same lock, same sources and same interpreter: the same install."""
    digest = hashlib.sha256()
    for part in (STORE_FORMAT, sys.executable, sys.version):
        digest.update(part.encode() + b"\0")
    digest.update(hashlib.sha256(Path(__file__).read_bytes()).digest())
    digest.update(hashlib.sha256(lock_bytes).digest())
    for path in source_files():
        digest.update(str(path.relative_to(SOURCES)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def installed_unchanged(directory: Path, wanted: Fingerprinted) -> bool:
    """Whether ``directory`` holds this very install: its fingerprint, its packages and buildonce's sources."""
    stamp = directory / ".buildonce-fingerprint"
    if not stamp.is_file() or stamp.read_text().strip() != wanted.digest or not venv_python(directory).exists():
        return False
    site = site_packages(directory)
    if not site.is_dir():
        return False
    if installed_distributions(site) != set(wanted.distributions):
        return False
    for source in source_files():
        copy = site / "buildonce" / source.relative_to(SOURCES)
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            return False
    return True


@dataclass(frozen=True)
class Fingerprinted:
    digest: str
    distributions: frozenset[tuple[str, str]]
    """The (normalized name, version) of every package the venv must hold, and no other."""


def distribution_of(dist_info: str) -> tuple[str, str]:
    """(normalized name, version) of a ``name-version.dist-info`` directory."""
    name, _, version = dist_info[: -len(".dist-info")].rpartition("-")
    return normalize(name), version


def installed_distributions(site: Path) -> set[tuple[str, str]]:
    return {distribution_of(path.name) for path in site.glob("*.dist-info")}


# --- the steps ------------------------------------------------------------------------------------------


class Runner:
    """The runner's environment and files, read once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        temp = env.get("RUNNER_TEMP", "")
        if not temp:
            raise InstallError("RUNNER_TEMP is not set; this script runs as a step of the buildonce action.")
        self.env = env
        self.temp = Path(temp)
        self.venv = self.temp / "buildonce" / "venv"
        self.lock_bytes = LOCK.read_bytes()
        self.wanted = applicable(parse_lock(self.lock_bytes.decode()), marker_environment())
        self.key = store_key(self.lock_bytes)
        self.store = store_root(env, self.temp) / self.key

    def output(self, values: Mapping[str, str]) -> None:
        path = self.env.get("GITHUB_OUTPUT", "")
        if path:
            with Path(path).open("a", encoding="utf-8") as stream:
                stream.writelines(f"{name}={value}\n" for name, value in values.items())

    def stamp_of_venv(self) -> str:
        stamp = self.venv / ".buildonce-fingerprint"
        return stamp.read_text().strip() if stamp.is_file() else ""


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def plan(runner: Runner) -> None:
    """The step before actions/cache: its key and path, and whether there is anything to restore.

    When there is nothing to restore (the store on the machine is complete, or this job installed already),
    the install is done here and now, and its interpreter is the output ``python``: the action skips its
    install step, and a consume job starts one Python process sooner."""
    if runner.stamp_of_venv() == fingerprint(runner.lock_bytes):
        restore = False  # a second install in this job: it is there already
    else:
        restore = bool(check_store(runner.store, runner.wanted, drop=False).missing)
    say(f"wheel store: {runner.store} ({'to restore' if restore else 'complete'})")
    runner.output({"key": runner.key, "path": str(runner.store), "restore": "true" if restore else "false"})
    if not restore:
        install(runner)


def install(runner: Runner) -> None:
    version = re.search(r'^__version__ = "(.*)"$', (SOURCES / "__init__.py").read_text(), re.MULTILINE)
    label = f"buildonce {version[1] if version else '(unknown version)'}"
    digest = fingerprint(runner.lock_bytes)
    checked = check_store(runner.store, runner.wanted, drop=True)
    for name in checked.dropped:
        say(f"::warning title=buildonce::dropped {name} from the wheel store: its sha256 is not in requirements.lock")
    expected = Fingerprinted(digest, frozenset((item.name, item.version) for item in runner.wanted))
    if installed_unchanged(runner.venv, expected):
        say(f"{label} is already installed in {runner.venv}")
        runner.output({"python": str(venv_python(runner.venv))})
        return
    say(f"::group::Install {label} into {runner.venv}")
    if checked.missing:
        say(f"downloading {len(checked.missing)} locked wheels into {runner.store}")
        with tempfile.TemporaryDirectory(prefix="buildonce-pip-", dir=runner.temp) as scratch:
            download(find_pip(sys.executable, Path(scratch), say), checked.missing, runner.store)
        checked = check_store(runner.store, runner.wanted, drop=True)
        if checked.missing or checked.dropped:
            raise InstallError(
                "the downloaded wheels do not match requirements.lock: "
                + ", ".join([requirement.text for requirement in checked.missing] + checked.dropped)
            )
    else:
        say(f"every locked wheel is in {runner.store}")
    shutil.rmtree(runner.venv, ignore_errors=True)
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(runner.venv)
    site = site_packages(runner.venv)
    site.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        unpacked = {
            distribution_of(name) for name in pool.map(lambda wheel: unpack(wheel, site), checked.found.values())
        }
    if unpacked != expected.distributions or installed_distributions(site) != expected.distributions:
        raise InstallError(f"the wheels unpacked {sorted(unpacked)}, not {sorted(expected.distributions)}")
    copy_sources(site)
    # The venv's interpreter is this very one, and every package in it was checked above: there is nothing
    # a trial start would add but a tenth of a second.
    python = venv_python(runner.venv)
    if not python.exists():
        raise InstallError(f"the venv {runner.venv} has no interpreter at {python}; check that RUNNER_TEMP is writable")
    say(f"installed {label}: {', '.join(sorted(f'{name} {version}' for name, version in unpacked))}")
    (runner.venv / ".buildonce-fingerprint").write_text(digest + "\n")
    say("::endgroup::")
    runner.output({"python": str(python)})


def run(argv: Sequence[str], env: Mapping[str, str]) -> None:
    if sys.version_info < MINIMUM_PYTHON:
        raise InstallError(
            f"buildonce needs Python 3.10 or later, but python3 is {platform.python_version()}. "
            "Add actions/setup-python before this step."
        )
    if list(argv) not in ([], ["plan"]):
        raise InstallError(f"unknown arguments {list(argv)}; use 'plan' or none")
    runner = Runner(env)
    if argv:
        plan(runner)
    else:
        install(runner)


def main(argv: Sequence[str]) -> int:
    try:
        run(argv, os.environ)
    except InstallError as exc:
        # A workflow command ends at a line break: escape it, and '%', so that a message cannot add a command.
        message = str(exc).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        say(f"::error title=buildonce::{message}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
