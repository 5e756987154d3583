"""Every example workflow, and buildonce's two actions in them, run by a real runner (nektos/act).

What is checked is what a user checks of a run: each job's result and the outputs later jobs read through
``needs.*.outputs`` (from the report job rewrites.py appends), the digest the registry serves under every
pushed tag, the artifact act's server stored, and the step summary. rewrites.py lists everything the suite
changes in the workflows and every action it replaces; scenarios.py which events drive which workflow.

Where act and GitHub's runner differ, a test that depends on it says so. act sets ``INPUT_<NAME>`` variables
for a composite action's own inputs in its steps (GitHub's runner does not), which is what made the
artifact fallback fail before consume.sh handed its overrides to buildonce as ``--input`` flags: the
fallback tests here are the regression tests for that.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from action_run import run_buildonce
from actrun import Act, ActRun, JobRun
from faultproxy import FaultProxy
from registry_reader import RegistryReader
from registry_server import TEST_PASSWORD, TEST_USER, RegistryServer
from runner_fixtures import act, act_binary, auth_registry, base_registry, own_action, scratch, token_registry
from scenarios import (
    PR_NUMBER,
    Chain,
    Scenarios,
    Setting,
    checks_chain,
    default_branch_chain,
    feature_branch_chain,
    fork_chain,
    fork_workflow_chain,
    merge_queue_chain,
    metadata_chain,
    native_legs_chain,
    pull_request,
    pull_request_chain,
    squash_chain,
    stale_tag_chain,
)

from buildonce.buildkey import key_of_tag

pytestmark = pytest.mark.runner
FIXTURES = (act, act_binary, auth_registry, base_registry, own_action, scratch, token_registry)
"""Fixtures of runner_fixtures, imported to be found here (named, so no linter takes them for unused)."""


@pytest.fixture(scope="module")
def scenarios(
    act: Act,
    scratch: Path,
    auth_registry: RegistryServer,
    token_registry: RegistryServer,
    base_registry: str,
) -> Iterator[Scenarios]:
    setting = Setting(act, scratch, auth_registry.address, token_registry.address, base_registry, base_registry)
    with FaultProxy(auth_registry.address) as proxy:

        def stale_image(chain: Chain) -> dict[str, str]:
            # Another commit whose sha starts like this one's: its image holds the same immutable tag.
            other = chain.sha[:7] + ("0" if chain.sha[7] != "0" else "1") + chain.sha[8:]
            context = scratch / f"stale-context-{chain.image.rsplit('-', 1)[1]}"
            context.mkdir()
            (context / "Dockerfile").write_text('FROM scratch\nLABEL stale="yes"\nCMD ["stale"]\n')
            run = run_buildonce(
                "build",
                scratch / f"stale-{chain.sha7}",
                event_name="pull_request",
                payload=pull_request(other),
                env={"GITHUB_SHA": other, "GITHUB_REF": f"refs/pull/{PR_NUMBER}/merge"},
                inputs={
                    "images": f"{chain.registry}/{chain.image}",
                    "context": str(context),
                    "registry": chain.registry,
                    "username": TEST_USER,
                    "password": TEST_PASSWORD,
                    "artifact": "false",
                },
            )
            assert run.code == 0, run.log
            return {"digest": run.outputs["digest"], "commit": other}

        runs = Scenarios(
            {
                "queue": lambda: merge_queue_chain(setting),
                "squash": lambda: squash_chain(setting),
                "pull_request": lambda: pull_request_chain(setting, proxy),
                "fork": lambda: fork_chain(setting),
                "default_branch": lambda: default_branch_chain(setting),
                "feature_branch": lambda: feature_branch_chain(setting),
                "fork_workflow": lambda: fork_workflow_chain(setting),
                "metadata": lambda: metadata_chain(setting),
                "native_legs": lambda: native_legs_chain(setting),
                "checks": lambda: checks_chain(setting),
                "stale": lambda: stale_tag_chain(setting, stale_image),
            }
        )
        try:
            yield runs
        finally:
            runs.close()


# --- helpers ------------------------------------------------------------------------------------------------


def assert_succeeded(run: ActRun, *jobs: str) -> None:
    for job in jobs:
        assert run.result(job) == "success", f"{job}: {run.describe()}"
        for leg in run.legs(job):
            assert leg.result == "success", f"{job} {leg.matrix}: {run.describe()}"


def reader(chain: Chain) -> RegistryReader:
    return RegistryReader(chain.registry, TEST_USER, TEST_PASSWORD)


def served(chain: Chain, tag: str) -> str | None:
    return reader(chain).digest_of(chain.image, tag)


def registry_tags(chain: Chain) -> list[str]:
    """The repository's tags, less the build key's lookup tags (``lookup_tags``)."""
    return [tag for tag in reader(chain).tags(chain.image) if key_of_tag(tag) is None]


def lookup_tags(chain: Chain) -> list[str]:
    return [tag for tag in reader(chain).tags(chain.image) if key_of_tag(tag) is not None]


def stored_artifact(run: ActRun, name: str) -> list[str]:
    """The files of artifact ``name`` as act's server stored them (the zip upload-artifact made)."""
    archive = run.artifacts / name / f"{name}.zip"
    assert archive.is_file(), f"no artifact {name} in {run.artifact_names()}"
    with zipfile.ZipFile(archive) as zipped:
        return sorted(zipped.namelist())


