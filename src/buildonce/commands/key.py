"""A build's key: what it is built from, computed before buildx starts so that an image with the same key can
be promoted instead of built (``commands.promote``), and recorded in the image's labels when it is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from buildonce.buildkey import KeyMaterial, build_key, keyed_annotations, keyed_labels, reuse_for
from buildonce.docker.buildx import is_remote_context
from buildonce.git.worktree import NoIds, content_ids
from buildonce.labels import Keys
from buildonce.options import Reuse

if TYPE_CHECKING:
    from buildonce.github.workflow import Console
    from buildonce.options import BuildOptions
    from buildonce.plan import Plan


@dataclass(frozen=True)
class Keyed:
    """What reuse means for this run: the mode for its event, the options it implies (off builds as rebuild
    does), the plan with the key's label, and the key (or why there is none)."""

    reuse: Reuse
    options: BuildOptions
    plan: Plan
    key: str | None
    no_key: str = ""

    @property
    def looks_up(self) -> bool:
        """Whether to look the key up before buildx starts, so that an image found by it is never built."""
        return (
            bool(self.key) and self.reuse is Reuse.CONTENT and self.plan.push.value and not forces_build(self.options)
        )

    def why_built(self) -> str:
        if not self.key:
            return f"Built: there is no build key ({self.no_key})."
        if self.looks_up:
            return "Built: no image with this build key was found to promote."
        if forces_build(self.options):
            return "Built: rebuild, no-cache, pull or reuse: off is set, so no image is looked up by its key."
        if self.reuse is Reuse.COMMIT:
            return "Built: reuse is commit (the default for scheduled builds), so no image is looked up by its key."
        return "Built: nothing is pushed, so no image is looked up by its key."


def keyed(options: BuildOptions, plan: Plan, cwd: Path, output: str, console: Console) -> Keyed:
    reuse = reuse_for(options.reuse, plan.subject.kind)
    if reuse is Reuse.OFF:
        options = replace(options, rebuild=True)
    found = key_for(options, plan, cwd, output)
    if isinstance(found, NoIds):
        console.notice(f"No build key: {found.reason}. The image is built as usual.", title="buildonce")
        return Keyed(reuse, options, plan, None, found.reason)
    labels = {**plan.labels, Keys(options.plan.label_namespace).build_key: found}
    return Keyed(reuse, options, replace(plan, labels=dict(sorted(labels.items()))), found)


_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm/v7"}


def native_platform() -> str:
    """This machine's ``os/arch`` as Go names them. ``os.uname`` is what ``platform`` reads where there is one;
    ``platform`` itself costs its import, so it is asked only where there is none (Windows)."""
    if hasattr(os, "uname"):
        system, machine = os.uname().sysname.lower(), os.uname().machine.lower()
    else:
        import platform

        system, machine = platform.system().lower(), platform.machine().lower()
    return f"{system}/{_ARCHITECTURES.get(machine, machine)}"


def forces_build(options: BuildOptions) -> bool:
    """Options that ask for what the key cannot promise: a build from scratch or fresh base images."""
    return options.rebuild or options.no_cache or options.pull


def key_for(options: BuildOptions, plan: Plan, cwd: Path, output: str) -> str | NoIds:
    """This build's key, or why git cannot name its content."""
    keys = Keys(options.plan.label_namespace)
    if is_remote_context(options.context):
        return NoIds(f"the build context {options.context!r} is remote, so git here cannot name its content")
    ids = content_ids(cwd, options.context, options.file)
    if isinstance(ids, NoIds):
        return ids
    material = KeyMaterial(
        context_tree=ids.context_tree,
        dockerfile=ids.dockerfile,
        dockerignore=ids.dockerignore,
        build_args=options.build_args,
        secret_ids=tuple(secret.id for secret in options.secrets),
        target=options.target,
        platforms=plan.platforms,
        labels=keyed_labels(plan.labels, keys),
        annotations=keyed_annotations(plan.annotations, keys),
        options={
            "provenance": options.provenance,
            "sbom": options.sbom,
            "network": options.network,
            "output": output,
            # Without platforms the builder builds for its own, which is that of the machine it runs on.
            "native-platform": "" if plan.platforms else native_platform(),
        },
    )
    return build_key(material)
