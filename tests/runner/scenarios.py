"""The runs of the runner suite: each example workflow under the events that drive it, and the failure paths.

A scenario is a chain of act runs that depend on each other (a re-run after the first run, a workflow_run
after the pull request run whose artifact it downloads); independent chains run at the same time, so the
suite takes about as long as its longest chain. Each act run has its own run id, and so its own folder on
act's artifact server, which all runs share, as GitHub's artifact service is shared by a repository's runs.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actrun import Act, ActRun, git_repo
from faultproxy import FaultProxy
from rewrites import EXAMPLES, ROOT, RUNNER_WORKFLOWS, rewrite_workflow

CONCURRENT_CHAINS = 3
"""Chains run at once: act itself runs the jobs of one workflow two at a time on this 2-core machine."""

REPOSITORY: dict[str, Any] = {
    "full_name": "acme/widget",
    "name": "widget",
    "owner": {"login": "acme"},
    "html_url": "https://github.com/acme/widget",
    "default_branch": "main",
}
PR_NUMBER = 123
FEATURE_BRANCH = "feature/Login_2"


def pull_request(sha: str, *, fork: bool = False) -> dict[str, Any]:
    head_repo = {"full_name": "octofork/widget", "fork": True} if fork else {"full_name": "acme/widget", "fork": False}
    return {
        "action": "synchronize",
        "number": PR_NUMBER,
        "pull_request": {
            "number": PR_NUMBER,
            "title": "Log in faster",
            "head": {"ref": "feature/login", "sha": sha, "repo": head_repo},
            "base": {"ref": "main", "sha": "4" * 40, "repo": {"full_name": "acme/widget"}},
        },
        "sender": {"login": "octofork" if fork else "octocat"},
        "repository": REPOSITORY,
    }


def push(sha: str, ref: str) -> dict[str, Any]:
    return {"ref": ref, "before": "0" * 40, "after": sha, "created": False, "repository": REPOSITORY}


def workflow_run(sha: str, run_id: int, *, fork: bool = False) -> dict[str, Any]:
    pulls = (
        [] if fork else [{"number": PR_NUMBER, "head": {"ref": "feature/login", "sha": sha}, "base": {"ref": "main"}}]
    )
    return {
        "action": "completed",
        "workflow_run": {
            "id": run_id,
            "name": "Pull request",
            "event": "pull_request",
            "status": "completed",
            "conclusion": "success",
            "head_branch": "feature/login",
            "head_sha": sha,
            "head_repository": {"full_name": "octofork/widget" if fork else "acme/widget"},
            "pull_requests": pulls,
        },
        "repository": REPOSITORY,
    }


@dataclass
class Chain:
    """One scenario's repository and the runs made in it, by name."""

    name: str
    registry: str
    image: str
    sha: str
    repo: Path
    runs: dict[str, ActRun] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    """What a scenario set up before its runs (the stale image's digest and commit)."""

    @property
    def sha7(self) -> str:
        return self.sha[:7]


@dataclass
class Setting:
    act: Act
    scratch: Path
    auth_registry: str
    token_registry: str
    base_registry: str
    open_registry: str
    """A registry without logins, as a public image on ghcr.io is to anonymous pulls."""
    run_ids: list[int] = field(default_factory=lambda: [100])

    def next_run_id(self) -> int:
        self.run_ids[0] += 1
        return self.run_ids[0]

    def chain(self, name: str, registry: str, workflows: list[Path], extra: dict[str, str] | None = None) -> Chain:
        suffix = f"{name}-{uuid.uuid4().hex[:6]}"
        files = dict(extra or {})
        files |= {
            f".github/workflows/{path.name}": rewrite_workflow(
                path.read_text(), registry=registry, image_suffix=suffix, base_registry=self.base_registry
            )
            for path in workflows
        }
        repo = self.scratch / f"repo-{suffix}"
        sha = git_repo(repo, files, {"examples/app": ROOT / "examples" / "app"})
        return Chain(name, registry, f"acme/widget-{suffix}", sha, repo)

    def run(self, chain: Chain, key: str, workflow: str, event_name: str, event: dict[str, Any]) -> ActRun:
        result = self.act.run(chain.repo, workflow, event_name, event, run_id=self.next_run_id())
        chain.runs[key] = result
        return result

    def heard(self, chain: Chain, key: str, workflow: str, event_name: str, event: dict[str, Any], job: str) -> None:
        """Re-run ``job`` alone (a job that needs none and changes nothing) while act lost the output of a step
        it failed at (``JobRun.unheard_failures``), at most twice: its errors are what the tests read."""
        run = chain.runs[key]
        for _ in range(2):
            if not run.only(job).unheard_failures():
                return
            again = self.act.run(chain.repo, workflow, event_name, event, run_id=self.next_run_id(), jobs=job)
            run.replace_leg(again.only(job))


