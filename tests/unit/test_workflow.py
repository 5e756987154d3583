from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from runner_format import commands, parse_outputs

from buildonce.errors import InputError
from buildonce.github.workflow import Console, Inputs, RunnerFiles, format_outputs


def test_inputs_hyphen_and_underscore_spellings_and_flags_win() -> None:
    env = {"INPUT_BUILD-ARGS": "A=1", "INPUT_CACHE_FROM": "type=gha", "INPUT_PUSH": "true"}
    inputs = Inputs.from_flags(env, ["push=false"])
    assert inputs.get("build-args") == "A=1"
    assert inputs.get("cache-from") == "type=gha"
    assert inputs.get("push") == "false"
    assert inputs.get("missing", "dflt") == "dflt"


def test_a_step_s_underscore_spelling_wins_over_the_runner_s_hyphen_one() -> None:
    # act sets INPUT_ARTIFACT-PATH in a composite's steps to the caller's (empty) input; the step's own
    # env (or a script that exports the underscore spelling) is what the action means.
    env = {"INPUT_ARTIFACT-PATH": "", "INPUT_ARTIFACT_PATH": "/tmp/image.tar", "INPUT_SHA-LENGTH": "12"}
    inputs = Inputs(env)
    assert inputs.get("artifact-path") == "/tmp/image.tar"
    assert inputs.get("sha-length") == "12"
    # Set but empty still counts: the step said "empty", whatever the runner holds.
    assert Inputs({"INPUT_TAG-PREFIX": "x-", "INPUT_TAG_PREFIX": ""}).get("tag-prefix") == ""


def test_a_flag_wins_over_both_spellings() -> None:
    env = {"INPUT_ARTIFACT-PATH": "/a.tar", "INPUT_ARTIFACT_PATH": "/b.tar"}
    assert Inputs.from_flags(env, ["artifact-path=/c.tar"]).get("artifact-path") == "/c.tar"


def test_list_inputs() -> None:
    inputs = Inputs({}, {"tags": "a, b\nc\n\n# comment\n", "build-args": "X=1,2\nY=3"})
    assert inputs.items("tags") == ["a", "b", "c"]
    assert inputs.lines("build-args") == ["X=1,2", "Y=3"]


def test_bad_flag() -> None:
    with pytest.raises(InputError, match="name=value"):
        Inputs.from_flags({}, ["nonsense"])


def test_error_escapes_percent_cr_lf() -> None:
    out = io.StringIO()
    Console(out).error("50% done\r\nnext line", title="T")
    assert out.getvalue() == "::error title=T::50%25 done%0D%0Anext line\n"


def test_mask_each_line_of_a_multiline_secret_once() -> None:
    out = io.StringIO()
    console = Console(out)
    console.mask("line-one\nline-two")
    console.mask("line-one")
    masks = commands(out.getvalue(), "add-mask")
    assert sorted(masks) == sorted(["line-one\nline-two", "line-one", "line-two"])


def test_group() -> None:
    out = io.StringIO()
    with Console(out).group("Build"):
        out.write("inside\n")
    assert out.getvalue() == "::group::Build\ninside\n::endgroup::\n"


def test_outputs_round_trip_through_the_runner_format(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("earlier=value\n")
    values = {
        "digest": "sha256:" + "a" * 64,
        "tags": "a:1\nb:2",
        "json": '{"x": "y"}',
        "tricky": "EOF\nghadelimiter_0000\nname=injected\nfoo<<BAR\n",
        "empty": "",
    }
    RunnerFiles(output=path, summary=None).write_outputs(values)
    parsed = parse_outputs(path.read_text())
    assert parsed == {"earlier": "value", **values}


@given(st.dictionaries(st.from_regex(r"[a-z][a-z-]{0,20}", fullmatch=True), st.text()))
def test_any_values_round_trip(values: dict[str, str]) -> None:
    assert parse_outputs(format_outputs(values)) == values


def test_no_runner_files_outside_actions(tmp_path: Path) -> None:
    files = RunnerFiles.from_env({})
    files.write_outputs({"a": "b"})
    files.write_summary("# x")
    assert files.output is None


def test_redact_hides_masked_values_longest_first() -> None:
    console = Console(stream=io.StringIO())
    console.mask("abc")
    console.mask("abcdef")
    assert console.redact("x abcdef y abc z") == "x *** y *** z"
