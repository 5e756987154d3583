"""The inputs of ``buildonce prune``: checked once, as ``buildonce.options`` checks the build's (whose readers
they share); imported only by that command."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import timedelta

from buildonce.docker.config import Login
from buildonce.errors import InputError
from buildonce.github.workflow import Inputs
from buildonce.labels import check_namespace
from buildonce.options import (
    PRUNE_INPUTS,
    WHOLE_NUMBER,
    RetryOptions,
    login_options,
    read_bool,
    read_choice,
    read_int,
    read_value,
    retry_options,
    tag_policy,
)
from buildonce.references import ImageName, parse_image_name
from buildonce.tags import TagPolicy

_DURATION = re.compile(r"(?P<number>[0-9]{1,6})(?P<unit>[smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(inputs: Inputs, defaults: dict[str, str], name: str) -> timedelta:
    value = read_value(inputs, defaults, name)
    found = _DURATION.fullmatch(value.strip().lower())
    if found is None:
        raise InputError(
            f"input '{name}' is {value!r}; give a whole number and a unit: s, m, h, d or w (e.g. 24h, 7d)."
        )
    return timedelta(seconds=int(found["number"]) * _UNITS[found["unit"]])


class Backend(enum.Enum):
    AUTO = "auto"
    """The GitHub Packages API for ghcr.io images, the OCI distribution API for every other registry."""
    OCI = "oci"
    GHCR = "ghcr"


@dataclass(frozen=True)
class PruneOptions:
    images: tuple[ImageName, ...]
    pr_max_age: timedelta
    branch_max_age: timedelta
    keep_newest: int
    min_age: timedelta
    closed_prs: frozenset[int]
    deleted_branches: frozenset[str]
    protect: tuple[str, ...]
    apply: bool
    max_deletes: int
    policy: TagPolicy
    label_namespace: str
    default_branch: str
    backend: Backend
    retry: RetryOptions
    login: Login | None


def prune_options(inputs: Inputs) -> PruneOptions:
    defaults = PRUNE_INPUTS
    images = [parse_image_name(item, source="images") for item in inputs.items("images")]
    if not images:
        raise InputError("input 'images' is empty. Name the images to prune, e.g. images: ghcr.io/acme/app.")
    closed: set[int] = set()
    for entry in inputs.items("closed-prs"):
        number = entry
        if not (WHOLE_NUMBER.fullmatch(number) and int(number) > 0):
            raise InputError(f"input 'closed-prs': {entry!r} is not a pull request number; list numbers, e.g. 12, 15.")
        closed.add(int(number))
    protect = tuple(inputs.items("protect"))
    return PruneOptions(
        images=tuple(dict.fromkeys(images)),
        pr_max_age=_duration(inputs, defaults, "pr-max-age"),
        branch_max_age=_duration(inputs, defaults, "branch-max-age"),
        keep_newest=read_int(inputs, defaults, "keep-newest", 0, 1000),
        min_age=_duration(inputs, defaults, "min-age"),
        closed_prs=frozenset(closed),
        deleted_branches=frozenset(inputs.items("deleted-branches")),
        protect=protect,
        apply=read_bool(inputs, defaults, "apply"),
        max_deletes=read_int(inputs, defaults, "max-deletes", 1, 100000),
        policy=tag_policy(inputs, defaults),
        label_namespace=check_namespace(read_value(inputs, defaults, "label-namespace")),
        default_branch=inputs.get("default-branch"),
        backend=read_choice(inputs, defaults, "backend", Backend),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
    )
