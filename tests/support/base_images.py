"""Local stand-ins for the Dockerfile's base images, made without pulling anything from a registry.

The Dockerfile pins ``python:3.12-slim`` and ``docker:*-cli`` by digest, and both can be swapped with a
build-arg. Here the Python base is a Debian root made with ``debootstrap`` from the system's own Debian
mirror, and the docker CLI image holds the host's docker CLI and buildx plugin at the paths the official
image keeps them. Both are imported into the engine under ``buildonce-test/`` names and kept there, so only
the first run on a machine pays for them.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

PYTHON_BASE = "buildonce-test/python-base:bookworm"
BUSYBOX_IMAGE = "buildonce-test/busybox:1"
DOCKER_CLI_REPOSITORY = "buildonce-test/docker-cli"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Where the official docker:*-cli images keep the binaries, and so where the Dockerfile copies them from.
DOCKER_CLI_PATH = "usr/local/bin/docker"
BUILDX_PLUGIN_PATH = "usr/local/libexec/docker/cli-plugins/docker-buildx"

# Left out of the imported root: apt's downloads and lists, and documentation. The image stays a working
# Debian system (apt-get update brings the lists back), at half the size.
_EXCLUDED = (
    "./var/cache/apt/archives/*.deb",
    "./var/cache/apt/*.bin",
    "./var/lib/apt/lists/*",
    "./usr/share/doc/*",
    "./usr/share/locale/*",
    "./usr/share/man/*",
    "./usr/share/info/*",
)

_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


# The commands Dockerfiles in the tests and benchmarks run, as links to Debian's busybox-static.
_BUSYBOX_APPLETS = ("sh", "echo", "cat", "date", "sleep", "head", "dd", "ls", "mkdir", "touch", "test", "[", "true")


class MissingToolError(RuntimeError):
    """A tool needed to make a base image is not installed (scripts/dev-env up installs them)."""


def image_exists(name: str) -> bool:
    result = subprocess.run(["docker", "image", "inspect", name], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive the system already uses: the first non-security URI of its apt sources."""
    uris: list[str] = []
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        uris += [line.split()[1] for line in path.read_text().splitlines() if line.startswith("URIs:")]
    one_line = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            for line in path.read_text().splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[0] == "deb":
                    # Options such as [signed-by=...] come before the URI.
                    uris += [field for field in fields[1:] if "://" in field][:1]
    for uri in uris:
        if "debian" in uri and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


@contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """Serialize image making between test sessions on one machine; the engine is shared."""
    path = Path(tempfile.gettempdir()) / f"buildonce-test-{name}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return [fields[1] for fields in (line.split() for line in mounts) if fields[1].startswith(prefix)]


