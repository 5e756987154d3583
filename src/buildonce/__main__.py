"""Command line: read the inputs and the context once, call the planner or a job, hand results to the edge.

Subcommands import their heavy modules (the Docker SDK, the registry client) only when they run, so that
``buildonce plan`` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from buildonce import __version__
from buildonce.errors import FatalError, InputError
from buildonce.github.context import Context, load_context
from buildonce.github.workflow import Console, Inputs, RunnerFiles
from buildonce.options import BUILD_INPUTS, CONSUME_INPUTS, PLAN_INPUTS, VERIFY_INPUTS, plan_options
from buildonce.plan import describe, make_plan

KNOWN_INPUTS: dict[str, Mapping[str, str]] = {
    "plan": PLAN_INPUTS,
    "build": BUILD_INPUTS,
    "consume": CONSUME_INPUTS,
    "verify": VERIFY_INPUTS,
}


@dataclass
class Invocation:
    """Everything a subcommand gets: parsed flags, inputs, the environment and where to write."""

    args: argparse.Namespace
    inputs: Inputs
    env: Mapping[str, str]
    console: Console
    files: RunnerFiles

    def context(self, default_branch: str = "") -> Context:
        return load_context(
            self.env,
            event_path=Path(self.args.event) if self.args.event else None,
            event_name=self.args.event_name,
            default_branch=default_branch,
        )

    def finish(self, outputs: Mapping[str, str], summary: str = "") -> None:
        """Write every output at once, then the summary; only a successful run gets here."""
        self.files.write_outputs(outputs)
        if summary:
            self.files.write_summary(summary)
        if self.args.json:
            sys.stdout.write(json.dumps(dict(outputs), indent=2) + "\n")


def _parser() -> argparse.ArgumentParser:
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
    helps = {
        "plan": "compute tags, labels and decisions; touch nothing",
        "build": "build once, push with retry, verify the digest",
        "consume": "find, pull by digest and check this commit's image",
        "verify": "check that an image was built from a given commit",
    }
    for name, text in helps.items():
        commands.add_parser(
            name,
            parents=[common],
            help=text,
            description=f"buildonce {name}: {text}.",
            epilog=_inputs_epilog(KNOWN_INPUTS[name]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    return parser


def _inputs_epilog(defaults: Mapping[str, str]) -> str:
    width = max(len(name) for name in defaults)
    rows = [f"  {name:<{width}}  {value!r}" if value else f"  {name}" for name, value in defaults.items()]
    return "inputs (with defaults; described in README.md, 'Inputs and outputs'):\n" + "\n".join(rows)


def _check_input_names(command: str, flags: Sequence[str]) -> None:
    known = KNOWN_INPUTS[command]
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


def run_plan(call: Invocation) -> None:
    options = plan_options(call.inputs)
    context = call.context(options.default_branch)
    plan = make_plan(context, options, now=datetime.now(timezone.utc))
    call.console.info(describe(plan))
    for warning in plan.warnings():
        call.console.warning(warning)
    call.finish(plan.outputs())


def _job(command: str) -> Callable[[Invocation], None]:
    if command == "plan":
        return run_plan
    if command == "build":
        from buildonce.build import run_build

        return run_build
    if command == "consume":
        from buildonce.consume import run_consume

        return run_consume
    from buildonce.consume import run_verify

    return run_verify


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    environment = dict(os.environ if env is None else env)
    # With --json, stdout carries only the JSON; the readable log goes to stderr.
    console = Console(stream=(sys.stderr if args.json else (stdout or sys.stdout)))
    files = RunnerFiles.from_env(environment)
    try:
        inputs = Inputs.from_flags(environment, args.input)
        _mask_secrets(inputs, environment, console)
        _check_input_names(args.command, args.input)
        call = Invocation(args, inputs, environment, console, files)
        _job(args.command)(call)
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


if __name__ == "__main__":
    sys.exit(main())