def summary(run: ActRun, job: str) -> str:
    return "\n".join(text for leg in run.legs(job) for text in leg.summaries)


# --- pull request, re-run, workflow_run, registry down --------------------------------------------------------


def test_pull_request_builds_once_and_every_test_job_pulls_that_digest(scenarios: Scenarios) -> None:
    chain = scenarios["pull_request"]
    run = chain.runs["pull_request"]
    assert_succeeded(run, "build", "test")
    assert len(run.legs("test")) == 3
    tag = f"pr-{PR_NUMBER}-{chain.sha7}"
    assert registry_tags(chain) == [tag]
    digest = served(chain, tag)
    assert digest is not None
    # The checkout is a git work tree, so the image has a build key, and is found by it.
    (lookup,) = lookup_tags(chain)
    assert served(chain, lookup) == digest
    assert run.outputs("build") == {"artifact-name": "widget-image"}
    assert f"built and pushed `{chain.registry}/{chain.image}@{digest}`" in summary(run, "build")
    for leg in run.legs("test"):
        assert f"Testing {chain.registry}/{chain.image}@{digest} (from the registry)" in leg.log
        assert f"consumed `{chain.registry}/{chain.image}@{digest}`" in "\n".join(leg.summaries)
    # Saved for the workflow_run, under the fixed name the workflow gives it.
    assert stored_artifact(run, "widget-image") == ["widget-image.tar", "widget-image.tar.sha256"]


def test_a_re_run_of_the_same_commit_reuses_the_image(scenarios: Scenarios) -> None:
    chain = scenarios["pull_request"]
    first, again = chain.runs["pull_request"], chain.runs["rerun"]
    assert_succeeded(again, "build", "test")
    tag = f"pr-{PR_NUMBER}-{chain.sha7}"
    build = again.only("build")
    assert any("Image reused" in line for line in build.lines), build.log
    # The build runs beside the registry check; a cached one can finish first and is then thrown away.
    # Either way nothing new reaches the registry.
    assert not any("Pushed " in line and "(sha256:" in line for line in build.lines), build.log
    assert registry_tags(chain) == [tag]
    digest = served(chain, tag)
    assert digest is not None
    assert digest in summary(first, "build")
    assert digest in summary(again, "build")


def test_workflow_run_tests_the_image_the_pull_request_built(scenarios: Scenarios) -> None:
    chain = scenarios["pull_request"]
    run = chain.runs["workflow_run"]
    assert_succeeded(run, "test")
    digest = served(chain, f"pr-{PR_NUMBER}-{chain.sha7}")
    assert f"Testing {chain.registry}/{chain.image}@{digest} (from the registry)" in run.only("test").log


def test_registry_down_for_the_consume_job_falls_back_to_the_artifact(scenarios: Scenarios) -> None:
    chain = scenarios["pull_request"]
    run = chain.runs["registry_down"]
    assert_succeeded(run, "test")
    test = run.only("test")
    assert "(from the artifact)" in test.log, test.log
    assert "Source | artifact" in summary(run, "test")
    # The download step ran on the triggering run's artifact (run-id), not this run's (it has none).
    assert test.steps.get("Main Download the image artifact") == "success", test.steps
    assert run.artifact_names() == []


