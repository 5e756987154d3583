"""The command line's direct reading (the actions' own shape) agrees with argparse wherever it answers."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildonce.cli import Arguments, _parser, _plain, parse_arguments
from buildonce.commands import COMMANDS


def by_argparse(argv: list[str]) -> Arguments | None:
    try:
        parsed = _parser().parse_args(argv)
    except SystemExit:
        return None
    return Arguments(parsed.command, parsed.input, parsed.event, parsed.event_name, parsed.json)


WORDS = st.sampled_from(
    [
        *COMMANDS,
        "--input",
        "-i",
        "--inp",
        "--json",
        "--event",
        "--event-name",
        "--",
        "-",
        "-x=1",
        "--input=a=b",
        "name=value",
        "defer-artifact=false",
        "a=",
        "=b",
        "novalue",
        "x=--y",
        "x=-1",
        "-1",
        "build-args=A=1\nB=2",
        "",
    ]
)


@given(argv=st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=7))
def test_the_direct_reading_agrees_with_argparse_wherever_it_answers(argv: list[str]) -> None:
    plain = _plain(argv)
    if plain is not None:
        assert plain == by_argparse(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["consume"],
        ["build"],
        ["consume", "--input", "defer-artifact=false"],
        ["consume", "--input", "source=artifact", "--input", "defer-artifact=false", "--input", "artifact-path=/t.tar"],
        ["plan", "-i", "images=ghcr.io/acme/app", "--input", "tags=a\nb"],
    ],
)
def test_the_actions_command_lines_are_read_directly_as_argparse_reads_them(argv: list[str]) -> None:
    plain = _plain(argv)
    assert plain is not None
    assert plain == by_argparse(argv) == parse_arguments(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["consume", "--json"],
        ["consume", "--event", "e.json"],
        ["consume", "--input=a=b"],
        ["consume", "--input", "a=b", "--json"],
        ["consume", "--input", "-x=1"],
        ["consume", "--inp", "a=b"],
        ["consume", "--input"],
        ["nosuchcommand"],
        [],
    ],
)
def test_every_other_command_line_goes_to_argparse(argv: list[str]) -> None:
    assert _plain(argv) is None
    parsed = by_argparse(argv)
    if parsed is not None:
        assert parse_arguments(argv) == parsed
    else:
        with pytest.raises(SystemExit):
            parse_arguments(argv)


def test_a_plain_run_does_not_import_argparse() -> None:
    code = (
        "import sys; from buildonce.cli import parse_arguments; "
        "parse_arguments(['consume', '--input', 'defer-artifact=false']); "
        "print('argparse' in sys.modules); parse_arguments(['consume', '--json']); print('argparse' in sys.modules)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert shown.stdout.split() == ["False", "True"]