def example(name: str) -> Path:
    return EXAMPLES / name


def pull_request_chain(setting: Setting, proxy: FaultProxy) -> Chain:
    """A same-repository pull request, its re-run, and the downstream workflow_run with the registry up and
    then down (the artifact of the pull request's run is the fallback)."""
    chain = setting.chain("pr", proxy.address, [example("pull-request.yml"), example("downstream-workflow-run.yml")])
    first = setting.run(chain, "pull_request", "pull-request.yml", "pull_request", pull_request(chain.sha))
    setting.run(chain, "rerun", "pull-request.yml", "pull_request", pull_request(chain.sha))
    run_id = int(first.artifacts.name)
    setting.run(chain, "workflow_run", "downstream-workflow-run.yml", "workflow_run", workflow_run(chain.sha, run_id))
    proxy.set_down(True)
    try:
        setting.run(
            chain, "registry_down", "downstream-workflow-run.yml", "workflow_run", workflow_run(chain.sha, run_id)
        )
    finally:
        proxy.set_down(False)
    return chain


def fork_chain(setting: Setting) -> Chain:
    """A fork's pull request (nothing pushed), then the downstream workflow_run on its artifact."""
    chain = setting.chain(
        "fork", setting.auth_registry, [example("pull-request.yml"), example("downstream-workflow-run.yml")]
    )
    first = setting.run(chain, "pull_request", "pull-request.yml", "pull_request", pull_request(chain.sha, fork=True))
    event = workflow_run(chain.sha, int(first.artifacts.name), fork=True)
    setting.run(chain, "workflow_run", "downstream-workflow-run.yml", "workflow_run", event)
    return chain


def fork_workflow_chain(setting: Setting) -> Chain:
    # The workflow logs in nowhere: its test jobs look the image up anonymously (and find no such tag).
    chain = setting.chain("forkwf", setting.open_registry, [example("fork-pull-request.yml")])
    setting.run(chain, "pull_request", "fork-pull-request.yml", "pull_request", pull_request(chain.sha, fork=True))
    return chain


def feature_branch_chain(setting: Setting) -> Chain:
    chain = setting.chain("feature", setting.auth_registry, [example("feature-branch.yml")])
    setting.run(chain, "push", "feature-branch.yml", "push", push(chain.sha, f"refs/heads/{FEATURE_BRANCH}"))
    return chain


def default_branch_chain(setting: Setting) -> Chain:
    """A push to main, then the release tag on the same commit (reused), against a token registry."""
    chain = setting.chain("default", setting.token_registry, [example("default-branch.yml")])
    setting.run(chain, "push_main", "default-branch.yml", "push", push(chain.sha, "refs/heads/main"))
    setting.run(chain, "release_tag", "default-branch.yml", "push", push(chain.sha, "refs/tags/v1.2.3"))
    return chain


def native_legs_chain(setting: Setting) -> Chain:
    """native-legs.yml on a push to main: a leg per platform, the merge, a test job per platform."""
    chain = setting.chain("legs", setting.auth_registry, [example("native-legs.yml")])
    setting.run(chain, "push_main", "native-legs.yml", "push", push(chain.sha, "refs/heads/main"))
    return chain


