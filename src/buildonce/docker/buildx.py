"""The buildx driver: which builder runs, the ``docker buildx build`` argument list, and running it.

The command is always an argument list, never shell text, so no input can become a command. Secret
values reach buildx through the environment of its process only, never its argv.
"""

from __future__ import annotations

import enum
import json
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildonce.docker.config import plugin_dirs, recorded_driver
from buildonce.docker.spec import BuildSpec
from buildonce.errors import BuildError, EngineError, InputError
from buildonce.github.workflow import Console
from buildonce.references import Reference

if TYPE_CHECKING:
    from buildonce.plan import Plan

SECRET_ENV_PREFIX = "BUILDONCE_SECRET_"  # noqa: S105 - a variable name, not a secret


@dataclass(frozen=True)
class Builder:
    name: str
    driver: str
    buildkit: str

    @property
    def exports_to_engine(self) -> bool:
        """The docker driver builds straight into the engine's image store."""
        return self.driver == "docker"


def _docker(args: list[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=dict(env), timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise EngineError("the docker CLI is not installed on this runner; install Docker and buildx.") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"docker {' '.join(args)} did not answer within {timeout:.0f} s.") from None


def inspect_builder(name: str, env: Mapping[str, str]) -> Builder:
    result = _docker(["buildx", "inspect", *([name] if name else [])], env)
    if result.returncode != 0:
        text = (result.stderr or result.stdout).strip()
        if "is not a docker command" in text or "unknown command" in text:
            raise EngineError(
                "docker buildx is not installed. Add docker/setup-buildx-action before this step, "
                "or install the buildx plugin (scripts/dev-env up does it locally)."
            )
        if name and "no builder" in text:
            raise InputError(f"input 'builder': there is no builder named {name!r} ({text}).")
        raise EngineError(f"docker buildx inspect failed: {text}")
    fields: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return Builder(
        name=fields.get("Name", name or "default"),
        driver=fields.get("Driver", ""),
        buildkit=fields.get("BuildKit version", fields.get("BuildKit", "")),
    )


def find_builder(name: str, env: Mapping[str, str]) -> Builder:
    """The builder buildx will use: from its own files when they are plain, else from ``buildx inspect``."""
    recorded = recorded_driver(name, env)
    if recorded is not None:
        return Builder(name=recorded[0], driver=recorded[1], buildkit="")
    return inspect_builder(name, env)


def buildx_program(env: Mapping[str, str]) -> list[str]:
    """How to run buildx: the plugin binary the docker CLI would run for ``docker buildx``, run itself; else
    ``docker buildx``.

    ``docker buildx`` starts the CLI, which runs the plugin once for its metadata and then again for the
    command: some 40 ms on an idle machine and 60-100 ms on a busy one before buildx starts. Run on its own,
    the plugin reads the same Docker config, context and builders. It is looked for where the CLI looks, in
    the CLI's order, so that it is the very binary ``docker buildx`` would be.
    """
    for directory in plugin_dirs(env):
        plugin = directory / "docker-buildx"
        if plugin.is_file() and os.access(plugin, os.X_OK):
            return [str(plugin)]
    return ["docker", "buildx"]


class Output(enum.Enum):
    ENGINE = "engine"
    """Into the engine's image store (the docker driver), to be pushed by the engine."""
    LAYOUT = "layout"
    """Into an OCI image layout directory, to be pushed by buildonce's registry client."""


@dataclass(frozen=True)
class BuildCommand:
    argv: list[str]
    env: dict[str, str]
    """Variables added to buildx's environment: secret values, by generated names."""


def is_remote_context(context: str) -> bool:
    return "://" in context or context.startswith("git@")


def check_paths(options: BuildSpec, cwd: Path) -> None:
    """Fail early, naming the input, when the build context or Dockerfile is missing."""
    if is_remote_context(options.context):
        return
    context = cwd / options.context
    if not context.is_dir():
        raise InputError(
            f"input 'context': the directory {options.context!r} does not exist (looked in {cwd}). "
            "Give the path of the build context, relative to the working directory."
        )
    dockerfile = cwd / options.file if options.file else context / "Dockerfile"
    if not dockerfile.is_file():
        where = "input 'file'" if options.file else f"input 'file' is empty and {options.context!r}"
        raise InputError(f"{where}: there is no Dockerfile at {dockerfile}. Set 'file' to the Dockerfile's path.")
    for secret in options.secrets:
        if secret.src and not (cwd / secret.src).is_file():
            raise InputError(f"input 'secret-files': the file for secret {secret.id!r} does not exist.")


def build_command(
    options: BuildSpec,
    plan: Plan,
    *,
    output: Output,
    metadata_file: Path,
    iidfile: Path,
    layout_dir: Path | None = None,
    source_date_epoch: int | None = None,
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = ("docker", "buildx"),
) -> BuildCommand:
    """The argument list of the build; ``program`` runs buildx (``buildx_program``)."""
    build_args = list(options.build_args)
    if source_date_epoch is not None and not any(a.startswith("SOURCE_DATE_EPOCH=") for a in build_args):
        # BuildKit sets image timestamps from it, so a re-run of the same commit can give the same image.
        build_args.append(f"SOURCE_DATE_EPOCH={source_date_epoch}")
    secret_args, extra_env = _secret_args(options, env)
    argv = [
        *program,
        *("build", "--progress", "plain"),
        *_optional("--builder", options.builder),
        *_optional("--file", options.file),
        *_optional("--platform", ",".join(plan.platforms)),
        *_repeat("--build-arg", build_args),
        *_optional("--target", options.target),
        *_repeat("--tag", [str(ref) for ref in _local_names(plan, output)]),
        *_repeat("--label", [f"{key}={value}" for key, value in plan.labels.items()]),
        *_repeat("--annotation", plan.annotations),
        *_repeat("--cache-from", options.cache_from),
        *_repeat("--cache-to", options.cache_to),
        *_optional("--provenance", options.provenance),
        *_optional("--sbom", options.sbom),
        *secret_args,
        *(["--no-cache"] if options.no_cache else []),
        *(["--pull"] if options.pull else []),
        *_optional("--network", options.network),
        *("--metadata-file", str(metadata_file), "--iidfile", str(iidfile)),
        *_output_args(output, layout_dir),
        *("--", options.context),
    ]
    return BuildCommand(argv=argv, env=extra_env)


def _local_names(plan: Plan, output: Output) -> list[Reference]:
    """The names the build gives the image.

    Into the engine, only the immutable tag of each repository: no build of another commit uses that name.
    Two builds giving one name (``latest``) at the same moment fail inside the engine, and a name another
    build can re-point must never be what is pushed. The other names are added after the build, when the
    image is to be loaded; the registry gets them by manifest.
    """
    if output is Output.LAYOUT:
        return list(plan.references)
    return [ref for ref in plan.references if ref.tag == plan.immutable_tag]


def _optional(flag: str, value: str) -> list[str]:
    return [flag, value] if value else []


def _repeat(flag: str, values: Iterable[str]) -> list[str]:
    return [part for value in values for part in (flag, value)]


def _secret_args(options: BuildSpec, env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """``--secret`` flags; inline values go into variables of buildx's environment, named here."""
    args: list[str] = []
    extra_env: dict[str, str] = {}
    for index, secret in enumerate(options.secrets):
        if secret.src:
            args += ["--secret", f"id={secret.id},src={secret.src}"]
            continue
        name = secret.env or f"{SECRET_ENV_PREFIX}{index}"
        if secret.env and env is not None and secret.env not in env:
            raise InputError(
                f"input 'secret-envs': secret {secret.id!r} names the variable {secret.env}, which is not set. "
                "Set it in the step's env."
            )
        if not secret.env:
            extra_env[name] = secret.value
        args += ["--secret", f"id={secret.id},env={name}"]
    return args, extra_env


def _output_args(output: Output, layout_dir: Path | None) -> list[str]:
    if output is Output.ENGINE:
        return ["--load"]
    if layout_dir is None:
        raise ValueError("an OCI layout output needs a directory")
    return ["--output", f"type=oci,dest={layout_dir},tar=false"]


@dataclass(frozen=True)
class BuildOutcome:
    metadata: dict[str, Any]
    imageid: str
    seconds: float

    @property
    def digest(self) -> str:
        return str(self.metadata.get("containerimage.digest", ""))


class Stopper:
    """Stops a running build from another thread, e.g. when a check made beside it says not to build."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self.stopped = False

    def attach(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._process = process
            if self.stopped:
                process.terminate()

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()


def run_build(
    command: BuildCommand, env: Mapping[str, str], console: Console, cwd: Path, stopper: Stopper | None = None
) -> BuildOutcome | None:
    """Run buildx with its log streamed live; a failure is a BuildError, never retried.

    Returns None when ``stopper`` stopped the build: the caller knows why.
    """
    metadata_file = Path(command.argv[command.argv.index("--metadata-file") + 1])
    iidfile = Path(command.argv[command.argv.index("--iidfile") + 1])
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    with console.group("Build: docker buildx build"):
        try:
            process = subprocess.Popen(
                command.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env={**env, **command.env},
                cwd=cwd,
            )
        except FileNotFoundError:
            raise EngineError("the docker CLI is not installed on this runner; install Docker and buildx.") from None
        with process:
            if stopper is not None:
                stopper.attach(process)
            assert process.stdout is not None  # noqa: S101 - Popen with stdout=PIPE always has it
            for raw in process.stdout:
                if stopper is not None and stopper.stopped:
                    continue  # buildx's complaints about being stopped ("context canceled") would only mislead
                line = raw.rstrip("\n")
                tail.append(line)
                console.info(line)
            code = process.wait()
    seconds = time.monotonic() - started
    if stopper is not None and stopper.stopped:
        console.info("The build was stopped; the reason follows.")
        return None
    if code != 0:
        errors = [line for line in tail if "ERROR" in line or "error:" in line.lower()]
        reason = errors[-1].strip() if errors else (tail[-1].strip() if tail else "no output")
        hint = ""
        if 'image "' in reason and "already exists" in reason:
            hint = (
                " Another build on this engine gave its image the same name at the same moment, which the "
                "engine cannot do twice at once; run the job again."
            )
        raise BuildError(
            f"docker buildx build failed (exit {code}): {reason}. The full log is in the 'Build' group above. "
            f"Nothing was pushed.{hint}"
        )
    try:
        metadata: dict[str, Any] = json.loads(metadata_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BuildError(f"buildx wrote no readable metadata file ({exc}); is buildx older than 0.6?") from None
    imageid = iidfile.read_text().strip() if iidfile.is_file() else ""
    return BuildOutcome(metadata=metadata, imageid=imageid, seconds=seconds)
