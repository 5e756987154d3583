"""The retention policy: which tags and digests prune keeps, untags or deletes, from plain values."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from buildonce.commands.prune import event_targets, make_rules, throwaway
from buildonce.errors import InputError
from buildonce.github.workflow import Inputs
from buildonce.labels import CREATED, REVISION, rfc3339
from buildonce.prune_options import prune_options
from buildonce.retention import Action, Node, Plan, Rules, Snapshot, is_protected, plan_prune
from buildonce.tags import TagPolicy

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
RULES = Rules(now=NOW, default_branch="main")


def digest(name: str) -> str:
    return "sha256:" + (name.encode().hex() + "0" * 64)[:64]


def commit(seed: str) -> str:
    return (seed * 40)[:40]


def pr_labels(number: int, sha: str, age: timedelta) -> dict[str, str]:
    return {
        REVISION: commit("9"),
        "dev.buildonce.pr.number": str(number),
        "dev.buildonce.pr.head-sha": sha,
        CREATED: rfc3339(NOW - age),
    }


def branch_labels(branch: str, sha: str, age: timedelta) -> dict[str, str]:
    return {REVISION: sha, "dev.buildonce.branch": branch, CREATED: rfc3339(NOW - age)}


class Repo:
    """A repository snapshot, built up image by image."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.nodes: dict[str, Node] = {}
        self.labels: dict[str, dict[str, str]] = {}

    def image(self, name: str, tags: list[str], labels: dict[str, str] | None = None, **node: object) -> str:
        found = digest(name)
        self.nodes[found] = Node(found, size=100, blobs=((digest(name + "-layer"), 1000),), **node)  # type: ignore[arg-type]
        for tag in tags:
            self.tags[tag] = found
        if labels is not None:
            self.labels[found] = labels
        return found

    def plan(self, rules: Rules = RULES) -> Plan:
        return plan_prune(Snapshot(tags=self.tags, nodes=self.nodes, labels=self.labels), rules)


def action_of(plan: Plan, wanted: str) -> Action:
    return next(decision.action for decision in plan.decisions if decision.digest == wanted)


def deleted(plan: Plan) -> list[str]:
    return [step.digest for group in plan.groups for step in group if not step.tag]


def test_an_old_pull_request_image_is_deleted_with_its_children_then_its_signatures() -> None:
    repo = Repo()
    amd, arm = repo.image("amd", []), repo.image("arm", [])
    old = pr_labels(7, commit("a"), timedelta(days=3))
    index = repo.image("old", ["pr-7-aaaaaaa"], old, children=(amd, arm))
    repo.image("new", ["pr-7-bbbbbbb"], pr_labels(7, commit("b"), timedelta(hours=3)))
    sig = repo.image("sig", [f"sha256-{index.removeprefix('sha256:')}.sig"])
    referrer = repo.image("ref", [], subject=index)
    fallback = repo.image("fallback", [f"sha256-{index.removeprefix('sha256:')}"], children=(referrer,))
    plan = repo.plan()
    # Top-level first, then its children, then what refers to it: a run cut short leaves only garbage.
    assert deleted(plan) == [index, amd, arm, fallback, referrer, sig]
    assert set(deleted(plan)) == {index, amd, arm, sig, referrer, fallback}
    assert plan.kept == ("pr-7-bbbbbbb",)
    assert plan.reclaimable == 6 * 1100


def test_a_tag_whose_digest_another_tag_keeps_is_only_untagged() -> None:
    repo = Repo()
    image = repo.image("shared", ["pr-7-aaaaaaa", "v1.2.3"], pr_labels(7, commit("a"), timedelta(days=3)))
    repo.image("newer", ["pr-7-bbbbbbb"], pr_labels(7, commit("b"), timedelta(hours=3)))
    plan = repo.plan()
    assert deleted(plan) == []
    assert [(step.tag, step.digest) for group in plan.groups for step in group] == [("pr-7-aaaaaaa", image)]
    assert action_of(plan, image) is Action.UNTAG
    assert "v1.2.3" in plan.kept
    assert "pr-7-aaaaaaa" not in plan.kept


