"""What a build reports: its outputs and its step summary, from plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from buildonce.plan import Plan

if TYPE_CHECKING:
    from buildonce.artifact import Artifact


@dataclass
class BuildReport:
    plan: Plan
    digest: str = ""
    """The pushed digest, pullable as name@digest; empty when nothing was pushed."""
    imageid: str = ""
    pushed: bool = False
    reused: bool = False
    """The immutable tag already held this commit's image, so nothing was built."""
    promoted_from: str = ""
    """The digest of the image promoted to this commit instead of a build; empty otherwise."""
    build_key: str = ""
    attempts: int = 0
    size: int = 0
    build_seconds: float = 0.0
    push_seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    artifact: Artifact | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def image(self) -> str:
        """Where a later step finds the image: pushed, by digest; only loaded, by its local name."""
        if self.digest:
            return self.plan.images[0].with_digest(self.digest)
        if self.plan.load.value and self.plan.immutable_references:
            return str(self.plan.immutable_references[0])
        return ""

    def outputs(self) -> dict[str, str]:
        outputs = self.plan.outputs()
        outputs.update(
            {
                "digest": self.digest,
                "imageid": self.imageid,
                "image": self.image,
                "metadata": json.dumps(self.metadata, separators=(",", ":"), sort_keys=True),
                "pushed": "true" if self.pushed else "false",
                "reused": "true" if self.reused else "false",
                "promoted-from": self.promoted_from,
                "build-key": self.build_key,
                "attempts": str(self.attempts),
                "artifact-path": str(self.artifact.path) if self.artifact else "",
                "artifact-name": self.artifact.name if self.artifact else "",
                "artifact-sha256": self.artifact.sha256 if self.artifact else "",
            }
        )
        return outputs

    def summary(self) -> str:
        plan = self.plan
        title = self.image or ", ".join(str(image) for image in plan.images)
        state = "reused" if self.reused else ("built and pushed" if self.pushed else "built, not pushed")
        if self.promoted_from:
            state = "promoted"
        rows = [
            ("Images", ", ".join(f"`{image}`" for image in plan.images)),
            ("Tags", ", ".join(f"`{tag}`" for tag in plan.tag_names)),
            ("Immutable tag", f"`{plan.immutable_tag}`"),
            ("Digest", f"`{self.digest}`" if self.digest else "(not pushed)"),
            ("Platforms", ", ".join(plan.platforms) or "the builder's own"),
            ("Size", human_size(self.size) if self.size else "n/a"),
            ("Build", _build_cell(self)),
            ("Push", f"{self.push_seconds:.1f} s" if self.pushed else plan.push.reason),
            ("Attempts", str(self.attempts)),
        ]
        if self.artifact:
            rows.append(("Artifact", f"`{self.artifact.name}` ({human_size(self.artifact.size)})"))
        lines = [f"### buildonce: {state} `{title}`", "", "| | |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
        lines += [f"\n> {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _build_cell(report: BuildReport) -> str:
    if report.promoted_from:
        return f"skipped (promoted from `{report.promoted_from}`)"
    return "skipped (image reused)" if report.reused else f"{report.build_seconds:.1f} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1000
    return f"{value:.1f} TB"
