"""Make buildonce's install, when install.py did not find it: the plan step's slow path and the install step.

The runtime dependencies are the wheels that requirements.lock names, and only those: each one is checked
against the lock's sha256 hashes before it is unpacked, so a package that differs from the one locked fails
the install instead of running. Only wheels are used (never a source archive, whose build would fetch a
build backend), and buildonce itself is copied from the action's own checkout.

The wheels are kept in a store outside the job, $RUNNER_TOOL_CACHE/buildonce-wheels/<key> (or under
$RUNNER_TEMP when there is no tool cache), which actions/cache restores on hosted runners and which stays on
the machine for the next job elsewhere. Whatever the store holds is checked again against the lock each time
an install is made from it; a file that does not match is dropped, and what is missing is downloaded with the
runner's own pip (`pip download --require-hashes --only-binary :all: --no-deps`). Unpacking a few wheels
takes a fraction of a second, where `pip install` (and the pip bootstrapped into a new venv by
`python -m venv`) takes seconds.

The install is made in a temporary directory beside its place ($RUNNER_TOOL_CACHE/buildonce/<fingerprint>,
see install.py) and renamed into it when complete, stamp last: no job sees a half-made install, and of two
jobs installing at once on one machine, the one that renames second checks the first one's install and uses
it. One found changed or damaged is set aside and replaced. Installs of other fingerprints that no job has
used for UNUSED_FOR are removed when a new one is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from install import Job

STORE_FORMAT = "1"
"""Part of the store's key: a change to how the store is laid out or chosen gets new keys."""
MINIMUM_PYTHON = (3, 10)
STAMP = ".buildonce-fingerprint"
"""install.py's completion stamp of a finished install."""
UNUSED_FOR = 30 * 24 * 3600
"""A finished install of another fingerprint that no job has used for this long (seconds) is removed."""
ABANDONED_AFTER = 24 * 3600
"""A temporary directory of an install that has not been renamed into place after this long was abandoned."""
BUILDING, SET_ASIDE = ".building-", ".discarded-"
"""The prefixes of the names of an install being made and of one being removed, beside the finished installs."""
_INSTALL_NAME = re.compile(r"^[0-9a-f]{32}$")
MOST_ENTRIES = 1000
"""How many entries of the installs' directory one sweep looks at: enough for years of versions."""


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
    import subprocess
    import venv

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
    return [str(bootstrap / ("Scripts/python.exe" if os.name == "nt" else "bin/python")), "-m", "pip"]


def download(pip: Sequence[str], requirements: Sequence[Requirement], store: Path) -> None:
    """Download the wheels of ``requirements`` into the store, each checked by pip against the lock's hashes."""
    import subprocess
    import tempfile

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


# --- the install ----------------------------------------------------------------------------------------


def make_venv(directory: Path) -> None:
    """A venv without pip and without activation scripts, which would name the temporary directory it is made
    in: it is renamed into place when finished, and runs from there (its interpreter is a link to this one,
    and sys.prefix comes from where the interpreter and its pyvenv.cfg are)."""
    import venv

    class Bare(venv.EnvBuilder):
        def setup_scripts(self, context: object) -> None:
            return None

    Bare(with_pip=False, symlinks=os.name != "nt").create(directory)


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
    import shutil
    import zipfile

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


def copy_sources(site: Path, sources: Mapping[str, bytes]) -> None:
    target = site / "buildonce"
    for relative, content in sources.items():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(content)


def distribution_of(dist_info: str) -> tuple[str, str]:
    """(normalized name, version) of a ``name-version.dist-info`` directory."""
    name, _, version = dist_info[: -len(".dist-info")].rpartition("-")
    return normalize(name), version


# --- the finished installs ------------------------------------------------------------------------------


def discard(path: Path) -> None:
    """Remove ``path``: a directory with all it holds (never following a link out of it), or a file or link."""
    import shutil

    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    shutil.rmtree(path, ignore_errors=True)


def set_aside(path: Path) -> Path | None:
    """Rename ``path`` out of the way under a name no job looks for (an atomic step); where it went, if it was
    there."""
    import secrets

    aside = path.with_name(f"{SET_ASIDE}{path.name}-{secrets.token_hex(4)}")
    try:
        path.rename(aside)
    except FileNotFoundError:
        return None
    return aside