# --- a fork's pull request -----------------------------------------------------------------------------------


def test_fork_pull_request_pushes_nothing_and_tests_the_artifact(scenarios: Scenarios) -> None:
    chain = scenarios["fork"]
    run = chain.runs["pull_request"]
    assert_succeeded(run, "build", "test")
    assert registry_tags(chain) == []
    assert stored_artifact(run, "widget-image") == ["widget-image.tar", "widget-image.tar.sha256"]
    for leg in run.legs("test"):
        assert f"{chain.image}:pr-{PR_NUMBER}-{chain.sha7} (from the artifact)" in leg.log, leg.log
        assert leg.steps.get("Main Download the image artifact") == "success"


def test_workflow_run_after_a_fork_loads_the_triggering_run_s_artifact(scenarios: Scenarios) -> None:
    chain = scenarios["fork"]
    run = chain.runs["workflow_run"]
    assert_succeeded(run, "test")
    assert f"{chain.image}:pr-{PR_NUMBER}-{chain.sha7} (from the artifact)" in run.only("test").log
    assert "Source | artifact" in summary(run, "test")


def test_fork_pull_request_workflow(scenarios: Scenarios) -> None:
    chain = scenarios["fork_workflow"]
    run = chain.runs["pull_request"]
    assert_succeeded(run, "build", "test")
    assert registry_tags(chain) == []
    name = run.outputs("build")["artifact-name"]
    assert name == f"widget-{chain.image.split('widget-', 1)[1]}-pr-{PR_NUMBER}-{chain.sha7}"
    assert stored_artifact(run, name) == [f"{name}.tar.zst", f"{name}.tar.zst.sha256"]
    assert len(run.legs("test")) == 2
    for leg in run.legs("test"):
        assert leg.steps.get(f"Main Run the {leg.matrix['suite']} tests") == "success", leg.steps
        assert "Source | artifact" in "\n".join(leg.summaries)


# --- branches and tags ---------------------------------------------------------------------------------------


def test_feature_branch_push(scenarios: Scenarios) -> None:
    chain = scenarios["feature_branch"]
    run = chain.runs["push"]
    assert_succeeded(run, "build", "test")
    tag = f"feature-login-2-{chain.sha7}"
    assert registry_tags(chain) == [tag]
    outputs = run.outputs("build")
    assert outputs["digest"] == served(chain, tag)
    assert f"consumed `{chain.registry}/{chain.image}@{outputs['digest']}`" in summary(run, "test")
    assert outputs["artifact-name"] in run.artifact_names()


def test_push_to_main_builds_both_platforms(scenarios: Scenarios) -> None:
    chain = scenarios["default_branch"]
    run = chain.runs["push_main"]
    assert_succeeded(run, "build", "scan")
    digest = run.outputs("build")["digest"]
    # (The release tag's run follows in the same repository and adds 1.2.3, 1.2 and 1.)
    assert {"latest", f"sha-{chain.sha7}"} <= set(registry_tags(chain))
    assert served(chain, "latest") == served(chain, f"sha-{chain.sha7}") == digest
    assert f"pushed `{chain.registry}/{chain.image}@{digest}`" in summary(run, "build")
    assert reader(chain).platforms(chain.image, digest) == ["linux/amd64", "linux/arm64"]
    assert f"consumed `{chain.registry}/{chain.image}@{digest}`" in summary(run, "scan")
    assert run.artifact_names() == []


def test_native_legs_merge_into_one_index_that_each_platform_s_test_pulls(scenarios: Scenarios) -> None:
    chain = scenarios["native_legs"]
    run = chain.runs["push_main"]
    assert_succeeded(run, "plan", "build", "merge", "test")
    assert sorted(leg.matrix["platform"] for leg in run.legs("build")) == ["linux/amd64", "linux/arm64"]
    digest = run.outputs("merge")["digest"]
    assert served(chain, "latest") == served(chain, f"sha-{chain.sha7}") == digest
    assert sorted(registry_tags(chain)) == ["latest", f"sha-{chain.sha7}"]
    assert reader(chain).platforms(chain.image, digest) == ["linux/amd64", "linux/arm64"]
    # Each leg's artifact, named after the immutable tag and its platform; no image artifact.
    assert sorted(run.artifact_names()) == [
        f"buildonce-leg-sha-{chain.sha7}-linux-{arch}" for arch in ("amd64", "arm64")
    ]
    assert f"merged and pushed `{chain.registry}/{chain.image}@{digest}`" in summary(run, "merge")
    for leg in run.legs("test"):
        assert any(f"consumed `{chain.registry}/{chain.image}@{digest}`" in text for text in leg.summaries), leg.matrix


