"""Command line: parse the flags, read the inputs once, mask the secrets, run the command, report a failure.

The commands and their inputs are listed once, in ``buildonce.commands.COMMANDS``; each is imported only
when it runs, so that ``buildonce plan`` starts fast.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from buildonce import __version__
from buildonce.commands import COMMANDS, Invocation
from buildonce.docker.ahead import PullAhead
from buildonce.errors import FatalError, InputError
from buildonce.github.workflow import Console, Inputs, RunnerFiles

if TYPE_CHECKING:
    import argparse

INPUT_FLAGS = ("--input", "-i")


@dataclass(frozen=True)
class Arguments:
    """The command line, parsed: the command and its flags."""

    command: str
    input: list[str] = field(default_factory=list)
    event: str | None = None
    event_name: str | None = None
    json: bool = False


def parse_arguments(argv: Sequence[str] | None = None) -> Arguments:
    """The command line as the actions give it (a command, then ``--input NAME=VALUE`` pairs) read directly;
    anything else (help, the other flags, a mistake) by argparse, which is imported only then. Both readings
    agree wherever the direct one answers: a test holds them to it."""
    args = list(sys.argv[1:] if argv is None else argv)
    plain = _plain(args)
    if plain is not None:
        return plain
    parsed = _parser().parse_args(args)
    return Arguments(parsed.command, parsed.input, parsed.event, parsed.event_name, parsed.json)


def _plain(args: Sequence[str]) -> Arguments | None:
    """``COMMAND (--input|-i) NAME=VALUE ...``, each value with a name and not looking like a flag; else None."""
    if not args or args[0] not in COMMANDS or len(args) % 2 == 0:
        return None
    pairs = list(zip(args[1::2], args[2::2], strict=True))
    if any(flag not in INPUT_FLAGS or not _plain_value(value) for flag, value in pairs):
        return None
    return Arguments(args[0], [value for _, value in pairs])


def _plain_value(value: str) -> bool:
    return "=" in value and not value.startswith("-")


def _parser() -> argparse.ArgumentParser:
    import argparse  # ~15 ms with building the parser: only for the command lines the actions never write

    parser = argparse.ArgumentParser(
        prog="buildonce",
        description="Build a container image once per commit and let every downstream job use that image.",
    )
    parser.add_argument("--version", action="version", version=f"buildonce {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an input (as the action's 'with:' would); wins over INPUT_* variables",
    )
    common.add_argument("--event", metavar="FILE", help="event payload file (default: $GITHUB_EVENT_PATH)")
    common.add_argument("--event-name", metavar="NAME", help="event name (default: $GITHUB_EVENT_NAME)")
    common.add_argument("--json", action="store_true", help="print the outputs as one JSON object on stdout")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        commands.add_parser(
            command.name,
            parents=[common],
            help=command.help,
            description=f"buildonce {command.name}: {command.help}.",
            epilog=_inputs_epilog(command.inputs),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    return parser


def _inputs_epilog(defaults: Mapping[str, str]) -> str:
    width = max(len(name) for name in defaults)
    rows = [f"  {name:<{width}}  {value!r}" if value else f"  {name}" for name, value in defaults.items()]
    return "inputs (with defaults; described in README.md, 'Inputs and outputs'):\n" + "\n".join(rows)


def _check_input_names(command: str, flags: Sequence[str]) -> None:
    known = COMMANDS[command].inputs
    for flag in flags:
        name = flag.partition("=")[0].strip().lower().replace("_", "-")
        if name not in known:
            raise InputError(
                f"--input {name}: '{command}' has no such input. Known inputs: {', '.join(sorted(known))}."
            )


def _mask_secrets(inputs: Inputs, env: Mapping[str, str], console: Console) -> None:
    """Tell the runner every secret before anything else is printed: it only hides what it knows of first.

    That is the password, inline build secrets, and the values of the variables secret-envs points at.
    """
    password = inputs.raw("password")
    if password:
        console.mask(password.strip("\r\n"))
    for entry in inputs.lines("secrets"):
        _, _, value = entry.partition("=")
        if value:
            console.mask(value)
    for entry in inputs.lines("secret-envs"):
        _, _, name = entry.partition("=")
        if env.get(name.strip()):
            console.mask(env[name.strip()])


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    *,
    ahead: PullAhead | None = None,
    loaded: Callable[[], None] | None = None,
) -> int:
    """Run one command; ``ahead`` is the pull ``python -m buildonce`` started before the imports, if any, and
    ``loaded`` is called once the command's module is imported, before it runs."""
    args = parse_arguments(argv)
    environment = dict(os.environ if env is None else env)
    # With --json, stdout carries only the JSON; the readable log goes to stderr.
    console = Console(stream=(sys.stderr if args.json else (stdout or sys.stdout)))
    files = RunnerFiles.from_env(environment)
    try:
        inputs = Inputs.from_flags(environment, args.input)
        _mask_secrets(inputs, environment, console)
        _check_input_names(args.command, args.input)
        call = Invocation(
            inputs,
            environment,
            console,
            files,
            event_path=Path(args.event) if args.event else None,
            event_name=args.event_name,
            json=args.json,
            ahead=ahead,
        )
        command = COMMANDS[args.command].load()
        if loaded is not None:
            loaded()
        command(call)
    except FatalError as exc:
        console.error(str(exc), title=exc.title)
        # The job's summary page shows it too, where a reader looks first; the outputs stay unwritten.
        quoted = "\n".join(f"> {line}" for line in console.redact(str(exc)).splitlines())
        with contextlib.suppress(OSError):
            files.write_summary(f"### buildonce {args.command} failed: {exc.title}\n\n{quoted}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        console.error("interrupted", title="buildonce")
        return 130
    return 0


def skip_last_collections() -> None:
    """At exit the interpreter's last garbage collections walk every object the run made (the Docker SDK's,
    the registry client's), tens of milliseconds for memory the process gives back whole anyway; frozen,
    those objects are left alone. Only for the process itself: ``main`` called in-process changes nothing."""
    atexit.register(gc.freeze)