def last_used(directory: Path) -> float:
    """When a finished install was last used: its stamp's mtime (touched on use), else the directory's."""
    with contextlib.suppress(OSError):
        return (directory / STAMP).stat().st_mtime
    with contextlib.suppress(OSError):
        return directory.stat(follow_symlinks=False).st_mtime
    return 0.0


def sweep(root: Path, keep: str, now: float) -> list[str]:
    """Remove the finished installs of ``root`` that no job used for UNUSED_FOR, and the temporary directories
    of installs abandoned for ABANDONED_AFTER; never ``keep`` (the install in use) nor any other entry. The
    names removed."""
    removed: list[str] = []
    try:
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)[:MOST_ENTRIES]
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if entry.name == keep:
            continue
        if _INSTALL_NAME.match(entry.name) and entry.is_dir(follow_symlinks=False):
            if now - last_used(path) < UNUSED_FOR:
                continue
            aside = set_aside(path)
            if aside is None:
                continue
            # A job may have touched it between the look and the rename: then it is in use, and goes back.
            if now - last_used(aside) < UNUSED_FOR:
                try:
                    aside.rename(path)
                    continue
                except OSError:
                    pass  # made again meanwhile: this copy is no longer anyone's
            discard(aside)
            removed.append(entry.name)
        elif entry.name.startswith((BUILDING, SET_ASIDE)):
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age >= ABANDONED_AFTER:
                discard(path)
                removed.append(entry.name)
    return removed


def place(made: Path, target: Path, unchanged: Callable[[Path], bool], say: Callable[[str], None]) -> bool:
    """Rename the finished install ``made`` to ``target``, atomically. If another job's install got there first
    and is this very install, ``made`` is discarded and that one used (False); one that is not is set aside.
    True when ``made`` is the one in place."""
    for _ in range(3):
        try:
            made.rename(target)
        except OSError:
            if not os.path.lexists(target):
                continue  # set aside by another job meanwhile: try again
        else:
            return True
        if unchanged(target):
            discard(made)
            return False
        say(
            f"::warning title=buildonce::{target} is not the install it is named for (changed or damaged); replacing it"
        )
        aside = set_aside(target)
        if aside is not None:
            discard(aside)
    raise InstallError(f"could not rename the new install into {target}; check that nothing else writes there")


# --- the steps ------------------------------------------------------------------------------------------


class Runner:
    """The job (install.py read its files and found no install) and what making the install takes."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.temp = Path(job.temp)
        self.wanted = applicable(parse_lock(job.lock_bytes.decode()), marker_environment())
        self.distributions = frozenset((requirement.name, requirement.version) for requirement in self.wanted)
        self.key = store_key(job.lock_bytes)
        self.store = Path(job.stores) / self.key
        self.installs = Path(job.installs)
        self.target = Path(job.target)
        self.label = job.label()

    def unchanged(self, directory: Path) -> bool:
        """Whether ``directory`` holds this very install, with exactly the lock's packages."""
        return self.job.recorded(str(directory)) == self.distributions and self.job.finished(str(directory))

    def use(self) -> None:
        """Name the install in place as the output python, and remove the installs no job uses any more."""
        for name in sweep(self.installs, self.target.name, time.time()):
            say(f"removed {self.installs / name}: no job had used it for {UNUSED_FOR // 86400} days")
        self.job.output({"python": self.job.python(str(self.target))})


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def plan(runner: Runner) -> None:
    """The step before actions/cache, when install.py found no install: the cache's key and path, and whether
    there is anything to restore; with nothing to restore (the store on the machine is complete), the install
    is made here and now, and its interpreter is the output ``python``, so that the action skips its install
    step."""
    restore = bool(check_store(runner.store, runner.wanted, drop=False).missing)
    say(f"wheel store: {runner.store} ({'to restore' if restore else 'complete'})")
    runner.job.output({"key": runner.key, "path": str(runner.store), "restore": "true" if restore else "false"})
    if not restore:
        install(runner)


