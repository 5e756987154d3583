"""Stand-in for docker/metadata-action: the rules the example workflow uses, in the real action's output shape.

Tags: ``type=ref,event=branch`` (the branch, made tag-safe) and ``type=semver,pattern=...`` with
``{{version}}``, ``{{major}}`` and ``{{minor}}`` on a ``v1.2.3`` tag, plus ``latest`` for a release tag, as the
real action's default ``latest=auto`` flavor adds it. Labels: the real action's OCI labels and the ``labels``
input; annotations: the same as ``manifest:`` annotations. Any other rule fails, so the stand-in cannot quietly
differ from the real action on a workflow it was not written for.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path

SEMVER = re.compile(r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)$")


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def rule_tags(rule: str, ref: str) -> list[str]:
    fields = dict(part.split("=", 1) for part in rule.split(","))
    kind = fields.get("type")
    if kind == "ref" and fields.get("event") == "branch":
        if not ref.startswith("refs/heads/"):
            return []
        return [re.sub(r"[^a-zA-Z0-9._-]+", "-", ref.removeprefix("refs/heads/"))]
    if kind == "semver" and "pattern" in fields:
        match = SEMVER.match(ref.removeprefix("refs/tags/")) if ref.startswith("refs/tags/") else None
        if match is None:
            return []
        version = f"{match['major']}.{match['minor']}.{match['patch']}"
        pattern = fields["pattern"].replace("{{version}}", version)
        return [pattern.replace("{{major}}", match["major"]).replace("{{minor}}", match["minor"])]
    raise SystemExit(f"::error::the metadata-action stand-in has no rule {rule!r}")


def main() -> None:
    env = os.environ
    ref, sha = env["GITHUB_REF"], env["GITHUB_SHA"]
    images = lines(env.get("META_IMAGES", ""))
    versions = [tag for rule in lines(env.get("META_TAGS", "")) for tag in rule_tags(rule, ref)]
    semver = ref.startswith("refs/tags/") and SEMVER.match(ref.removeprefix("refs/tags/")) is not None
    names = [*dict.fromkeys(versions), *(["latest"] if semver else [])]
    tags = [f"{image}:{name}" for image in images for name in names]
    repository = f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}"
    labels = {
        "org.opencontainers.image.title": env["GITHUB_REPOSITORY"].split("/")[-1],
        "org.opencontainers.image.url": repository,
        "org.opencontainers.image.source": repository,
        "org.opencontainers.image.version": versions[0] if versions else "",
        "org.opencontainers.image.created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "org.opencontainers.image.revision": sha,
    }
    for line in lines(env.get("META_LABELS", "")):
        key, _, value = line.partition("=")
        labels[key] = value
    annotations = [f"manifest:{key}={value}" for key, value in labels.items()]
    outputs = {
        "tags": "\n".join(tags),
        "labels": "\n".join(f"{key}={value}" for key, value in labels.items()),
        "annotations": "\n".join(annotations),
        "version": labels["org.opencontainers.image.version"],
        "json": json.dumps({"tags": tags, "labels": labels, "annotations": annotations}),
    }
    with Path(env["GITHUB_OUTPUT"]).open("a") as out:
        for name, value in outputs.items():
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            out.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    sys.stdout.write(f"Tags:\n{outputs['tags']}\n")


if __name__ == "__main__":
    main()