def test_release_tag_on_a_built_commit_adds_its_tags_to_that_image(scenarios: Scenarios) -> None:
    chain = scenarios["default_branch"]
    main, release = chain.runs["push_main"], chain.runs["release_tag"]
    assert_succeeded(release, "build", "scan")
    digest = main.outputs("build")["digest"]
    assert release.outputs("build")["digest"] == digest
    assert any("Image reused" in line for line in release.only("build").lines)
    assert registry_tags(chain) == ["1", "1.2", "1.2.3", "latest", f"sha-{chain.sha7}"]
    for tag in ("1", "1.2", "1.2.3", f"sha-{chain.sha7}"):
        assert served(chain, tag) == digest, tag


def test_metadata_action_tags_are_pushed_with_the_immutable_tag(scenarios: Scenarios) -> None:
    chain = scenarios["metadata"]
    main, release = chain.runs["push_main"], chain.runs["release_tag"]
    assert_succeeded(main, "build")
    assert_succeeded(release, "build")
    digest = served(chain, f"sha-{chain.sha7}")
    assert digest is not None
    assert {"main", f"sha-{chain.sha7}", "1.2.3", "1.2"} <= set(registry_tags(chain))
    for tag in ("main", "1.2.3", "1.2"):
        assert served(chain, tag) == digest, tag
    labels = reader(chain).labels(chain.image, digest)
    assert labels
    assert all(image["org.opencontainers.image.vendor"] == "Acme" for image in labels)
    assert f"Pushed {digest} as:" in main.only("build").log


# --- failure paths and the artifact source -------------------------------------------------------------------


def test_source_artifact_loads_the_download(scenarios: Scenarios) -> None:
    # The consume fallback's regression test: act sets INPUT_ARTIFACT-PATH (empty) in every step of the
    # consume action, which outweighed the downloaded tar until consume.sh handed it over as a flag.
    run = scenarios["checks"].runs["push"]
    assert_succeeded(run, "build", "from-artifact")
    job = run.only("from-artifact")
    assert "(from the artifact)" in job.log, job.log
    assert job.steps.get("Main Consume this commit's image from the registry") is None, job.steps
    assert "checks-image" in run.artifact_names()


@pytest.mark.parametrize(
    ("job", "input_name", "later_steps"),
    [
        ("bad-build-input", "sha-length", ["Main Upload the image artifact"]),
        (
            "bad-consume-input",
            "source",
            ["Main Download the image artifact", "Main Consume this commit's image from the artifact"],
        ),
    ],
)
def test_a_bad_input_fails_the_job_before_any_later_step(
    scenarios: Scenarios, job: str, input_name: str, later_steps: list[str]
) -> None:
    run = scenarios["checks"].runs["push"]
    assert run.result(job) == "failure", run.describe()
    leg = run.only(job)
    errors = [error for error in leg.errors() if f"input '{input_name}'" in error]
    assert len(errors) == 1, leg.log
    for step in later_steps:
        assert step not in leg.steps, leg.steps


def test_inputs_are_never_shell_text(scenarios: Scenarios) -> None:
    run = scenarios["checks"].runs["push"]
    assert run.only("build").steps.get("Main No input ran as a command") == "success", run.describe()