def install(runner: Runner) -> None:
    if runner.unchanged(runner.target):
        say(f"{runner.label} is already installed in {runner.target}")
        runner.use()
        return
    if os.path.lexists(runner.target):
        say(
            f"::warning title=buildonce::{runner.target} is not the install it is named for (changed or damaged); "
            "replacing it"
        )
        aside = set_aside(runner.target)
        if aside is not None:
            discard(aside)
    checked = check_store(runner.store, runner.wanted, drop=True)
    for name in checked.dropped:
        say(f"::warning title=buildonce::dropped {name} from the wheel store: its sha256 is not in requirements.lock")
    say(f"::group::Install {runner.label} into {runner.target}")
    if checked.missing:
        import tempfile

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
    made = build(runner, checked)
    if place(made, runner.target, runner.unchanged, say):
        say(f"installed {runner.label} in {runner.target}")
    else:
        say(f"another job installed the same {runner.label} in {runner.target} first; using that one")
    say("::endgroup::")
    runner.use()


def build(runner: Runner, checked: StoreCheck) -> Path:
    """The finished install, made in a temporary directory beside its place (removed if it fails)."""
    import tempfile

    runner.installs.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkdtemp(prefix=f"{BUILDING}{runner.target.name}-", dir=runner.installs))
    try:
        made.chmod(0o755)  # as the tool cache's other tools; mkdtemp makes it the owner's alone
        fill(made, runner, checked)
    except BaseException:
        discard(made)
        raise
    return made


def fill(made: Path, runner: Runner, checked: StoreCheck) -> None:
    """The venv, the hash-checked wheels unpacked into it, buildonce's sources, and last the stamp."""
    from concurrent.futures import ThreadPoolExecutor

    make_venv(made)
    site = Path(runner.job.site(str(made)))
    site.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        unpacked = {
            distribution_of(name) for name in pool.map(lambda wheel: unpack(wheel, site), checked.found.values())
        }
    # Read as the next job's reuse check will read them, so that what is made here is found there.
    present = runner.job.distributions(str(site))
    if unpacked != runner.distributions or present != runner.distributions:
        raise InstallError(f"the wheels unpacked {sorted(unpacked)}, not {sorted(runner.distributions)}")
    copy_sources(site, runner.job.sources)
    # The venv's interpreter is this very one, and every package in it was checked above: there is nothing
    # a trial start would add but a tenth of a second.
    if not Path(runner.job.python(str(made))).exists():
        raise InstallError(f"the venv {made} has no interpreter; check that {made.parent} is writable")
    say(f"unpacked {', '.join(sorted(f'{name} {version}' for name, version in unpacked))}")
    # No bytecode is compiled here: the install is writable, so the first import of each module writes its
    # bytecode there, and the install keeps it for every later job on the machine. Compiling at install would
    # compile all of site-packages (228 files, where a consume imports 110) in a fresh job that runs once:
    # measured, that job's set-up and first run took longer, not less.
    (made / STAMP).write_text(runner.job.stamp(runner.distributions))


def run(argv: Sequence[str], env: Mapping[str, str], job: Job | None) -> None:
    if sys.version_info < MINIMUM_PYTHON:
        raise InstallError(
            f"buildonce needs Python 3.10 or later, but python3 is {platform.python_version()}. "
            "Add actions/setup-python before this step."
        )
    if list(argv) not in ([], ["plan"]):
        raise InstallError(f"unknown arguments {list(argv)}; use 'plan' or none")
    if job is None or not env.get("RUNNER_TEMP"):
        raise InstallError("RUNNER_TEMP is not set; this script runs as a step of the buildonce action.")
    runner = Runner(job)
    if argv:
        plan(runner)
    else:
        install(runner)


def main(argv: Sequence[str], env: Mapping[str, str], job: Job | None) -> int:
    """install.py's slow path: the exit status."""
    try:
        run(argv, env, job)
    except InstallError as exc:
        # A workflow command ends at a line break: escape it, and '%', so that a message cannot add a command.
        message = str(exc).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        say(f"::error title=buildonce::{message}")
        return 1
    return 0