def test_a_child_shared_with_a_kept_index_stays() -> None:
    repo = Repo()
    shared, own = repo.image("shared-child", []), repo.image("own-child", [])
    repo.image("kept", ["latest", "sha-1234567"], children=(shared,))
    pruned = repo.image(
        "pruned", ["pr-3-ccccccc"], pr_labels(3, commit("c"), timedelta(days=2)), children=(own, shared)
    )
    plan = repo.plan(Rules(now=NOW, default_branch="main", closed_prs=frozenset({3})))
    assert deleted(plan) == [pruned, own]
    assert shared in plan.marked


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (None, "could not be read"),
        ({}, "no org.opencontainers.image.revision label"),
        ({REVISION: commit("a"), CREATED: rfc3339(NOW - timedelta(days=9))}, "neither"),
        (pr_labels(8, commit("a"), timedelta(days=9)), "does not name this tag"),
        (pr_labels(7, commit("d"), timedelta(days=9)), "another commit"),
        (branch_labels("main", commit("a"), timedelta(days=9)), "default branch"),
        ({**pr_labels(7, commit("a"), timedelta(days=9)), CREATED: "yesterday"}, "created label"),
    ],
)
def test_a_look_alike_tag_is_kept_and_reported(labels: dict[str, str] | None, reason: str) -> None:
    repo = Repo()
    image = repo.image("lookalike", ["pr-7-aaaaaaa"], labels)
    plan = repo.plan()
    assert action_of(plan, image) is Action.KEEP
    assert plan.groups == ()
    ((tag, why),) = plan.skipped
    assert tag == "pr-7-aaaaaaa"
    assert reason in why


def test_a_branch_named_like_a_pull_request_follows_the_branch_rules() -> None:
    # A branch named pr-12 makes the tag pr-12-<sha>: its labels say branch, so branch-max-age applies.
    repo = Repo()
    image = repo.image("branch", ["pr-12-aaaaaaa"], branch_labels("pr-12", commit("a"), timedelta(days=2)))
    repo.image("branch-newer", ["pr-12-bbbbbbb"], branch_labels("pr-12", commit("b"), timedelta(days=1)))
    assert action_of(repo.plan(), image) is Action.KEEP
    plan = repo.plan(Rules(now=NOW, default_branch="main", branch_max_age=timedelta(days=1, hours=12)))
    assert deleted(plan) == [image]


def test_keep_newest_counts_per_stream_and_min_age_wins_over_everything() -> None:
    repo = Repo()
    old = [
        repo.image(f"pr1-{n}", [f"pr-1-{c * 7}"], pr_labels(1, commit(c), timedelta(days=n)))
        for n, c in ((2, "a"), (3, "b"), (4, "c"))
    ]
    young = repo.image("pr2", ["pr-2-ddddddd"], pr_labels(2, commit("d"), timedelta(minutes=30)))
    plan = repo.plan(Rules(now=NOW, default_branch="main", keep_newest=2, closed_prs=frozenset({2})))
    assert deleted(plan) == [old[2]]
    assert action_of(plan, young) is Action.KEEP
    rule = next(d.rule for d in plan.decisions if d.digest == young)
    assert "min-age" in rule


def test_a_closed_pull_request_loses_even_its_newest_image() -> None:
    repo = Repo()
    image = repo.image("pr", ["pr-5-aaaaaaa"], pr_labels(5, commit("a"), timedelta(hours=3)))
    assert repo.plan().groups == ()
    plan = repo.plan(Rules(now=NOW, default_branch="main", closed_prs=frozenset({5})))
    assert deleted(plan) == [image]
    assert "closed pull request" in plan.decisions[0].rule


def test_a_deleted_branch_loses_its_images() -> None:
    repo = Repo()
    image = repo.image("b", ["feature-x-aaaaaaa"], branch_labels("feature/x", commit("a"), timedelta(hours=3)))
    plan = repo.plan(Rules(now=NOW, default_branch="main", deleted_branches=frozenset({"feature/x"})))
    assert deleted(plan) == [image]


def test_build_key_tags_follow_their_image_and_never_keep_it() -> None:
    repo = Repo()
    key_old, key_new = "buildkey-" + "1" * 64, "buildkey-" + "2" * 64
    old = repo.image("old", ["pr-4-aaaaaaa", key_old], pr_labels(4, commit("a"), timedelta(days=3)))
    new = repo.image("new", ["pr-4-bbbbbbb", key_new], pr_labels(4, commit("b"), timedelta(hours=3)))
    plan = repo.plan()
    assert deleted(plan) == [old]
    assert key_old not in plan.kept
    assert key_new in plan.kept
    assert action_of(plan, new) is Action.KEEP


