from __future__ import annotations

import pytest

from buildonce.compression import Compression
from buildonce.consume_options import consume_options
from buildonce.errors import InputError
from buildonce.github.workflow import Inputs
from buildonce.options import (
    BUILD_INPUTS,
    PushVia,
    Switch,
    build_options,
    login_options,
    plan_options,
)
from buildonce.platforms import check_platform
from buildonce.references import parse_image_name


def inputs(**values: str) -> Inputs:
    return Inputs({}, {name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ghcr.io/Acme/app", "use 'ghcr.io/acme/app'"),
        ("Acme/app", "use 'acme/app'"),
        ("127.0.0.1:5000/My_App", "use '127.0.0.1:5000/my_app'"),
        ("ghcr.io/Acme/my app", "upper-case letters"),
        ("my app", "not a valid image name"),
        ("app:latest", "carries a tag"),
        ("app@sha256:" + "a" * 64, "carries a tag or digest"),
        ("ghcr.io//app", "not a valid image name"),
        ("-bad.host/app", "invalid registry host"),
    ],
)
def test_invalid_image_names(name: str, fragment: str) -> None:
    with pytest.raises(InputError, match="'images'") as info:
        plan_options(inputs(images=name))
    assert fragment in str(info.value)


def test_empty_entries_in_images_are_skipped_but_all_empty_is_an_error() -> None:
    assert len(plan_options(inputs(images="a/b,,\n c/d ")).images) == 2
    with pytest.raises(InputError, match="empty"):
        plan_options(inputs(images=" , \n"))


@pytest.mark.parametrize("name", ["ghcr.io/acme/app", "127.0.0.1:5000/app", "localhost/app", "app", "a/b_c/d-e.f"])
def test_valid_image_names(name: str) -> None:
    assert parse_image_name(name).name == name


def test_registry_and_repository_of_image_names() -> None:
    assert (parse_image_name("app").registry, parse_image_name("app").repository) == (
        "docker.io",
        "library/app",
    )
    name = parse_image_name("127.0.0.1:5000/team/app")
    assert (name.registry, name.repository, name.basename) == ("127.0.0.1:5000", "team/app", "app")


@pytest.mark.parametrize("tag", [".hidden", "-dash", "a" * 129, "has space", "ü"])
def test_invalid_extra_tags(tag: str) -> None:
    with pytest.raises(InputError, match="'tags'"):
        plan_options(inputs(images="a/b", tags=tag))


def test_invalid_full_reference_in_tags() -> None:
    with pytest.raises(InputError, match="'tags'"):
        plan_options(inputs(images="a/b", tags="ghcr.io/Acme/x:v1"))


def test_label_without_equals() -> None:
    with pytest.raises(InputError, match=r"'labels'.*key=value"):
        plan_options(inputs(images="a/b", labels="just-a-key"))


@pytest.mark.parametrize("value", ["6", "41", "seven", ""])
def test_sha_length_bounds(value: str) -> None:
    if value == "":
        assert plan_options(inputs(images="a/b", sha_length=value)).policy.sha_length == 7
        return
    with pytest.raises(InputError, match="'sha-length'"):
        plan_options(inputs(images="a/b", sha_length=value))


@pytest.mark.parametrize("name", ["push", "load", "artifact", "pr-sha"])
def test_unknown_choice_values(name: str) -> None:
    with pytest.raises(InputError, match=f"'{name}' is 'maybe'"):
        plan_options(inputs(images="a/b", **{name.replace("-", "_"): "maybe"}))


def test_switches_accept_case_variants() -> None:
    options = plan_options(inputs(images="a/b", push="TRUE", load="False", artifact="auto"))
    assert (options.push, options.load, options.artifact) == (Switch.TRUE, Switch.FALSE, Switch.AUTO)


@pytest.mark.parametrize("text", ["{", "[]", '{"tags": "x"}', '{"labels": {"a": 1}}', '{"tags": ["nope"]}'])
def test_unparsable_metadata_json(text: str) -> None:
    with pytest.raises(InputError, match="metadata-json"):
        plan_options(inputs(images="a/b", metadata_json=text))


@pytest.mark.parametrize("platform", ["linux/banana", "linux", "plan10/amd64", "linux/arm/v9", "linux//amd64"])
def test_invalid_platforms(platform: str) -> None:
    with pytest.raises(InputError, match="'platforms'"):
        check_platform(platform)


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm64/v8", "windows/amd64"])
def test_valid_platforms(platform: str) -> None:
    assert check_platform(platform) == platform


def test_source_date_epoch_build_arg() -> None:
    assert build_options(inputs(images="a/b", build_args="A=1\nSOURCE_DATE_EPOCH=42")).source_date_epoch == 42
    assert build_options(inputs(images="a/b", build_args="A=1")).source_date_epoch is None


def test_build_options_defaults() -> None:
    options = build_options(inputs(images="a/b"))
    assert options.context == "."
    assert options.retry.attempts == 3
    assert options.retry.wait_seconds == 10
    assert options.retry.timeout_seconds == 25 * 60
    assert options.push_via is PushVia.AUTO
    assert options.compression is Compression.NONE
    assert options.login is None


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"build_args": "=x"}, "'build-args'"),
        ({"build_args": "NOEQUALS"}, "'build-args'"),
        ({"build_args": "SOURCE_DATE_EPOCH=yesterday"}, "'build-args'"),
        ({"retry_attempts": "0"}, "'retry-attempts'"),
        ({"retry_wait_seconds": "-1"}, "'retry-wait-seconds'"),
        ({"timeout_minutes": "zero"}, "'timeout-minutes'"),
        ({"no_cache": "yes"}, "'no-cache'"),
        ({"artifact_compression": "lz4"}, "'artifact-compression'"),
        ({"push_via": "carrier-pigeon"}, "'push-via'"),
        ({"username": "bob"}, "'password'"),
        ({"artifact_name": "a/b"}, "'artifact-name'"),
        ({"tag_prefix": "-x"}, "'tag-prefix'"),
    ],
)
def test_invalid_build_inputs(values: dict[str, str], fragment: str) -> None:
    with pytest.raises(InputError) as info:
        build_options(inputs(images="a/b", **values))
    assert fragment in str(info.value)


def test_secret_values_never_reach_error_messages() -> None:
    with pytest.raises(InputError) as info:
        build_options(inputs(images="a/b", secrets="bad id=hunter2-secret"))
    assert "hunter2" not in str(info.value)


def test_login_keeps_password_as_given() -> None:
    login = login_options(inputs(username="bob", password=" pa ss \n"))
    assert login is not None
    assert login.password == " pa ss "
    assert login.registry == "docker.io"


def test_every_build_input_has_a_string_default() -> None:
    assert all(isinstance(value, str) for value in BUILD_INPUTS.values())


def test_consume_options() -> None:
    options = consume_options(inputs(image="ghcr.io/acme/app", pr_number="12", sha="a" * 40))
    assert (options.pr_number, options.sha) == (12, "a" * 40)
    with pytest.raises(InputError, match="'pr-number'"):
        consume_options(inputs(pr_number="#12"))
    with pytest.raises(InputError, match="'sha'"):
        consume_options(inputs(sha="abc1234"))
    with pytest.raises(InputError, match="'digest'"):
        consume_options(inputs(digest="sha256:xyz"))
