"""The git ids of a build's inputs, read from real git repositories in temporary directories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from buildonce.git.worktree import ContentIds, NoIds, content_ids


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def commit(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "CI")
    commit(root, {"app/Dockerfile": "FROM scratch\n", "app/a.txt": "a", "docs/x.md": "x", "ci/Dockerfile": "FROM x\n"})
    return root


def ids(found: ContentIds | NoIds) -> ContentIds:
    assert isinstance(found, ContentIds), found
    return found


def test_the_context_tree_is_git_s_own_id_and_a_docs_commit_keeps_it(repo: Path) -> None:
    first = ids(content_ids(repo, "app", ""))
    assert first.context_tree == git(repo, "rev-parse", "HEAD:app")
    assert first.dockerfile == "context:Dockerfile"
    assert first.dockerignore == ""
    commit(repo, {"docs/x.md": "more docs"})
    assert ids(content_ids(repo, "app", "")) == first
    commit(repo, {"app/a.txt": "changed"})
    assert ids(content_ids(repo, "app", "")).context_tree != first.context_tree


def test_the_whole_work_tree_as_context_is_the_root_tree(repo: Path) -> None:
    (repo / ".gitignore").write_text("")
    commit(repo, {})
    found = ids(content_ids(repo / "app", "..", "Dockerfile"))
    assert found.context_tree == git(repo, "rev-parse", "HEAD^{tree}")
    assert found.dockerfile == "context:app/Dockerfile"


def test_a_dockerfile_outside_the_context_is_named_by_its_blob_with_its_ignore_file(repo: Path) -> None:
    found = ids(content_ids(repo, "app", "ci/Dockerfile"))
    assert found.dockerfile == "blob:" + git(repo, "rev-parse", "HEAD:ci/Dockerfile")
    commit(repo, {"ci/Dockerfile.dockerignore": "*.md\n"})
    again = ids(content_ids(repo, "app", "ci/Dockerfile"))
    assert again.dockerignore == git(repo, "rev-parse", "HEAD:ci/Dockerfile.dockerignore")
    assert again.context_tree == found.context_tree


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"app/a.txt": "edited, not committed"}, "app/a.txt"),
        ({"app/new.txt": "untracked"}, "app/new.txt"),
        ({"app/.gitignore": "*.log\n", "app/build.log": "ignored by git, sent to the build"}, "app/"),
    ],
)
def test_files_git_does_not_hold_give_no_ids(repo: Path, change: dict[str, str], named: str) -> None:
    if "app/.gitignore" in change:
        commit(repo, {"app/.gitignore": change.pop("app/.gitignore")})
    for name, text in change.items():
        (repo / name).write_text(text)
    found = content_ids(repo, "app", "")
    assert isinstance(found, NoIds)
    assert named in found.reason
    # A change outside the context and the Dockerfile does not matter.
    assert isinstance(content_ids(repo, "docs", "ci/Dockerfile"), ContentIds)


def test_a_changed_dockerfile_outside_the_context_gives_no_ids(repo: Path) -> None:
    (repo / "ci" / "Dockerfile").write_text("FROM y\n")
    found = content_ids(repo, "app", "ci/Dockerfile")
    assert isinstance(found, NoIds)
    assert "ci/Dockerfile" in found.reason


def test_no_work_tree_or_a_context_outside_it_gives_no_ids(repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not in a git work tree" in ids_reason(content_ids(plain, ".", ""))
    assert "outside the git work tree" in ids_reason(content_ids(repo, str(plain), ""))


def test_a_path_that_is_no_tree_at_head_gives_no_ids(repo: Path) -> None:
    (repo / "fresh").mkdir()
    (repo / ".git" / "info" / "exclude").write_text("")
    assert "HEAD has no tree" in ids_reason(content_ids(repo, "fresh", "app/Dockerfile"))


def ids_reason(found: ContentIds | NoIds) -> str:
    assert isinstance(found, NoIds), found
    return found.reason