def metadata_chain(setting: Setting) -> Chain:
    chain = setting.chain("meta", setting.auth_registry, [example("metadata-action.yml")])
    setting.run(chain, "push_main", "metadata-action.yml", "push", push(chain.sha, "refs/heads/main"))
    setting.run(chain, "release_tag", "metadata-action.yml", "push", push(chain.sha, "refs/tags/v1.2.3"))
    return chain


def checks_chain(setting: Setting) -> Chain:
    """tests/runner/workflows/checks.yml: source artifact, bad inputs, artifacts that do not come."""
    # A checkout may hold a directory named buildonce: it must not shadow the installed package.
    decoy = {
        "buildonce/__init__.py": "",
        "buildonce/__main__.py": "raise SystemExit('the workspace shadowed the installed buildonce')\n",
    }
    chain = setting.chain("checks", setting.auth_registry, [RUNNER_WORKFLOWS / "checks.yml"], decoy)
    event = push(chain.sha, "refs/heads/checks")
    setting.run(chain, "push", "checks.yml", "push", event)
    # The jobs whose errors the tests read: each fails at once, needing no other job.
    for job in ("bad-build-input", "bad-consume-input", "artifact-missing", "artifact-without-image", "registry-only"):
        setting.heard(chain, "push", "checks.yml", "push", event, job)
    return chain


def stale_tag_chain(setting: Setting, pre_push: Callable[[Chain], dict[str, str]]) -> Chain:
    """pull-request.yml where the immutable tag already holds another commit's image."""
    chain = setting.chain("stale", setting.auth_registry, [example("pull-request.yml")])
    chain.notes.update(pre_push(chain))
    setting.run(chain, "pull_request", "pull-request.yml", "pull_request", pull_request(chain.sha))
    return chain


def merge_group(sha: str) -> dict[str, Any]:
    base = "4" * 40
    return {
        "action": "checks_requested",
        "merge_group": {
            "head_sha": sha,
            "head_ref": f"refs/heads/gh-readonly-queue/main/pr-{PR_NUMBER}-{base}",
            "base_sha": base,
            "base_ref": "refs/heads/main",
            "head_commit": {"id": sha, "timestamp": "2026-03-07T09:30:00Z"},
        },
        "repository": REPOSITORY,
    }


def add_commit(repo: Path, files: dict[str, str]) -> str:
    """Commit ``files`` on top of the repository's HEAD; returns the new commit's sha."""
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=Widget Dev", "-c", "user.email=dev@widget.test"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "squash"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def merge_queue_chain(setting: Setting) -> Chain:
    """The merge queue's build of a commit, then the push of that very commit to main."""
    chain = setting.chain("queue", setting.auth_registry, [RUNNER_WORKFLOWS / "promote.yml"])
    setting.run(chain, "merge_group", "promote.yml", "merge_group", merge_group(chain.sha))
    setting.run(chain, "push_main", "promote.yml", "push", push(chain.sha, "refs/heads/main"))
    return chain


def squash_chain(setting: Setting) -> Chain:
    """A pull request's build, then the push to main of a squash commit with the same build context."""
    chain = setting.chain("squash", setting.auth_registry, [RUNNER_WORKFLOWS / "promote.yml"])
    setting.run(chain, "pull_request", "promote.yml", "pull_request", pull_request(chain.sha))
    squash = add_commit(chain.repo, {"docs/CHANGES.md": "Log in faster (#123)\n"})
    chain.notes["squash"] = squash
    setting.run(chain, "push_main", "promote.yml", "push", push(squash, "refs/heads/main"))
    return chain


class Scenarios:
    """Starts every chain at once (a bounded pool) and hands each test the chain it asks for."""

    def __init__(self, chains: dict[str, Callable[[], Chain]]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=CONCURRENT_CHAINS, thread_name_prefix="act")
        self._futures: dict[str, Future[Chain]] = {name: self._pool.submit(start) for name, start in chains.items()}

    def __getitem__(self, name: str) -> Chain:
        return self._futures[name].result(timeout=900)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