def test_signatures_of_a_kept_image_stay_and_orphans_go() -> None:
    repo = Repo()
    kept = repo.image("kept", ["latest"])
    sig = repo.image("sig", [f"sha256-{kept.removeprefix('sha256:')}.sig"])
    orphan = repo.image("orphan", ["sha256-" + "e" * 64 + ".att"])
    plan = repo.plan()
    assert action_of(plan, sig) is Action.KEEP
    assert deleted(plan) == [orphan]


def test_protected_tags() -> None:
    policy = Rules(now=NOW, default_branch="main", protect=("release-*",), policy=TagPolicy(prefix="app-"))
    for tag in ("latest", "nightly", "app-nightly", "1.2.3", "v1.2.3", "1.2", "1", "app-sha-1234567", "release-x"):
        assert is_protected(tag, policy), tag
    for tag in ("pr-1-1234567", "feature-1234567", "app-pr-1-1234567"):
        assert not is_protected(tag, policy), tag


def test_a_second_plan_of_the_result_is_empty() -> None:
    repo = Repo()
    repo.image("old", ["pr-7-aaaaaaa"], pr_labels(7, commit("a"), timedelta(days=3)))
    repo.image("new", ["pr-7-bbbbbbb"], pr_labels(7, commit("b"), timedelta(hours=3)))
    plan = repo.plan()
    for step in deleted(plan):
        repo.tags = {tag: d for tag, d in repo.tags.items() if d != step}
        repo.nodes.pop(step)
    assert repo.plan().groups == ()


def test_the_event_names_what_to_remove() -> None:
    repository = {"default_branch": "trunk"}
    closed = event_targets(
        "pull_request_target", {"action": "closed", "pull_request": {"number": 9}, "repository": repository}
    )
    assert closed.closed_prs == {9}
    assert closed.default_branch == "trunk"
    assert event_targets("pull_request", {"action": "opened", "pull_request": {"number": 9}}).closed_prs == set()
    assert event_targets("delete", {"ref": "feature/x", "ref_type": "branch"}).deleted_branches == {"feature/x"}
    assert event_targets("delete", {"ref": "v1", "ref_type": "tag"}).deleted_branches == set()
    assert event_targets("push", {"ref": "refs/heads/old", "deleted": True}).deleted_branches == {"old"}


def test_prune_options_and_rules() -> None:
    options = prune_options(
        Inputs({"INPUT_IMAGES": "127.0.0.1:5000/app", "INPUT_CLOSED_PRS": "4, 5", "INPUT_MIN_AGE": "90m"})
    )
    assert options.closed_prs == {4, 5}
    assert options.min_age == timedelta(minutes=90)
    assert options.apply is False
    with pytest.raises(InputError, match="default-branch"):
        make_rules(options, event_targets("schedule", {}), NOW)
    with pytest.raises(InputError, match="input 'pr-max-age'"):
        prune_options(Inputs({"INPUT_IMAGES": "a/b", "INPUT_PR_MAX_AGE": "1 day"}))
    with pytest.raises(InputError, match="input 'closed-prs'"):
        prune_options(Inputs({"INPUT_IMAGES": "a/b", "INPUT_CLOSED_PRS": "x"}))
    with pytest.raises(InputError, match="input 'images'"):
        prune_options(Inputs({}))


def test_the_untag_marker_is_unique_per_tag_and_moment() -> None:
    first, second = throwaway("a", NOW), throwaway("b", NOW)
    assert first.digest != second.digest
    assert first.digest != throwaway("a", NOW + timedelta(seconds=1)).digest
    assert first.json()["manifests"] == []


def test_the_name_part_of_an_immutable_tag_comes_from_the_tag_grammar() -> None:
    from buildonce.retention import needs_labels
    from buildonce.tags import immutable_name

    policy = TagPolicy(prefix="app-", suffix="-x")
    assert immutable_name("app-pr-12-abc1234-x", policy) == "pr-12"
    assert immutable_name("app-feature-login-abc1234-x", policy) == "feature-login"
    assert immutable_name("app-sha-abc1234-x", policy) == "sha"
    assert immutable_name("pr-12-abc1234", policy) is None
    assert immutable_name("app-pr-12-abc123-x", policy) is None  # six hex digits: not this sha-length
    assert needs_labels("app-pr-12-abc1234-x", policy)
    assert not needs_labels("app-sha-abc1234-x", policy)
    assert not needs_labels("latest", policy)
