"""The build key, its lookup tag, the reuse defaults and a promoted image's labels: plain values."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from buildonce.buildkey import (
    KeyMaterial,
    build_key,
    key_of_tag,
    keyed_annotations,
    keyed_labels,
    lookup_tag,
    promoted_annotations,
    promoted_labels,
    reuse_for,
)
from buildonce.errors import InputError
from buildonce.github.workflow import Inputs
from buildonce.labels import CREATED, REVISION, Keys
from buildonce.options import Reuse, build_options
from buildonce.tags import Kind

KEYS = Keys()
BASE = KeyMaterial(
    context_tree="d83fec41dd49db52a636404588bd0d9e2b6e45af",
    dockerfile="context:Dockerfile",
    dockerignore="",
    build_args=("FLAVOUR=plain", "MODE=fast"),
    secret_ids=("npm",),
    target="",
    platforms=("linux/amd64", "linux/arm64"),
    labels={"org.opencontainers.image.title": "widget"},
    annotations=(),
    options={"provenance": "", "sbom": "", "network": "", "output": "engine"},
)


def test_the_key_is_64_lowercase_hex_and_the_same_for_the_same_material() -> None:
    key = build_key(BASE)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert build_key(replace(BASE)) == key


@pytest.mark.parametrize(
    "change",
    [
        {"context_tree": "e" * 40},
        {"dockerfile": "context:Dockerfile.prod"},
        {"dockerfile": "blob:" + "a" * 40},
        {"dockerignore": "b" * 40},
        {"build_args": ("FLAVOUR=spicy", "MODE=fast")},
        {"build_args": ("FLAVOUR=plain",)},
        {"secret_ids": ("npm", "pip")},
        {"target": "runtime"},
        {"platforms": ("linux/amd64",)},
        {"labels": {"org.opencontainers.image.title": "gadget"}},
        {"annotations": ("index:com.example.team=infra",)},
        {"options": {**BASE.options, "provenance": "mode=max"}},
        {"options": {**BASE.options, "output": "layout"}},
    ],
)
def test_every_input_of_the_key_changes_it(change: dict[str, object]) -> None:
    assert build_key(replace(BASE, **change)) != build_key(BASE)  # type: ignore[arg-type]


def test_order_does_not_change_the_key_but_the_last_value_of_an_argument_does() -> None:
    reordered = replace(BASE, build_args=("MODE=fast", "FLAVOUR=plain"), platforms=("linux/arm64", "linux/amd64"))
    assert build_key(reordered) == build_key(BASE)
    repeated = replace(BASE, build_args=("FLAVOUR=spicy", "MODE=fast", "FLAVOUR=plain"))
    assert build_key(repeated) == build_key(BASE)


def test_build_argument_values_enter_the_key_only_hashed() -> None:
    # The key is a hash of a document; a value is never in it as it is. Two values that share a prefix differ.
    assert build_key(replace(BASE, build_args=("TOKEN=abc",))) != build_key(replace(BASE, build_args=("TOKEN=abd",)))


def test_the_labels_naming_the_commit_the_run_or_the_time_are_left_out() -> None:
    labels = {
        REVISION: "1" * 40,
        CREATED: "2026-03-05T08:00:00Z",
        "org.opencontainers.image.version": "pr-123",
        "org.opencontainers.image.source": "https://github.com/acme/widget",
        KEYS.pr_number: "123",
        KEYS.pr_head_sha: "2" * 40,
        KEYS.branch: "feature",
        KEYS.run_url: "https://github.com/acme/widget/actions/runs/1",
        KEYS.build_key: "3" * 64,
        KEYS.promoted_from: "sha256:" + "4" * 64,
        "org.opencontainers.image.title": "widget",
        "com.example.team": "infra",
    }
    assert keyed_labels(labels, KEYS) == {"com.example.team": "infra", "org.opencontainers.image.title": "widget"}
    annotations = (
        f"manifest:{REVISION}=" + "1" * 40,
        "manifest:org.opencontainers.image.title=widget",
        f"index:{CREATED}=now",
        "com.example.team=infra",
    )
    assert keyed_annotations(annotations, KEYS) == (
        "com.example.team=infra",
        "manifest:org.opencontainers.image.title=widget",
    )


def test_the_lookup_tag_has_one_form_and_is_read_back() -> None:
    key = build_key(BASE)
    assert lookup_tag(key) == f"buildkey-{key}"
    assert len(lookup_tag(key)) <= 128  # a registry's longest tag
    assert key_of_tag(lookup_tag(key)) == key
    for other in ("latest", f"buildkey-{key.upper()}", f"buildkey-{key[:63]}", f"xbuildkey-{key}", f"sha-{key}"):
        assert key_of_tag(other) is None, other
    with pytest.raises(ValueError, match="not a build key"):
        lookup_tag("sha256:" + key)


@pytest.mark.parametrize("kind", [kind for kind in Kind if kind is not Kind.SCHEDULE])
def test_reuse_auto_looks_up_content_for_every_event_but_schedule(kind: Kind) -> None:
    assert reuse_for(Reuse.AUTO, kind) is Reuse.CONTENT


def test_a_scheduled_build_never_reuses_by_content_unless_asked() -> None:
    assert reuse_for(Reuse.AUTO, Kind.SCHEDULE) is Reuse.COMMIT
    for mode in (Reuse.CONTENT, Reuse.COMMIT, Reuse.OFF):
        assert reuse_for(mode, Kind.SCHEDULE) is mode
        assert reuse_for(mode, Kind.DEFAULT_BRANCH) is mode


def test_a_promoted_image_names_this_commit_and_keeps_everything_else() -> None:
    tested = {
        "org.opencontainers.image.title": "widget",
        CREATED: "2026-03-04T00:00:00Z",
        REVISION: "5" * 40,
        "org.opencontainers.image.version": "pr-123",
        KEYS.pr_number: "123",
        KEYS.pr_head_sha: "a" * 40,
        KEYS.branch: "feature",
        KEYS.run_url: "https://github.com/acme/widget/actions/runs/1",
        KEYS.build_key: "3" * 64,
    }
    planned = {
        "org.opencontainers.image.title": "widget",
        CREATED: "2026-03-05T00:00:00Z",
        REVISION: "0" * 40,
        "org.opencontainers.image.version": "main",
        KEYS.branch: "main",
        KEYS.run_url: "https://github.com/acme/widget/actions/runs/2",
        KEYS.build_key: "3" * 64,
    }
    promoted = promoted_labels(tested, planned, KEYS, "sha256:" + "9" * 64)
    assert promoted == {
        "org.opencontainers.image.title": "widget",
        CREATED: "2026-03-04T00:00:00Z",
        REVISION: "0" * 40,
        "org.opencontainers.image.version": "main",
        KEYS.branch: "main",
        KEYS.run_url: "https://github.com/acme/widget/actions/runs/1",
        KEYS.build_key: "3" * 64,
        KEYS.promoted_from: "sha256:" + "9" * 64,
    }
    # The same promotion twice makes the same labels in the same order: the same config bytes.
    assert list(promoted_labels(tested, planned, KEYS, "sha256:" + "9" * 64).items()) == list(promoted.items())


def test_a_promoted_manifest_names_this_commit_in_its_annotations() -> None:
    tested = {REVISION: "5" * 40, "org.opencontainers.image.version": "pr-123", "com.example.team": "infra"}
    planned = {REVISION: "0" * 40}
    assert promoted_annotations(tested, planned, KEYS) == {REVISION: "0" * 40, "com.example.team": "infra"}


def test_the_reuse_input_takes_its_four_values_and_names_itself_otherwise() -> None:
    for value, mode in (("auto", Reuse.AUTO), ("content", Reuse.CONTENT), ("Commit", Reuse.COMMIT), ("off", Reuse.OFF)):
        assert build_options(Inputs({}, {"images": "ghcr.io/acme/widget", "reuse": value})).reuse is mode
    assert build_options(Inputs({}, {"images": "ghcr.io/acme/widget"})).reuse is Reuse.AUTO
    with pytest.raises(InputError, match=r"input 'reuse' is 'always'; it must be one of: auto, content, commit, off"):
        build_options(Inputs({}, {"images": "ghcr.io/acme/widget", "reuse": "always"}))
