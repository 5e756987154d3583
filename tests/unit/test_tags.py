from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildonce.errors import InputError
from buildonce.references import is_valid_tag
from buildonce.tags import Kind, Subject, TagPolicy, name_sha_tag, named_commit, parse_semver, plan_tags, sanitize

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


def test_a_version_too_long_for_a_tag_is_cut_to_fit_as_a_branch_name_is() -> None:
    name = "v1.2.3-" + "a" * 200
    plan = plan_tags(subject(Kind.TAG, name), TagPolicy())
    (version_tag, sha_tag) = plan.tags
    assert len(version_tag) == 128
    assert version_tag == ("1.2.3-" + "a" * 200)[:128]
    assert sha_tag == "sha-abc1234"
    assert plan.version == "1.2.3-" + "a" * 200  # the label keeps the whole version

    affixed = plan_tags(subject(Kind.TAG, name), TagPolicy(prefix="web-", suffix="-slim"))
    assert affixed.tags[0].startswith("web-1.2.3-aaa")
    assert affixed.tags[0].endswith("a-slim")
    assert len(affixed.tags[0]) == 128


def test_a_cut_version_leaves_no_dangling_separator() -> None:
    name = "v1.2.3-" + "a" * 120 + ".-b" + "c" * 50
    (version_tag, _) = plan_tags(subject(Kind.TAG, name), TagPolicy()).tags
    assert version_tag == "1.2.3-" + "a" * 120
    assert is_valid_tag(version_tag)


def test_a_version_with_more_digits_than_int_reads_is_cut_too() -> None:
    name = f"v{'9' * 5000}.0.0"
    plan = plan_tags(subject(Kind.TAG, name), TagPolicy())
    assert plan.tags == ("9" * 128, "sha-abc1234")  # 9…9.0.0, 9…9.0 and 9…9 all cut to the same tag
    assert plan.version == f"{'9' * 5000}.0.0"


@pytest.mark.parametrize("name", ["v\u0661.\u0662.\u0663", "v1.2.\u00b3", "v1.2.3-\u00b2", "v1.2.3\n"])
def test_only_ascii_digits_make_a_version(name: str) -> None:
    assert parse_semver(name) is None


@given(
    name=st.text(max_size=300),
    kind=st.sampled_from([Kind.TAG, Kind.BRANCH, Kind.MERGE_GROUP, Kind.PULL_REQUEST]),
    prefix=st.from_regex(r"([A-Za-z0-9_][A-Za-z0-9._-]{0,80})?", fullmatch=True),
    suffix=st.from_regex(r"[A-Za-z0-9._-]{0,60}", fullmatch=True),
    sha_length=st.integers(7, 40),
)
def test_every_derived_tag_fits_or_the_affixes_are_named(
    name: str, kind: Kind, prefix: str, suffix: str, sha_length: int
) -> None:
    subj = Subject(kind=kind, sha=SHA, revision=SHA, ref_name=name, pr_number=7 if kind is Kind.PULL_REQUEST else None)
    policy = TagPolicy(sha_length=sha_length, prefix=prefix, suffix=suffix)
    if len(prefix) + len(suffix) + sha_length + len("pr-7-") > 128:
        # Only the prefix and suffix the user chose can leave too little room, never the name.
        said = ""
        try:
            plan_tags(subj, policy)
        except InputError as exc:
            said = str(exc)
        assert not said or ("'tag-prefix'" in said and "'tag-suffix'" in said)
        return
    plan = plan_tags(subj, policy)
    assert all(is_valid_tag(tag) and len(tag) <= 128 for tag in plan.tags)
    assert plan.immutable in plan.tags


@pytest.mark.parametrize(
    ("tag", "policy", "named"),
    [
        ("sha-abc1234", TagPolicy(), "abc1234"),
        ("pr-42-abc1234", TagPolicy(), "abc1234"),
        ("feature-login-2-abc1234", TagPolicy(), "abc1234"),
        ("web-sha-abc1234-slim", TagPolicy(prefix="web-", suffix="-slim"), "abc1234"),
        ("sha-abc1234", TagPolicy(prefix="web-"), None),
        ("sha-abc1234", TagPolicy(sha_length=8), None),
        ("sha-abc12345", TagPolicy(sha_length=8), "abc12345"),
        ("sha-ABC1234", TagPolicy(), None),
        ("1.0.0-abc1234", TagPolicy(), None),
        ("Feature-abc1234", TagPolicy(), None),
        ("-abc1234", TagPolicy(), None),
        ("abc1234", TagPolicy(), None),
        ("latest", TagPolicy(), None),
        ("nightly-2026031", TagPolicy(), "2026031"),
    ],
)
def test_named_commit_reads_every_immutable_shape(tag: str, policy: TagPolicy, named: str | None) -> None:
    assert named_commit(tag, policy) == named


@given(
    name=st.text(max_size=150),
    pr=st.integers(1, 10**6),
    sha=st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
    sha_length=st.integers(7, 40),
    prefix=st.from_regex(r"([A-Za-z0-9_][A-Za-z0-9._-]{0,10})?", fullmatch=True),
    suffix=st.from_regex(r"[A-Za-z0-9._-]{0,10}", fullmatch=True),
)
def test_every_planned_immutable_tag_reads_as_naming_its_commit(
    name: str, pr: int, sha: str, sha_length: int, prefix: str, suffix: str
) -> None:
    policy = TagPolicy(sha_length=sha_length, prefix=prefix, suffix=suffix)
    for kind in (Kind.PULL_REQUEST, Kind.BRANCH, Kind.DEFAULT_BRANCH, Kind.TAG, Kind.SCHEDULE, Kind.MERGE_GROUP):
        subj = Subject(kind=kind, sha=sha, revision=sha, ref_name=name, pr_number=pr)
        assert named_commit(plan_tags(subj, policy).immutable, policy) == sha[:sha_length]