def _import(tar_argv: list[str], name: str) -> None:
    with subprocess.Popen(tar_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tar:
        result = subprocess.run(
            ["docker", "import", "-", name], stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar_error = tar.stderr.read().decode() if tar.stderr else ""
        tar.wait(timeout=60)
    if tar.returncode != 0 or result.returncode != 0:
        raise RuntimeError(f"importing {name} failed: {tar_error.strip()} {result.stderr.strip()}")


def busybox_rootfs(
    applets: Sequence[str] = _BUSYBOX_APPLETS,
    directories: Sequence[tuple[str, int]] = (("tmp", 0o1777), ("dev", 0o755)),
    busybox: str | None = None,
) -> bytes:
    """A root file system as a tar: Debian's busybox-static with ``applets`` linked to it, and ``directories``.

    ``busybox`` is the binary to use (another architecture's, for a base of that platform); default the host's.
    """
    busybox = busybox or shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).is_file():
        raise MissingToolError("busybox-static is not installed; scripts/dev-env up installs it")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(busybox, arcname="bin/busybox")
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(link)
        for directory, mode in directories:
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, mode
            archive.addfile(entry)
    return buffer.getvalue()


def busybox_image(name: str = BUSYBOX_IMAGE) -> bool:
    """A base image with a shell for RUN steps, from Debian's busybox-static; True if it was made now."""
    if image_exists(name):
        return False
    subprocess.run(["docker", "import", "-", name], input=busybox_rootfs(), capture_output=True, check=True)
    return True


def python_base(name: str = PYTHON_BASE, *, mirror: str | None = None) -> str:
    """A Debian root with python3 and python3-venv as an image; made once per engine, then reused."""
    if image_exists(name):
        return name
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise MissingToolError("debootstrap is not installed; scripts/dev-env up installs it")
    if os.geteuid() != 0:
        raise MissingToolError("debootstrap needs root to make the Python base image")
    with _machine_lock("python-base"):
        if image_exists(name):
            return name
        workdir = Path(tempfile.mkdtemp(prefix="buildonce-debootstrap-"))
        root = workdir / "root"
        try:
            result = subprocess.run(
                [
                    debootstrap,
                    "--variant=minbase",
                    "--include=python3,python3-venv",
                    SUITE,
                    str(root),
                    mirror or debian_mirror(),
                ],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if result.returncode != 0:
                log = root / "debootstrap" / "debootstrap.log"
                detail = log.read_text()[-3000:] if log.is_file() else result.stderr[-3000:]
                raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{detail}")
            excludes = [f"--exclude={pattern}" for pattern in _EXCLUDED]
            _import(["tar", "--numeric-owner", *excludes, "-C", str(root), "-c", "."], name)
        finally:
            # debootstrap mounts /proc and /sys inside the root while it works; never delete through a mount.
            if not _mounts_under(workdir):
                shutil.rmtree(workdir, ignore_errors=True)
    return name


def buildx_plugin() -> Path:
    """The buildx binary the docker CLI runs, symlinks resolved."""
    result = subprocess.run(
        ["docker", "info", "--format", "{{json .ClientInfo.Plugins}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    candidates: list[Path] = []
    if result.returncode == 0 and result.stdout.strip() not in ("", "null"):
        plugins = json.loads(result.stdout)
        candidates += [Path(plugin["Path"]) for plugin in plugins if plugin.get("Name") == "buildx"]
    candidates += [Path(directory) / "docker-buildx" for directory in _PLUGIN_DIRS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise MissingToolError("the docker buildx plugin is not installed; scripts/dev-env up installs it")


def docker_cli_image() -> str:
    """An image holding the host's docker CLI and buildx plugin where docker:*-cli keeps them.

    The tag names the binaries (path, size, modification time), so a new CLI or plugin gets a new image.
    """
    found = shutil.which("docker")
    if found is None:
        raise MissingToolError("the docker CLI is not installed; scripts/dev-env up installs it")
    files = {DOCKER_CLI_PATH: Path(found).resolve(), BUILDX_PLUGIN_PATH: buildx_plugin()}
    fingerprint = hashlib.sha256()
    for target, source in sorted(files.items()):
        stat = source.stat()
        fingerprint.update(f"{target}={source}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    name = f"{DOCKER_CLI_REPOSITORY}:{fingerprint.hexdigest()[:12]}"
    if image_exists(name):
        return name
    with _machine_lock("docker-cli"):
        if image_exists(name):
            return name
        with subprocess.Popen(
            ["docker", "import", "-", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            assert process.stdin is not None
            directories = sorted({str(parent) for target in files for parent in Path(target).parents} - {"."})
            with tarfile.open(fileobj=process.stdin, mode="w|") as archive:
                for directory in directories:
                    entry = tarfile.TarInfo(directory)
                    entry.type, entry.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(entry)
                for target, source in sorted(files.items()):
                    archive.add(str(source), arcname=target)
            process.stdin.close()
            error = process.stderr.read().decode() if process.stderr else ""
            process.wait(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"importing {name} failed: {error.strip()}")
    return name
