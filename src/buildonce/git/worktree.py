"""The git object ids of a build's inputs in a checked-out work tree, asked of git as argument lists.

The ids are those of the commit checked out (``HEAD``); they stand for the files only when git holds every
file as it is there. A path with changes git does not hold (modified, untracked, or ignored files in the
context) gives no ids at all: the build key must never claim content it did not see.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_SECONDS = 20


@dataclass(frozen=True)
class ContentIds:
    context_tree: str
    dockerfile: str
    """``context:<path inside the context>``, or ``blob:<id>`` for a Dockerfile outside it."""
    dockerignore: str
    """The blob id of ``<Dockerfile>.dockerignore`` outside the context, or empty."""


@dataclass(frozen=True)
class NoIds:
    reason: str


class _GitError(Exception):
    pass


def _git(top: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(top), *args],
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise _GitError("git is not installed on this runner") from None
    except subprocess.TimeoutExpired:
        raise _GitError(f"git {args[0]} did not answer within {GIT_SECONDS} s") from None
    if result.returncode != 0:
        raise _GitError(f"git {args[0]} failed: {(result.stderr or result.stdout).strip()[:300]}")
    return result.stdout


def _object(top: Path, path: str, kind: str) -> str:
    """The id of the ``kind`` (tree or blob) at ``path`` in HEAD's tree; the root tree for an empty path."""
    if not path:
        return _git(top, "rev-parse", "--verify", "HEAD^{tree}").strip()
    # One entry: "<mode> <type> <id>\t<path>"; -z keeps any path as it is.
    listed = _git(top, "ls-tree", "-z", "--full-tree", "HEAD", "--", path).split("\0")[0]
    fields = listed.partition("\t")[0].split()
    if len(fields) != 3 or fields[1] != kind:
        raise _GitError(f"HEAD has no {kind} at {path!r}")
    return fields[2]


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def content_ids(cwd: Path, context: str, file: str) -> ContentIds | NoIds:
    """The ids of the context's tree and, outside it, of the Dockerfile (and its own ignore file)."""
    try:
        top_text = _git(cwd, "rev-parse", "--show-toplevel").strip()
    except _GitError as exc:
        return NoIds(f"the working directory is not in a git work tree ({exc})")
    top = Path(top_text).resolve()
    context_dir = (cwd / context).resolve()
    dockerfile = (cwd / file).resolve() if file else context_dir / "Dockerfile"
    for path, name in ((context_dir, "the build context"), (dockerfile, "the Dockerfile")):
        if not _inside(path, top):
            return NoIds(f"{name} ({path}) is outside the git work tree {top}")
    paths = [context_dir]
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not _inside(dockerfile, context_dir):
        paths.append(dockerfile)
        if ignore.exists():
            paths.append(ignore)
    relative = [path.relative_to(top).as_posix() for path in paths]
    try:
        changed = _git(
            top, "status", "--porcelain", "-z", "--ignored=matching", "--untracked-files=all", "--", *(relative or ".")
        )
        if changed:
            first = changed.split("\0", 1)[0][3:]
            return NoIds(f"git does not hold every file of the build as it is in the work tree (e.g. {first!r})")
        tree = _object(top, "" if relative[0] == "." else relative[0], "tree")
        if _inside(dockerfile, context_dir):
            named = f"context:{dockerfile.relative_to(context_dir).as_posix()}"
            ignored = ""
        else:
            named = f"blob:{_object(top, relative[1], 'blob')}"
            ignored = _object(top, relative[2], "blob") if len(relative) > 2 else ""
    except _GitError as exc:
        return NoIds(f"git cannot name the build's files at HEAD ({exc})")
    return ContentIds(tree, named, ignored)
