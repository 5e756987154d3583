"""Property tests: whatever the inputs and the event hold, buildonce ends in one clean error or a clean plan.

The only exception that may leave the context reader and the input parsers is a ``FatalError`` (which the
command line turns into one ``::error::`` line and exit 1); and a plan that is made carries no control
character into a log line, an output or a buildx argument.
"""

from __future__ import annotations

import copy
import io
import json
import re
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from events import EVENT_NAMES, FIXTURES, payload, runner_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runner_format import commands

from buildonce.cli import main
from buildonce.consume_options import consume_options, verify_options
from buildonce.errors import FatalError
from buildonce.github.context import SUPPORTED_EVENTS, build_context, read_payload
from buildonce.github.workflow import Inputs
from buildonce.options import (
    BUILD_INPUTS,
    CONSUME_INPUTS,
    VERIFY_INPUTS,
    build_options,
    plan_options,
)
from buildonce.plan import Plan, describe, make_plan
from buildonce.tags import subject_of

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
SHA = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
# Text that is hard to handle: control characters, line breaks, other scripts' digits, lone surrogates.
NASTY = st.text(
    alphabet=st.sampled_from(
        list("abc-_./:=#@ 0123456789\u00b2\u0663\u0661\n\r\t\x00\x1b\x85\u2028\ud800\u00e9\u65e5")
    ),
    max_size=30,
)
WORDS = st.sampled_from(
    [
        "",
        "main",
        "refs/heads/main",
        "refs/heads/feature/x",
        "refs/tags/v1.2.3",
        "refs/tags/sha-0123abc",
        "refs/pull/1/merge",
        "v1.2.3",
        "acme/widget",
        "stranger/widget",
        "dependabot[bot]",
        "pull_request",
        "pull_request_target",
        "push",
        "schedule",
        "merge_group",
        "release",
        "workflow_dispatch",
        "2026-03-04T09:20:30Z",
        "0001-01-01T00:00:00+05:00",
        "0" * 40,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    NASTY,
    WORDS,
    SHA,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)

# Every field the context reader looks at, by its path in the payload.
FIELDS = [
    ("ref",),
    ("after",),
    ("deleted",),
    ("number",),
    ("head_commit",),
    ("head_commit", "timestamp"),
    ("repository",),
    ("repository", "full_name"),
    ("repository", "html_url"),
    ("repository", "description"),
    ("repository", "license"),
    ("repository", "license", "spdx_id"),
    ("repository", "default_branch"),
    ("repository", "master_branch"),
    ("sender",),
    ("sender", "login"),
    ("pull_request",),
    ("pull_request", "number"),
    ("pull_request", "merge_commit_sha"),
    ("pull_request", "user", "login"),
    ("pull_request", "head"),
    ("pull_request", "head", "sha"),
    ("pull_request", "head", "ref"),
    ("pull_request", "head", "repo"),
    ("pull_request", "head", "repo", "full_name"),
    ("pull_request", "base", "ref"),
    ("workflow_run",),
    ("workflow_run", "id"),
    ("workflow_run", "event"),
    ("workflow_run", "head_sha"),
    ("workflow_run", "head_branch"),
    ("workflow_run", "head_repository"),
    ("workflow_run", "head_repository", "full_name"),
    ("workflow_run", "pull_requests"),
    ("workflow_run", "actor", "login"),
    ("workflow_run", "triggering_actor"),
    ("workflow_run", "head_commit", "timestamp"),
    ("merge_group",),
    ("merge_group", "head_ref"),
    ("merge_group", "head_sha"),
    ("merge_group", "head_commit", "timestamp"),
    ("release",),
    ("release", "tag_name"),
]
ENV_NAMES = [
    "GITHUB_REF",
    "GITHUB_SHA",
    "GITHUB_REPOSITORY",
    "GITHUB_SERVER_URL",
    "GITHUB_RUN_ID",
    "GITHUB_ACTOR",
    "SOURCE_DATE_EPOCH",
]
PR_ENTRIES = st.lists(
    st.one_of(
        JSON,
        st.fixed_dictionaries({"number": JSON, "head": st.fixed_dictionaries({"sha": st.one_of(SHA, JSON)})}),
    ),
    max_size=3,
)


PAYLOADS = {name: payload(name) for name in EVENT_NAMES}
RUNNER_ENVS = {name: runner_env(name) for name in EVENT_NAMES}


def _set(data: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    node: Any = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


@st.composite
def events(draw: st.DrawFn, field: tuple[str, ...] | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """A fixture's environment and payload, with fields (``field``, and maybe others) replaced by anything
    JSON can hold."""
    # A field of one event's object is tried mostly on a payload of that event, where it is read.
    fixtures = sorted(EVENT_NAMES)
    if field and field[0] in ("pull_request", "workflow_run", "merge_group", "release"):
        fixtures = [name for name in fixtures if EVENT_NAMES[name].startswith(field[0])]
    fixture = draw(st.sampled_from(fixtures))
    env = dict(RUNNER_ENVS[fixture])
    env["GITHUB_EVENT_NAME"] = draw(st.sampled_from([EVENT_NAMES[fixture]] * 8 + list(SUPPORTED_EVENTS)))
    data = copy.deepcopy(PAYLOADS[fixture])
    paths = draw(st.lists(st.sampled_from(FIELDS), max_size=3))
    for path in [*([field] if field else []), *paths]:
        value = draw(st.one_of(PR_ENTRIES, JSON) if path[-1] == "pull_requests" else JSON)
        _set(data, path, value)
    for name in draw(st.lists(st.sampled_from(ENV_NAMES), max_size=2)):
        env[name] = draw(st.one_of(NASTY, WORDS, SHA, st.text(max_size=20)))
    return env, data


def assert_clean(plan: Plan) -> None:
    """No output line, log line, label or buildx argument of the plan holds a control character."""
    for name, value in plan.outputs().items():
        for line in value.split("\n"):
            assert not CONTROL.search(line), (name, line)
    for line in describe(plan).split("\n"):
        assert not CONTROL.search(line), line
    for line in plan.warnings():
        assert not CONTROL.search(line), line
    for key, value in plan.labels.items():
        assert not CONTROL.search(key + value), key
        assert "=" not in key
    for entry in plan.annotations:
        assert not CONTROL.search(entry)


def only_fatal(call: Callable[[], object]) -> object | None:
    """What ``call`` returns, or None when it raised a FatalError with a one-line message; anything else
    it raises fails the test."""
    message = ""
    try:
        return call()
    except FatalError as exc:
        message = str(exc)
    assert message.strip()
    assert "\n" not in message
    return None


def check_event(env: dict[str, str], data: dict[str, Any]) -> None:
    context = only_fatal(lambda: build_context(env, data))
    if context is None:
        return
    only_fatal(lambda: subject_of(context))  # type: ignore[arg-type]
    plan = only_fatal(
        lambda: make_plan(context, plan_options(Inputs({}, {"images": "ghcr.io/acme/widget"})), now=NOW)  # type: ignore[arg-type]
    )
    if isinstance(plan, Plan):
        assert_clean(plan)


@pytest.mark.parametrize("field", FIELDS, ids=".".join)
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_context_reader_raises_nothing_but_a_clean_error(field: tuple[str, ...], data: st.DataObject) -> None:
    check_event(*data.draw(events(field)))


# A value of every JSON type, and the awkward ones of each: each is tried in every field of every fixture that
# reads it, so a field read without checking its type cannot go unnoticed by chance.
WRONG_TYPES: list[object] = [
    None,
    True,
    False,
    0,
    5,
    -1,
    1.5,
    10**30,
    "",
    "x",
    "\u00b2",
    "a\nb",
    "\ud800",
    [],
    [1],
    ["x"],
    [{"number": "7"}],
    {},
    {"a": 1},
    {"sha": 5, "number": True, "login": []},
    [[[[[[[[[[[]]]]]]]]]]],
]


@pytest.mark.parametrize("field", FIELDS, ids=".".join)
def test_every_field_of_every_type(field: tuple[str, ...]) -> None:
    fixtures = sorted(EVENT_NAMES)
    if field[0] in ("pull_request", "workflow_run", "merge_group", "release"):
        fixtures = [name for name in fixtures if EVENT_NAMES[name].startswith(field[0])]
    for fixture in fixtures:
        for value in WRONG_TYPES:
            data = copy.deepcopy(PAYLOADS[fixture])
            _set(data, field, value)
            check_event(dict(RUNNER_ENVS[fixture]), data)


@pytest.mark.parametrize("name", ENV_NAMES)
@settings(max_examples=60)
@given(event=events(), value=st.one_of(NASTY, WORDS, SHA, st.text(max_size=30)))
def test_the_runners_variables_are_read_as_carefully(
    name: str, event: tuple[dict[str, str], dict[str, Any]], value: str
) -> None:
    env, data = event
    check_event({**env, name: value}, data)


@settings(max_examples=200)
@given(data=JSON, name=st.sampled_from(SUPPORTED_EVENTS))
def test_any_json_at_all_as_the_payload(data: object, name: str) -> None:
    env = {"GITHUB_EVENT_NAME": name, "GITHUB_REPOSITORY": "acme/widget"}
    only_fatal(lambda: build_context(env, data if isinstance(data, dict) else {"x": data}))


@settings(max_examples=100)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_event_file_reads_or_fails_cleanly(text: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "event.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        only_fatal(lambda: read_payload(path))


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "1" * 5000, '{"n": ' + "9" * 5000 + "}"])
def test_deep_or_huge_json_is_one_clean_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(text)
    with pytest.raises(FatalError, match=str(path)):
        read_payload(path)
    with pytest.raises(FatalError, match="'metadata-json'"):
        plan_options(Inputs({}, {"images": "a/b", "metadata-json": text}))


# Numbers as int() and float() would read them but an input must not: other scripts' digits, '_', signs.
NUMERIC = st.text(
    alphabet=st.sampled_from(list("0123456789\u00b2\u00b3\u00b9\u0661\u0662\u0663\u06f4\u0966_.-+e ")),
    min_size=1,
    max_size=6,
)
INPUT_VALUES = st.one_of(
    NUMERIC,
    NASTY,
    st.text(max_size=40),
    st.sampled_from(
        ["true", "false", "auto", "7", "40", "\u00b2", "\u0663", "1_0", " 7", "1e3", "nan", "inf", "-1", ".5"]
    ),
    st.sampled_from(["a=b", "A=1\nB=2", "SOURCE_DATE_EPOCH=²", "SOURCE_DATE_EPOCH=" + "9" * 30, "x=\x1b[2J"]),
    st.sampled_from(["manifest:a=b", "index:=x", "a b=c", "ghcr.io/a/b:t", "ghcr.io/a/b", "linux/amd64"]),
    JSON.map(json.dumps),
)


def inputs_for(names: Mapping[str, str]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(sorted(names)), INPUT_VALUES, max_size=6)


PARSERS: dict[str, tuple[Mapping[str, str], Callable[[Inputs], object]]] = {
    "build": (BUILD_INPUTS, build_options),
    "consume": (CONSUME_INPUTS, consume_options),
    "verify": (VERIFY_INPUTS, verify_options),
}
EVERY_INPUT = [(command, name) for command, (names, _) in PARSERS.items() for name in sorted(names)]


@pytest.mark.parametrize(("command", "name"), EVERY_INPUT, ids="-".join)
@settings(max_examples=25)
@given(value=INPUT_VALUES, others=st.data())
def test_every_input_parser_raises_nothing_but_a_clean_error(
    command: str, name: str, value: str, others: st.DataObject
) -> None:
    names, parse = PARSERS[command]
    values = {"images": "ghcr.io/acme/widget", "image": "ghcr.io/acme/widget", **others.draw(inputs_for(names))}
    values[name] = value
    options = only_fatal(lambda: parse(Inputs({}, values)))
    if command == "build" and options is not None:
        context = build_context(runner_env("pull-request"), payload("pull-request"))
        plan = only_fatal(lambda: make_plan(context, options.plan, now=NOW))  # type: ignore[attr-defined]
        if isinstance(plan, Plan):
            assert_clean(plan)


@settings(max_examples=200)
@given(labels=JSON, tags=JSON, annotations=JSON)
def test_any_metadata_json_parses_or_fails_cleanly(labels: object, tags: object, annotations: object) -> None:
    text = json.dumps({"labels": labels, "tags": tags, "annotations": annotations})
    options = only_fatal(lambda: plan_options(Inputs({}, {"images": "a/b", "metadata-json": text})))
    if options is not None:
        context = build_context(runner_env("push-branch"), payload("push-branch"))
        plan = only_fatal(lambda: make_plan(context, options, now=NOW))  # type: ignore[arg-type]
        if isinstance(plan, Plan):
            assert_clean(plan)


LIST_INPUTS = {
    "images",
    "tags",
    "labels",
    "annotations",
    "platforms",
    "build-args",
    "cache-from",
    "cache-to",
    "secrets",
    "secret-files",
    "secret-envs",
}


@pytest.mark.parametrize("name", sorted(set(BUILD_INPUTS) | set(CONSUME_INPUTS)))
@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\x1b", "\x85", "\u2028", "\ud800"])
def test_a_control_character_in_any_input_is_refused_naming_it(name: str, char: str) -> None:
    if name in ("password", "metadata-json"):  # taken as given / checked once decoded, below
        return
    if char in "\r\n" and name in LIST_INPUTS:  # a line break there starts the next entry, as documented
        return
    value = f"ok{char}::warning::injected"
    for parse in (build_options, consume_options):
        defaults = BUILD_INPUTS if parse is build_options else CONSUME_INPUTS
        if name not in defaults:
            continue
        values = {"images": "a/b", "image": "a/b", name: value}
        with pytest.raises(FatalError, match=re.escape(f"input '{name}'")) as caught:
            parse(Inputs({}, values))
        assert "injected" not in str(caught.value)


@pytest.mark.parametrize(
    "meta",
    [
        {"labels": {"com.acme.x\n::warning::injected": "v"}},
        {"labels": {"com.acme.x": "v\n::warning::injected"}},
        {"labels": {"com.acme.x=y": "v"}},
        {"labels": {"": "v"}},
        {"labels": {"com.acme x": "v"}},
        {"annotations": ["manifest:com.acme.x=v\n::warning::injected"]},
        {"annotations": ["manifest:com.acme.x=v\u2028injected"]},
        {"tags": ["ghcr.io/acme/widget:x\u0000y"]},
    ],
)
def test_metadata_json_values_are_checked_like_the_inputs(meta: dict[str, object]) -> None:
    with pytest.raises(FatalError, match="'metadata-json'") as caught:
        plan_options(Inputs({}, {"images": "a/b", "metadata-json": json.dumps(meta)}))
    assert "injected" not in str(caught.value)


@pytest.mark.parametrize(
    ("inputs", "env", "name"),
    [
        ({"INPUT_METADATA-JSON": "[" * 100_000}, {}, "metadata-json"),
        ({"INPUT_BUILD-ARGS": "SOURCE_DATE_EPOCH=²"}, {}, "build-args"),
        ({"INPUT_SHA-LENGTH": "\u0663"}, {}, "sha-length"),
        ({"INPUT_TIMEOUT-MINUTES": "\u0661\u0660"}, {}, "timeout-minutes"),
        ({"INPUT_LABELS": "com.acme.x=a\x1b[2Jb"}, {}, "labels"),
        ({}, {"SOURCE_DATE_EPOCH": "²"}, "SOURCE_DATE_EPOCH"),
        ({}, {"SOURCE_DATE_EPOCH": "9" * 40}, "SOURCE_DATE_EPOCH"),
    ],
)
def test_the_command_line_turns_each_into_one_error_and_exit_1(
    tmp_path: Path, inputs: dict[str, str], env: dict[str, str], name: str
) -> None:
    (tmp_path / "out").write_text("")
    environment = {
        **runner_env("push-branch"),
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "INPUT_IMAGES": "a/b",
        **inputs,
        **env,
    }
    command = "build" if "INPUT_BUILD-ARGS" in inputs or "INPUT_TIMEOUT-MINUTES" in inputs else "plan"
    out = io.StringIO()
    code = main([command], env=environment, stdout=out)
    assert code == 1
    (error,) = commands(out.getvalue(), "error")
    assert name in error
    assert (tmp_path / "out").read_text() == ""


def test_a_workflow_run_whose_pull_requests_is_a_number(tmp_path: Path) -> None:
    data = payload("workflow-run-pr")
    data["workflow_run"]["pull_requests"] = 5
    event = tmp_path / "event.json"
    event.write_text(json.dumps(data))
    out = io.StringIO()
    env = {**runner_env("workflow-run-pr"), "GITHUB_EVENT_PATH": str(event), "INPUT_IMAGES": "a/b"}
    code = main(["plan"], env=env, stdout=out)
    # No pull request is named, so none is found: the triggering run's number has to be given.
    assert code == 1
    (error,) = commands(out.getvalue(), "error")
    assert "pr-number" in error
    assert FIXTURES.exists()
