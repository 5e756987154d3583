"""``buildonce build`` with ``distribute: leg``: build one platform, push its manifests by digest, no tags.

The leg looks at the immutable tags first, as every build does: a tag holding another commit's image fails the
leg before anything is built, and one holding this commit's merged image that has this platform means there is
nothing to build. Otherwise the platform is built into an OCI layout (which any builder writes, for any
platform a ``FROM scratch`` stage or native ``RUN`` steps can build), and its image manifest and attestation
manifests are pushed by digest into every repository. The layout's own top-level index is never pushed: only
the merge composes the index, and only the merge tags.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildonce.commands import Invocation
from buildonce.commands.connect import open_registry, retry_policy
from buildonce.commands.publish import Publisher
from buildonce.docker.buildx import (
    build_command,
    check_paths,
    find_builder,
)
from buildonce.docker.buildx import run_build as run_buildx
from buildonce.docker.config import docker_config_with_login
from buildonce.errors import InputError, VerificationError
from buildonce.labels import Keys
from buildonce.layout import LayoutImage, read_layout
from buildonce.legs import Leg, artifact_name, config_platform, leg_of_index
from buildonce.oci import json_object
from buildonce.options import BuildOptions, PushVia
from buildonce.plan import Plan
from buildonce.platforms import matches
from buildonce.report import BuildReport

if TYPE_CHECKING:
    from buildonce.commands.publish import Existing
    from buildonce.github.workflow import Console
    from buildonce.registry.client import Registry
    from buildonce.retry import RetryPolicy


@dataclass(frozen=True)
class LegReport:
    plan: Plan
    leg: Leg
    reused: bool
    written: int
    path: Path

    def outputs(self) -> dict[str, str]:
        """A build's outputs, of the leg's platform manifest, and the leg itself."""
        build = BuildReport(plan=self.plan, digest=self.leg.digest, pushed=True, reused=self.reused, attempts=1)
        return {
            **build.outputs(),
            "leg": self.leg.to_json(),
            "leg-name": self.path.stem,
            "leg-path": str(self.path),
        }

    def summary(self) -> str:
        state = "reused" if self.reused else "built and pushed by digest"
        return (
            f"### buildonce leg: {self.leg.platform} {state}\n\n| | |\n|---|---|\n"
            f"| Platform | {self.leg.platform} |\n| Manifest | `{self.leg.digest}` |\n"
            f"| Attestations | {len(self.leg.attestations)} |\n| Written | {self.written} blob(s) and manifest(s) |\n"
            f"| Immutable tag | `{self.plan.immutable_tag}` (tagged by the merge) |\n"
        )


def the_platform(plan: Plan) -> str:
    if len(plan.platforms) != 1 or plan.platforms[0] == "local":
        named = ", ".join(plan.platforms) or "none"
        raise InputError(
            f"input 'platforms' names {named}, but a leg (distribute: leg) builds exactly one platform. Give each "
            "leg its own, e.g. platforms: ${{ matrix.platform }} from the plan's matrix output."
        )
    return plan.platforms[0]


def run_leg(call: Invocation, options: BuildOptions, plan: Plan, commit_epoch: int | None) -> None:
    console = call.console
    platform = the_platform(plan)
    if not plan.push.value:
        raise InputError(
            f"input 'distribute' is leg, but this build does not push ({plan.push.reason}): a leg hands its image "
            "to the merge through the registry. Use distribute: none for builds that are not pushed."
        )
    cwd = Path.cwd()
    check_paths(options, cwd)
    builder = find_builder(options.builder, call.env)
    # The layout is what every builder can write; the docker driver with the classic store cannot (and says so).
    from buildonce.commands.build import _containerd_store, choose_output

    output = choose_output(PushVia.LAYOUT, builder, lambda: _containerd_store(call.env), plan)
    policy = retry_policy(options.retry, console)
    registry = open_registry(options.login, call.env, policy)
    keys = Keys(options.plan.label_namespace)
    publisher = Publisher.for_plan(
        plan, console, registry, policy, keys, allow_overwrite=options.allow_overwrite, rebuild=options.rebuild
    )
    directory = _leg_dir(options, call.env)
    try:
        existing = None if options.rebuild else publisher.check_immutable_tags()
        leg = _reused(existing, plan, platform, registry=registry, policy=policy, console=console) if existing else None
        reused, written = leg is not None, 0
        if leg is None:
            with tempfile.TemporaryDirectory(prefix="buildonce-leg-", dir=call.env.get("RUNNER_TEMP") or None) as temp:
                scratch = Path(temp)
                layout = scratch / "layout"
                with docker_config_with_login(call.env, options.login) as build_env:
                    command = build_command(
                        options,
                        plan,
                        output=output,
                        metadata_file=scratch / "metadata.json",
                        iidfile=scratch / "iid",
                        layout_dir=layout,
                        source_date_epoch=commit_epoch,
                        env=build_env,
                    )
                    outcome = run_buildx(command, build_env, console, cwd)
                if outcome is None:
                    raise RuntimeError("a leg's build is never stopped")
                leg = leg_of_layout(read_layout(layout), layout, plan, platform)
                console.info(f"Built {platform} as {leg.digest} in {outcome.seconds:.1f} s")
                digests = [leg.digest, *(str(item["digest"]) for item in leg.attestations)]
                with console.group(f"Push by digest: {len(digests)} manifest(s) to {len(plan.images)} repository(ies)"):
                    written, _ = policy.call(
                        lambda: registry.push_by_digest(layout, plan.images, digests), "push the leg by digest"
                    )
                console.info(
                    f"Pushed {platform} by digest ({written} blob(s) and manifest(s) written, the rest were there)"
                )
    finally:
        registry.close()
    path = directory / f"{artifact_name(plan.immutable_tag, platform)}.json"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(leg.to_json() + "\n")
    report = LegReport(plan, leg, reused, written, path)
    console.info(f"leg: {leg.to_json()}")
    call.finish(report.outputs(), report.summary())


def leg_of_layout(image: LayoutImage, layout: Path, plan: Plan, platform: str) -> Leg:
    """The leg of what buildx wrote: the image manifest of ``platform`` and its attestations, its config
    checked to be of that platform."""
    images = tuple(str(name) for name in plan.images)
    top = image.top
    if top.is_index:
        leg = leg_of_index(
            top.json(), platform, commit=plan.subject.sha, immutable_tag=plan.immutable_tag, images=images
        )
        if leg is None:
            raise VerificationError(f"the build's layout {layout} holds no single image of {platform}.")
        manifest = next(child for child in image.children if child.digest == leg.digest)
    else:
        manifest = top
        leg = None
    config = _config_of(manifest.json(), layout)
    built = config_platform(config)
    if not matches(platform, config.get("os"), config.get("architecture"), config.get("variant")):
        raise VerificationError(f"the leg was to build {platform}, but buildx built {built or 'an unknown platform'}.")
    if leg is not None:
        return leg
    descriptor: dict[str, Any] = {"mediaType": top.media_type, "digest": top.digest, "size": len(top.raw)}
    parts = platform.split("/")
    descriptor["platform"] = {"os": parts[0], "architecture": parts[1], **({"variant": parts[2]} if parts[2:] else {})}
    return Leg(platform, plan.subject.sha, plan.immutable_tag, descriptor, (), images)


def _config_of(manifest: Mapping[str, Any], layout: Path) -> dict[str, Any]:
    config = manifest.get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(digest, str) or ":" not in digest:
        raise VerificationError(f"the build's layout {layout} holds a manifest without a config.")
    return json_object((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes())


def _reused(
    existing: Existing, plan: Plan, platform: str, *, registry: Registry, policy: RetryPolicy, console: Console
) -> Leg | None:
    """This platform's leg of the image the immutable tag already holds for this commit; None when that
    image has no such platform (then the leg is built, and the merge decides)."""
    own = plan.images[0]
    what = f"read {own.with_digest(existing.digest)}"
    top, _ = policy.call(lambda: registry.get_manifest(own, existing.digest), what)
    if top is None or not top.is_index:
        return None
    images = tuple(str(name) for name in plan.images)
    leg = leg_of_index(top.json(), platform, commit=plan.subject.sha, immutable_tag=plan.immutable_tag, images=images)
    if leg is not None:
        console.notice(
            f"{plan.immutable_tag} already holds {existing.digest}, this commit's image, with {platform} as "
            f"{leg.digest}: the leg is not built again. Set rebuild: true to build it again.",
            title="Leg reused",
        )
    return leg


def _leg_dir(options: BuildOptions, env: Mapping[str, str]) -> Path:
    if options.artifact_dir:
        return Path(options.artifact_dir)
    return Path(env.get("RUNNER_TEMP") or tempfile.gettempdir()) / "buildonce-legs"
