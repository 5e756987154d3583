from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildonce.errors import InputError
from buildonce.references import is_valid_tag
from buildonce.tags import Kind, Subject, TagPolicy, name_sha_tag, parse_semver, plan_tags, sanitize

SHA = "abc1234" + "0" * 33


@pytest.mark.parametrize(
    ("branch", "sha", "expected"),
    [
        ("feature/Add_New-Feature", "abc1234", "feature-add-new-feature-abc1234"),
        ("feature/dns/subdomain", "def5678", "feature-dns-subdomain-def5678"),
        ("feature/fix-#123", "ghi9012", "feature-fix-123-ghi9012"),
    ],
)
def test_design_note_examples(branch: str, sha: str, expected: str) -> None:
    assert name_sha_tag(branch, sha) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Feature/ÜBER-café", "feature-ber-caf"),
        ("release/v1.2", "release-v1-2"),
        ("--weird__name--", "weird-name"),
        ("a//b", "a-b"),
        ("###", "branch"),
        ("", "branch"),
        ("日本語", "branch"),
    ],
)
def test_sanitize(name: str, expected: str) -> None:
    assert sanitize(name) == expected


def test_long_branch_is_truncated_to_exactly_128_with_the_sha() -> None:
    tag = name_sha_tag("x" * 300, "abc1234")
    assert len(tag) == 128
    assert tag.endswith("-abc1234")


def test_truncation_does_not_leave_a_trailing_dash() -> None:
    # 119 chars then a '-' at the cut point: the cut must not end in '-' before '-{sha}'.
    name = "a" * 119 + "-bbbb"
    tag = name_sha_tag(name, "abc1234")
    assert "--" not in tag
    assert tag == "a" * 119 + "-abc1234"
    assert len(tag) <= 128


def test_prefix_and_suffix_count_against_the_limit() -> None:
    tag = name_sha_tag("y" * 300, "abc1234", prefix="pre-", suffix="-alpine")
    assert len(tag) == 128
    assert tag.startswith("pre-y")
    assert tag.endswith("-abc1234-alpine")


def test_prefix_and_suffix_that_leave_no_room_are_an_error() -> None:
    with pytest.raises(InputError, match="tag-prefix"):
        name_sha_tag("x", "a" * 40, prefix="p" * 60, suffix="s" * 30)


@given(branch=st.text(max_size=400), sha=st.text(alphabet="0123456789abcdef", min_size=7, max_size=40))
def test_any_branch_gives_a_valid_tag_ending_in_the_sha(branch: str, sha: str) -> None:
    tag = name_sha_tag(branch, sha)
    assert len(tag) <= 128
    assert tag.endswith(f"-{sha}")
    assert is_valid_tag(tag)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", tag)
    assert name_sha_tag(branch, sha) == tag  # deterministic


@given(branch=st.text(max_size=200))
def test_sanitize_is_idempotent(branch: str) -> None:
    once = sanitize(branch)
    assert sanitize(once) == once


@pytest.mark.parametrize(
    ("tag", "version", "prerelease"),
    [
        ("v1.2.3", "1.2.3", ""),
        ("1.2.3", "1.2.3", ""),
        ("v2.0.0-rc.1", "2.0.0-rc.1", "rc.1"),
        ("v1.0.0+build.5", "1.0.0-build.5", ""),
    ],
)
def test_parse_semver(tag: str, version: str, prerelease: str) -> None:
    parsed = parse_semver(tag)
    assert parsed is not None
    assert parsed.version == version
    assert parsed.prerelease == prerelease


@pytest.mark.parametrize("tag", ["v1.2", "1.2.3.4", "v01.2.3", "release-1.2.3", "latest"])
def test_not_semver(tag: str) -> None:
    assert parse_semver(tag) is None


def subject(kind: Kind, ref: str = "", pr: int | None = None) -> Subject:
    return Subject(kind=kind, sha=SHA, revision=SHA, ref_name=ref, pr_number=pr, pr_head_sha=SHA if pr else "")


@pytest.mark.parametrize(
    ("subj", "tags", "immutable", "version"),
    [
        (subject(Kind.PULL_REQUEST, "x", 42), ("pr-42-abc1234",), "pr-42-abc1234", "pr-42"),
        (subject(Kind.DEFAULT_BRANCH, "main"), ("latest", "sha-abc1234"), "sha-abc1234", "main"),
        (subject(Kind.BRANCH, "feat/X"), ("feat-x-abc1234",), "feat-x-abc1234", "feat-x"),
        (subject(Kind.SCHEDULE, "main"), ("nightly", "sha-abc1234"), "sha-abc1234", "nightly"),
        (subject(Kind.TAG, "v1.2.3"), ("1.2.3", "1.2", "1", "sha-abc1234"), "sha-abc1234", "1.2.3"),
        (subject(Kind.TAG, "v0.4.1"), ("0.4.1", "0.4", "sha-abc1234"), "sha-abc1234", "0.4.1"),
        (subject(Kind.TAG, "v3.0.0-beta.2"), ("3.0.0-beta.2", "sha-abc1234"), "sha-abc1234", "3.0.0-beta.2"),
        (subject(Kind.TAG, "Nightly_2026"), ("nightly-2026", "sha-abc1234"), "sha-abc1234", "nightly-2026"),
        (
            subject(Kind.MERGE_GROUP, "gh-readonly-queue/main/pr-5-" + "4" * 40),
            ("gh-readonly-queue-main-pr-5-" + "4" * 40 + "-abc1234",),
            "gh-readonly-queue-main-pr-5-" + "4" * 40 + "-abc1234",
            "gh-readonly-queue-main-pr-5-" + "4" * 40,
        ),
    ],
)
def test_policy(subj: Subject, tags: tuple[str, ...], immutable: str, version: str) -> None:
    plan = plan_tags(subj, TagPolicy())
    assert plan.tags == tags
    assert plan.immutable == immutable
    assert plan.version == version
    assert plan.immutable in plan.tags


def test_sha_length_changes_every_sha_tag() -> None:
    plan = plan_tags(subject(Kind.PULL_REQUEST, "x", 1), TagPolicy(sha_length=12))
    assert plan.immutable == f"pr-1-{SHA[:12]}"


def test_prefix_and_suffix_apply_to_all_but_latest() -> None:
    plan = plan_tags(subject(Kind.DEFAULT_BRANCH, "main"), TagPolicy(prefix="web-", suffix="-slim"))
    assert plan.tags == ("latest", "web-sha-abc1234-slim")


def test_ambiguous_workflow_run_ref_offers_the_sha_tag_too() -> None:
    subj = Subject(kind=Kind.BRANCH, sha=SHA, revision=SHA, ref_name="v1.2.3", ambiguous_ref=True)
    plan = plan_tags(subj, TagPolicy())
    assert plan.candidates == ("v1-2-3-abc1234", "sha-abc1234")