def test_a_failed_step_act_logged_no_line_of_is_told_from_one_it_did() -> None:
    step = "Main Consume this commit's image from the artifact"
    lost = ["⭐ Run Main Check Docker", "  ✅  Success - Main Check Docker [13ms]", f"⭐ Run {step}"]
    lost.append(f"  ❌  Failure - {step} [4.2ms]")
    told = [*lost[:3], "  ❓  ::error title=buildonce::the image has to come from the artifact", lost[3]]
    passed = [*lost[:3], f"  ✅  Success - {step} [4.2ms]"]
    assert JobRun("j", {}, lines=lost).unheard_failures() == [step]
    assert JobRun("j", {}, lines=told).unheard_failures() == []
    assert JobRun("j", {}, lines=passed).unheard_failures() == []


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("artifact-missing", "its download failed"),
        ("artifact-without-image", "holds no .tar, .tar.gz or .tar.zst file"),
    ],
)
def test_a_needed_artifact_that_does_not_come_is_one_clear_error(scenarios: Scenarios, job: str, message: str) -> None:
    run = scenarios["checks"].runs["push"]
    assert run.result(job) == "failure", run.describe()
    leg = run.only(job)
    assert leg.steps.get("Main Consume this commit's image from the registry") == "success", leg.steps
    assert leg.steps.get("Main Consume this commit's image from the artifact") == "failure", leg.steps
    assert not leg.unheard_failures(), leg.log
    # One error from buildonce (the download action may add its own).
    ours = [error for error in leg.errors() if error.startswith(" title=buildonce::")]
    assert len(ours) == 1, leg.log  # the whole log when not: a failure here is otherwise told by no line
    (error,) = ours
    assert "the image has to come from the artifact" in error
    assert message in error
    # The name's line break was escaped: it started no workflow command of its own.
    assert not any(line.lstrip(" ❓").startswith("::notice::100%") for line in leg.lines), leg.log


def test_source_registry_never_downloads(scenarios: Scenarios) -> None:
    run = scenarios["checks"].runs["push"]
    assert run.result("registry-only") == "failure", run.describe()
    leg = run.only("registry-only")
    assert leg.steps.get("Main Consume this commit's image from the registry") == "failure", leg.steps
    assert "Main Download the image artifact" not in leg.steps
    assert any("never-pushed" in error for error in leg.errors()), leg.log


def test_a_stale_tag_fails_the_build_naming_both_commits(scenarios: Scenarios) -> None:
    chain = scenarios["stale"]
    run = chain.runs["pull_request"]
    assert run.result("build") == "failure", run.describe()
    assert run.result("test") == "skipped"
    errors = run.only("build").errors()
    assert any(chain.sha in error and chain.notes["commit"] in error for error in errors), errors
    # The tag still holds the other commit's image.
    assert served(chain, f"pr-{PR_NUMBER}-{chain.sha7}") == chain.notes["digest"]


def test_the_report_lists_every_job(scenarios: Scenarios) -> None:
    run = scenarios["feature_branch"].runs["push"]
    assert set(run.needs) == {"build", "test"}
    assert json.dumps(run.needs)


# --- build once per content: the merge queue and a squash merge -------------------------------------------------


def test_the_merge_queue_image_ships_on_main_without_a_build(scenarios: Scenarios) -> None:
    chain = scenarios["queue"]
    queued, pushed = chain.runs["merge_group"], chain.runs["push_main"]
    assert_succeeded(queued, "build")
    assert_succeeded(pushed, "build")
    digest = queued.outputs("build")["digest"]
    assert digest
    assert queued.outputs("build")["build-key"]
    outputs = pushed.outputs("build")
    assert outputs["digest"] == digest
    assert outputs["reused"] == "true"
    assert outputs["promoted-from"] == ""
    assert outputs["imageid"] == ""
    assert "Built sha256" not in pushed.only("build").log
    assert served(chain, "latest") == digest
    assert served(chain, f"sha-{chain.sha7}") == digest


def test_a_squash_commit_of_the_tested_tree_is_promoted(scenarios: Scenarios) -> None:
    chain = scenarios["squash"]
    tested, pushed = chain.runs["pull_request"], chain.runs["push_main"]
    assert_succeeded(tested, "build")
    assert_succeeded(pushed, "build")
    tested_digest = tested.outputs("build")["digest"]
    outputs = pushed.outputs("build")
    assert outputs["promoted-from"] == tested_digest
    assert outputs["build-key"] == tested.outputs("build")["build-key"]
    assert outputs["digest"] not in ("", tested_digest)
    assert outputs["imageid"] == ""
    assert "Built sha256" not in pushed.only("build").log
    squash = chain.notes["squash"]
    assert served(chain, f"sha-{squash[:7]}") == outputs["digest"]
    assert served(chain, "latest") == outputs["digest"]
    assert "promoted" in summary(pushed, "build")
