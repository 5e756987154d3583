"""The subcommands: what each gets (``Invocation``) and the one table of them (name, help, inputs, entry).

An entry is named as ``module:function`` and imported only when its command runs, so that ``buildonce plan``
never loads the Docker SDK or the registry client.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from buildonce.github.workflow import Console, Inputs, RunnerFiles
from buildonce.options import (
    BUILD_INPUTS,
    CONSUME_INPUTS,
    MERGE_INPUTS,
    PLAN_COMMAND_INPUTS,
    PRUNE_INPUTS,
    VERIFY_INPUTS,
)

if TYPE_CHECKING:
    from buildonce.docker.ahead import PullAhead
    from buildonce.github.context import Context


@dataclass
class Invocation:
    """Everything a subcommand gets: inputs, the environment, the event named by flags, and where to write."""

    inputs: Inputs
    env: Mapping[str, str]
    console: Console
    files: RunnerFiles
    event_path: Path | None = None
    """``--event``; ``None`` means ``$GITHUB_EVENT_PATH``."""
    event_name: str | None = None
    """``--event-name``; ``None`` means ``$GITHUB_EVENT_NAME``."""
    json: bool = False
    """``--json``: print the outputs as one JSON object on stdout too."""
    ahead: PullAhead | None = None
    """A pull started before the imports (consume of a digest given), for the command to take or stop."""

    def context(self, default_branch: str = "") -> Context:
        from buildonce.github.context import load_context  # the event is read only by the commands that need it

        return load_context(
            self.env, event_path=self.event_path, event_name=self.event_name, default_branch=default_branch
        )

    @property
    def has_event(self) -> bool:
        """Whether an event payload was named, by flag or by the runner."""
        return bool(self.event_path or self.env.get("GITHUB_EVENT_PATH"))

    def finish(self, outputs: Mapping[str, str], summary: str = "") -> None:
        """Write every output at once, then the summary; only a successful run gets here."""
        self.files.write_outputs(outputs)
        if summary:
            self.files.write_summary(summary)
        if self.json:
            sys.stdout.write(json.dumps(dict(outputs), indent=2) + "\n")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    inputs: Mapping[str, str]
    """Every input the command takes, with its default."""
    entry: str
    """``module:function`` of the function that runs it, imported when it runs."""

    def load(self) -> Callable[[Invocation], None]:
        module, _, function = self.entry.partition(":")
        run: Callable[[Invocation], None] = getattr(importlib.import_module(module), function)
        return run


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command(
            "plan",
            "compute tags, labels, decisions and the legs' matrix; touch nothing",
            PLAN_COMMAND_INPUTS,
            "buildonce.commands.plan:run",
        ),
        Command(
            "build", "build once, push with retry, verify the digest", BUILD_INPUTS, "buildonce.commands.build:run"
        ),
        Command(
            "consume",
            "find, pull by digest and check this commit's image",
            CONSUME_INPUTS,
            "buildonce.commands.consume:run",
        ),
        Command(
            "verify",
            "check that an image was built from a given commit",
            VERIFY_INPUTS,
            "buildonce.commands.verify:run",
        ),
        Command(
            "merge",
            "publish the legs' per-platform images as one index, by digest",
            MERGE_INPUTS,
            "buildonce.commands.merge:run",
        ),
        Command(
            "prune",
            "remove the transient images buildonce pushed (a dry run unless apply)",
            PRUNE_INPUTS,
            "buildonce.commands.prune:run",
        ),
    )
}
