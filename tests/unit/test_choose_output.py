from __future__ import annotations

from datetime import datetime, timezone

import pytest
from events import payload, runner_env

from buildonce.commands.build import choose_output
from buildonce.docker.buildx import Builder, Output
from buildonce.errors import InputError
from buildonce.github.context import build_context
from buildonce.github.workflow import Inputs
from buildonce.options import PushVia, plan_options
from buildonce.plan import Plan, make_plan


def plan(platforms: str = "") -> Plan:
    options = plan_options(Inputs({}, {"images": "a/b", "platforms": platforms}))
    ctx = build_context(runner_env("push-branch"), payload("push-branch"))
    return make_plan(ctx, options, now=datetime(2030, 1, 1, tzinfo=timezone.utc))


DOCKER = Builder("default", "docker", "")
CONTAINER = Builder("ci", "docker-container", "v0.13")
MULTI = "linux/amd64,linux/arm64"


@pytest.mark.parametrize(
    ("via", "builder", "containerd", "platforms", "expected"),
    [
        (PushVia.AUTO, DOCKER, True, "", Output.ENGINE),
        (PushVia.AUTO, DOCKER, True, MULTI, Output.ENGINE),
        (PushVia.AUTO, DOCKER, False, "", Output.ENGINE),
        (PushVia.AUTO, CONTAINER, False, MULTI, Output.LAYOUT),
        (PushVia.AUTO, CONTAINER, True, "", Output.LAYOUT),
        (PushVia.LAYOUT, DOCKER, True, "", Output.LAYOUT),
        (PushVia.ENGINE, DOCKER, True, MULTI, Output.ENGINE),
    ],
)
def test_choice(via: PushVia, builder: Builder, containerd: bool, platforms: str, expected: Output) -> None:
    assert choose_output(via, builder, lambda: containerd, plan(platforms)) is expected


@pytest.mark.parametrize(
    ("via", "builder", "containerd", "platforms", "fragment"),
    [
        (PushVia.AUTO, DOCKER, False, MULTI, "input 'platforms'"),
        (PushVia.LAYOUT, DOCKER, False, "", "input 'push-via'"),
        (PushVia.ENGINE, CONTAINER, True, "", "input 'push-via'"),
    ],
)
def test_impossible_combinations_are_input_errors(
    via: PushVia, builder: Builder, containerd: bool, platforms: str, fragment: str
) -> None:
    with pytest.raises(InputError, match=fragment):
        choose_output(via, builder, lambda: containerd, plan(platforms))


def test_the_store_is_not_asked_when_it_cannot_matter() -> None:
    def ask() -> bool:
        raise AssertionError("the engine was asked")

    assert choose_output(PushVia.AUTO, DOCKER, ask, plan()) is Output.ENGINE
    assert choose_output(PushVia.AUTO, CONTAINER, ask, plan(MULTI)) is Output.LAYOUT
