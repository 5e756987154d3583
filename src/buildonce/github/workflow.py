"""The one adapter between buildonce and the GitHub Actions runner.

Inputs, outputs, the step summary, masks, groups and annotations all go through here; no other module
prints a workflow command or touches ``GITHUB_OUTPUT``. Workflow commands are formatted (and escaped) by
actions-toolkit's ``command`` module, never ``actions_toolkit.core``: that one imports ``requests`` through
its OIDC client, which would cost a plan about 100 ms of start-up for nothing. Its ``file_command`` is not
used either: it raises a bare Exception on a delimiter clash and pulls in ``uuid`` (and ``platform``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from actions_toolkit.command import Command

from buildonce.errors import FatalError, InputError

_INPUT_NAME = re.compile(r"[a-z][a-z0-9-]*")
# C0 and C1 controls (line breaks, tab, escape, NUL, DEL), the Unicode line and paragraph separators, and
# unpaired surrogates (JSON can spell them; UTF-8 cannot write them).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_LINE_BREAKS = "\r\n\x0b\x0c\x85\u2028\u2029"


def check_text(value: str, where: str, *, error: type[FatalError] = InputError, hint: str = "") -> str:
    """``value`` unchanged if it is printable text on one line; else one error naming ``where``.

    Every value from an input or the event payload goes through here before it can reach a log line, an
    output, a label or a buildx argument: a line break there starts a workflow command or another output
    line, an escape rewrites the log, a NUL cannot be passed to a process at all. The value itself is not
    shown, since it may be a secret.
    """
    match = _CONTROL.search(value)
    if match is None:
        return value
    char = match.group()
    kind = (
        "a line break"
        if char in _LINE_BREAKS
        else "an unpaired surrogate"
        if "\ud800" <= char <= "\udfff"
        else "a control character"
    )
    raise error(
        f"{where} holds {kind} (U+{ord(char):04X}) at position {match.start() + 1}; "
        + (hint or "remove it: every value must be printable text on one line.")
    )


def fold_text(value: str) -> str:
    """Free text (a repository's description) on one line: every control character and run of spaces
    becomes one space. Only for prose that is shown, never for a name, a tag or a key."""
    return " ".join(_CONTROL.sub(" ", value).split())


class Inputs:
    """Action inputs as the runner passes them, with ``--input name=value`` flags taking precedence.

    Three sources, strongest first:

    - ``--input`` flags: what a script of the action means to override (the downloaded tar as
      artifact-path, source artifact for the fallback step) wins whatever the environment holds.
    - The underscore spelling (``INPUT_BUILD_ARGS``): what a step's ``env:`` sets. action.yml and
      consume/action.yml hand every input to buildonce this way, and so can other CI systems and shells.
    - The hyphen spelling (``INPUT_BUILD-ARGS``): what a runner sets for an action's own inputs. GitHub's
      runner does not set it in the steps of a composite action, but act does, to the composite's inputs
      as the caller gave them (nektos/act#2874): it must never win over what the step set on purpose.
    """

    def __init__(self, env: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> None:
        self._env = env
        self._overrides = dict(overrides or {})

    @classmethod
    def from_flags(cls, env: Mapping[str, str], flags: list[str]) -> Inputs:
        overrides: dict[str, str] = {}
        for flag in flags:
            name, sep, value = flag.partition("=")
            name = name.strip().lower().replace("_", "-")
            if not sep or not _INPUT_NAME.fullmatch(name):
                raise InputError(
                    f"--input {flag!r} is not of the form name=value. "
                    "Write it as --input build-args=FOO=bar (the first '=' ends the name)."
                )
            overrides[name] = value
        return cls(env, overrides)

    def raw(self, name: str) -> str | None:
        if name in self._overrides:
            return self._overrides[name]
        upper = name.upper()
        for key in (f"INPUT_{upper.replace('-', '_')}", f"INPUT_{upper}"):
            if key in self._env:
                return self._env[key]
        return None

    def get(self, name: str, default: str = "") -> str:
        """The trimmed value, or ``default`` when the input is unset or blank; one line of text."""
        value = (self.raw(name) or "").strip()
        return check_text(value, f"input '{name}'") or default

    def lines(self, name: str) -> list[str]:
        """A newline-separated list, for values that may hold commas (build-args, cache-to, labels)."""
        return _split(name, self.raw(name) or "", commas=False)

    def items(self, name: str) -> list[str]:
        """A list separated by newlines or commas (images, tags, platforms)."""
        return _split(name, self.raw(name) or "", commas=True)


def _split(name: str, value: str, *, commas: bool) -> list[str]:
    parts = re.split(r"[\r\n,]" if commas else r"[\r\n]", value)
    entries = [part.strip() for part in parts if part.strip() and not part.strip().startswith("#")]
    for number, entry in enumerate(entries, 1):
        check_text(entry, f"input '{name}' (entry {number})")
    return entries


def _command(name: str, message: str, **properties: str) -> str:
    props = {key: value for key, value in properties.items() if value}
    return str(Command(name, props, message))


@dataclass
class Console:
    """Log lines and workflow commands for the step log.

    ``mask`` must be called for every secret before anything else is printed: the runner only hides
    what it was told about before the secret first appears.
    """

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    _masked: set[str] = field(default_factory=set)

    def _emit(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def mask(self, secret: str) -> None:
        # The runner matches masks line by line, so a multi-line secret is masked one line at a time.
        for line in {secret, *secret.splitlines()}:
            if line.strip() and line not in self._masked:
                self._masked.add(line)
                self._emit(_command("add-mask", line))

    def redact(self, text: str) -> str:
        """``text`` with every masked value hidden, for files the runner does not mask (the step summary)."""
        for secret in sorted(self._masked, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def info(self, message: str) -> None:
        self._emit(message)

    def notice(self, message: str, title: str = "") -> None:
        self._emit(_command("notice", message, title=title))

    def warning(self, message: str, title: str = "") -> None:
        self._emit(_command("warning", message, title=title))

    def error(self, message: str, title: str = "") -> None:
        self._emit(_command("error", message, title=title))

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        self._emit(_command("group", title))
        try:
            yield
        finally:
            self._emit(_command("endgroup", ""))


def format_outputs(outputs: Mapping[str, str]) -> str:
    """Render outputs in the runner's file-command format, each value in its own random heredoc.

    A random delimiter per value means no payload text (a description, a branch name) can end a value
    early and inject an output of its own, whatever it contains.
    """
    return "".join(_heredoc(name, value) for name, value in outputs.items())


def _heredoc(name: str, value: str) -> str:
    delimiter = f"ghadelimiter_{os.urandom(16).hex()}"
    while delimiter in value:  # 128 random bits: never, but the format must hold whatever the value
        delimiter = f"ghadelimiter_{os.urandom(16).hex()}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


@dataclass(frozen=True)
class RunnerFiles:
    """The runner's file commands; ``None`` when running outside Actions."""

    output: Path | None
    summary: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunnerFiles:
        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value) if value else None

        return cls(output=path("GITHUB_OUTPUT"), summary=path("GITHUB_STEP_SUMMARY"))

    def write_outputs(self, outputs: Mapping[str, str]) -> None:
        """Append every output in one write, at the end of a successful run, or nothing at all."""
        if self.output is None:
            return
        text = format_outputs(outputs)
        with self.output.open("a", encoding="utf-8", newline="") as handle:
            handle.write(text)

    def write_summary(self, markdown: str) -> None:
        if self.summary is None:
            return
        with self.summary.open("a", encoding="utf-8") as handle:
            handle.write(markdown.rstrip("\n") + "\n")
