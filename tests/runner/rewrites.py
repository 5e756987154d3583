"""Everything the runner suite changes in the example workflows, and every action it replaces, in one place.

The workflows in examples/workflows/ run as they are, except for what cannot exist on this machine:

- the registry: ``ghcr.io`` becomes a Distribution registry on 127.0.0.1 (htpasswd or token logins, so the
  login path runs with the workflow's own ``username``/``password`` inputs: the actor and the
  ``GITHUB_TOKEN`` secret are that registry's user and password), and the image name gets a suffix so that
  the runs of one session never share a repository;
- the base image: ``docker.io/library/busybox:1.37`` becomes a busybox image on another loopback registry,
  with a linux/amd64 and a linux/arm64 manifest (both hold Debian's amd64 busybox-static: the example image
  runs no RUN step, so nothing of the arm64 half is executed while it is built);
- one job is appended, ``act-report``: it needs every other job, runs always, and writes ``toJSON(needs)`` to
  the file named by ``$BUILDONCE_ACT_REPORT``, so a test reads each job's result and outputs as later jobs see
  them.

Actions that need the internet resolve through act's ``--local-repository`` to folders in stand-ins/ (each
says in its action.yml what it does instead and why): docker/setup-qemu-action, docker/setup-buildx-action,
docker/metadata-action, and the actions/upload-artifact, actions/download-artifact, actions/cache,
sigstore/cosign-installer and actions/attest-build-provenance references pinned in action.yml and
consume/action.yml. ``buildonce/buildonce@v1`` resolves to a copy of this work tree's action files.
``actions/checkout`` is act's own: it copies the repository under test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "workflows"
STAND_INS = Path(__file__).resolve().parent / "stand-ins"
RUNNER_WORKFLOWS = Path(__file__).resolve().parent / "workflows"
ACTION_FILES = (
    ROOT / "action.yml",
    ROOT / "consume" / "action.yml",
    ROOT / "merge" / "action.yml",
    ROOT / "plan" / "action.yml",
)

REPORT_ENV = "BUILDONCE_ACT_REPORT"
REPORT_JOB = "act-report"

REGISTRY = "ghcr.io"
IMAGE = "ghcr.io/acme/widget"
BASE = "docker.io/library/busybox:1.37"
BASE_REPOSITORY = "library/busybox:1.37"

OWN_ACTION = "buildonce/buildonce"
CHECKOUT = "actions/checkout"

_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)", re.MULTILINE)


def rewrite_workflow(text: str, *, registry: str, image_suffix: str, base_registry: str) -> str:
    """The example workflow ``text`` as the suite runs it (see the module's docstring)."""
    out = text.replace(IMAGE, f"{registry}/acme/widget-{image_suffix}")
    out = out.replace(f"registry: {REGISTRY}", f"registry: {registry}")
    out = out.replace(BASE, f"{base_registry}/{BASE_REPOSITORY}")
    assert REGISTRY not in out, "a ghcr.io reference the suite does not rewrite"
    assert "docker.io" not in out, "a docker.io reference the suite does not rewrite"
    return append_report_job(out)


def append_report_job(text: str) -> str:
    workflow: dict[str, Any] = yaml.safe_load(text)
    jobs = list(workflow["jobs"])
    report = (
        f"  {REPORT_JOB}:\n"
        f"    needs: [{', '.join(jobs)}]\n"
        "    if: always()\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - env:\n"
        "          NEEDS: ${{ toJSON(needs) }}\n"
        f'        run: printf \'%s\' "$NEEDS" >"${REPORT_ENV}"\n'
    )
    out = text.rstrip("\n") + "\n" + report
    # jobs: must be the last top-level key for the appended text to land in it.
    assert list(yaml.safe_load(out)["jobs"]) == [*jobs, REPORT_JOB]
    return out


def action_references(paths: list[Path]) -> set[str]:
    return {match["ref"] for path in paths for match in _USES.finditer(path.read_text())}


def local_repositories(own_action: Path, workflows: list[Path]) -> dict[str, Path]:
    """``--local-repository`` mappings for every action the workflows and buildonce's actions use."""
    mapping: dict[str, Path] = {}
    for reference in sorted(action_references([*workflows, *ACTION_FILES])):
        name, _, ref = reference.partition("@")
        if name.startswith("./") or name.split("/")[:2] == CHECKOUT.split("/"):
            continue
        repository = "/".join(name.split("/")[:2])
        if repository == OWN_ACTION:
            mapping[f"{repository}@{ref}"] = own_action
            continue
        stand_in = STAND_INS / repository.split("/")[1]
        assert (stand_in / "action.yml").is_file(), f"{reference} needs the internet and has no stand-in"
        mapping[f"{repository}@{ref}"] = stand_in
    return mapping
