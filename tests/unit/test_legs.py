"""The legs' matrix, a leg's JSON object, and the merge's plan and index, from plain values."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from events import runner_env
from runner_format import commands, parse_outputs

from buildonce.cli import main
from buildonce.errors import InputError
from buildonce.legs import (
    Leg,
    artifact_name,
    index_annotations,
    leg_of_index,
    matrix,
    parse_leg,
    parse_legs,
    parse_runners,
    plan_merge,
    platform_pair,
)
from buildonce.oci import OCI_INDEX, OCI_MANIFEST, index_of

SHA = "a" * 40
TAG = "sha-aaaaaaa"


def digest(char: str) -> str:
    return "sha256:" + char * 64


def a_leg(platform: str, manifest: str, attestation: str | None = None, commit: str = SHA) -> Leg:
    parts = platform.split("/")
    plat = {"os": parts[0], "architecture": parts[1], **({"variant": parts[2]} if parts[2:] else {})}
    descriptor = {"mediaType": OCI_MANIFEST, "digest": digest(manifest), "size": 500, "platform": plat}
    attestations: tuple[dict[str, Any], ...] = ()
    if attestation:
        attestations = (
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest(attestation),
                "size": 560,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {
                    "vnd.docker.reference.digest": digest(manifest),
                    "vnd.docker.reference.type": "attestation-manifest",
                },
            },
        )
    return Leg(platform, commit, TAG, descriptor, attestations, ("ghcr.io/acme/app",))


# --- the matrix -----------------------------------------------------------------------------------------------


def test_the_matrix_has_one_sorted_entry_per_platform_with_its_runner() -> None:
    platforms = ("linux/arm64", "linux/amd64", "linux/arm/v7")
    runners = parse_runners(["linux/amd64=ubuntu-24.04", "linux/arm64=ubuntu-24.04-arm"], platforms)
    assert matrix(platforms, runners) == [
        {"platform": "linux/amd64", "pair": "linux-amd64", "runner": "ubuntu-24.04"},
        {"platform": "linux/arm/v7", "pair": "linux-arm-v7", "runner": ""},
        {"platform": "linux/arm64", "pair": "linux-arm64", "runner": "ubuntu-24.04-arm"},
    ]


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        (["linux/amd64"], "not of the form platform=runner"),
        (["linux/amd64="], "not of the form platform=runner"),
        (["linux/s390x=big"], "not among the planned platforms"),
        (["linux/amd64=a", "linux/amd64=b"], "names linux/amd64 twice"),
        (["linux/amd64=$(evil)"], "is not a runner label"),
        (["linux/amd46=x"], "unknown architecture"),
    ],
)
def test_bad_runners_name_the_input(entries: list[str], fragment: str) -> None:
    with pytest.raises(InputError, match="input 'runners'") as caught:
        parse_runners(entries, ("linux/amd64", "linux/arm64"))
    assert fragment in str(caught.value)


def test_names_are_tag_and_artifact_safe() -> None:
    assert platform_pair("linux/arm/v7") == "linux-arm-v7"
    assert artifact_name("sha-0123456", "linux/arm64") == "buildonce-leg-sha-0123456-linux-arm64"


def run_plan(tmp_path: Path, inputs: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    (tmp_path / "out").write_text("")
    (tmp_path / "summary").write_text("")
    env = {
        **runner_env("push-default"),
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        **{f"INPUT_{name.upper()}": value for name, value in inputs.items()},
    }
    out = io.StringIO()
    code = main(["plan"], env=env, stdout=out)
    return code, out.getvalue(), parse_outputs((tmp_path / "out").read_text())


def test_plan_outputs_the_matrix(tmp_path: Path) -> None:
    code, log, outputs = run_plan(
        tmp_path,
        {
            "images": "ghcr.io/acme/app",
            "platforms": "linux/amd64,linux/arm64",
            "runners": "linux/amd64=ubuntu-24.04,linux/arm64=ubuntu-24.04-arm",
        },
    )
    assert code == 0, log
    assert json.loads(outputs["matrix"]) == [
        {"platform": "linux/amd64", "pair": "linux-amd64", "runner": "ubuntu-24.04"},
        {"platform": "linux/arm64", "pair": "linux-arm64", "runner": "ubuntu-24.04-arm"},
    ]


def test_plan_with_a_bad_runner_writes_no_outputs(tmp_path: Path) -> None:
    code, log, outputs = run_plan(
        tmp_path, {"images": "ghcr.io/acme/app", "platforms": "linux/amd64", "runners": "linux/arm64=x"}
    )
    assert code == 1
    (error,) = commands(log, "error")
    assert "input 'runners'" in error
    assert outputs == {}


# --- a leg's JSON object --------------------------------------------------------------------------------------


def test_a_leg_goes_through_its_json_unchanged() -> None:
    leg = a_leg("linux/arm64", "1", "2")
    text = leg.to_json()
    assert "\n" not in text
    assert parse_leg(text, 1) == leg


def mutated(change: Any) -> str:
    data = json.loads(a_leg("linux/arm64", "1", "2").to_json())
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "line 1 is not JSON"),
        ('{"platform": "linux/amd64"}', "is not a buildonce leg"),
        (mutated(lambda d: d.update({"buildonce-leg": 2})), "is not a buildonce leg"),
        (mutated(lambda d: d.pop("commit")), "lacks its platform, commit or immutable tag"),
        (mutated(lambda d: d["manifest"].update(mediaType=OCI_INDEX)), "a leg never pushes an index"),
        (mutated(lambda d: d["manifest"].update(digest="sha256:short")), "has no sha256 digest"),
        (mutated(lambda d: d["manifest"].update(size=0)), "has no size"),
        (
            mutated(lambda d: d["manifest"].update(platform={"os": "linux", "architecture": "amd64"})),
            "names linux/amd64",
        ),
        (
            mutated(lambda d: d["attestations"][0]["annotations"].update({"vnd.docker.reference.digest": digest("9")})),
            "is not one of",
        ),
        (mutated(lambda d: d.update(platform="linux/banana")), "unknown architecture"),
    ],
)
def test_a_malformed_leg_is_refused_naming_the_input(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match="input 'legs'") as caught:
        parse_leg(text, 1)
    assert fragment in str(caught.value)


def test_no_legs_is_an_error() -> None:
    with pytest.raises(InputError, match="input 'legs' is empty"):
        parse_legs([])


def test_the_leg_of_an_index_is_its_platform_and_that_platforms_attestations() -> None:
    amd, arm = a_leg("linux/amd64", "1", "2"), a_leg("linux/arm64", "3", "4")
    index = json.loads(index_of(plan_merge([amd, arm], ["linux/amd64", "linux/arm64"], SHA, TAG).entries()).raw)
    found = leg_of_index(index, "linux/arm64", commit=SHA, immutable_tag=TAG, images=arm.images)
    assert found == arm
    assert leg_of_index(index, "linux/386", commit=SHA, immutable_tag=TAG, images=()) is None


# --- the merge ------------------------------------------------------------------------------------------------

PLATFORMS = ["linux/amd64", "linux/arm64"]


@pytest.mark.parametrize(
    ("legs", "fragment"),
    [
        ([a_leg("linux/amd64", "1")], "no leg for linux/arm64"),
        ([a_leg("linux/amd64", "1"), a_leg("linux/arm64", "2"), a_leg("linux/386", "3")], "linux/386, which is not"),
        ([a_leg("linux/amd64", "1"), a_leg("linux/amd64", "1"), a_leg("linux/arm64", "2")], "more than one leg"),
        ([a_leg("linux/amd64", "1"), a_leg("linux/arm64", "2", commit="b" * 40)], f"built from {'b' * 40}"),
    ],
)
def test_the_merge_needs_exactly_one_leg_per_platform_of_this_commit(legs: list[Leg], fragment: str) -> None:
    with pytest.raises(InputError, match="input 'legs'") as caught:
        plan_merge(legs, PLATFORMS, SHA, TAG)
    assert fragment in str(caught.value)


def test_a_leg_planned_with_other_tag_inputs_is_refused() -> None:
    other = Leg("linux/arm64", SHA, "v-aaaaaaa", a_leg("linux/arm64", "2").manifest)
    with pytest.raises(InputError, match="immutable tag v-aaaaaaa"):
        plan_merge([a_leg("linux/amd64", "1"), other], PLATFORMS, SHA, TAG)


def test_the_merge_needs_the_planned_platforms() -> None:
    with pytest.raises(InputError, match="input 'platforms' is empty"):
        plan_merge([a_leg("linux/amd64", "1")], [], SHA, TAG)


def test_a_variant_leg_serves_the_planned_platform_without_one() -> None:
    merge = plan_merge([a_leg("linux/arm64/v8", "1")], ["linux/arm64"], SHA, TAG)
    assert merge.platform_digests() == {"linux/arm64/v8": digest("1")}


def test_the_index_is_the_same_whatever_order_the_legs_come_in() -> None:
    legs = [a_leg("linux/arm64", "3", "4"), a_leg("linux/amd64", "1", "2"), a_leg("linux/arm/v7", "5")]
    platforms = ["linux/arm/v7", "linux/amd64", "linux/arm64"]
    annotations = {"org.opencontainers.image.revision": SHA}
    first = index_of(plan_merge(legs, platforms, SHA, TAG).entries(), annotations)
    for order in itertools.permutations(legs):
        assert index_of(plan_merge(order, platforms[::-1], SHA, TAG).entries(), dict(annotations)) == first
    body = json.loads(first.raw)
    # Sorted platforms, each attestation right after its subject, annotations at index level.
    assert [entry["digest"] for entry in body["manifests"]] == [
        digest("1"),
        digest("2"),
        digest("5"),
        digest("3"),
        digest("4"),
    ]
    assert body["annotations"] == annotations
    assert body["mediaType"] == OCI_INDEX


def test_index_annotations_are_the_oci_labels_and_the_index_level_ones() -> None:
    labels = {"org.opencontainers.image.revision": SHA, "dev.buildonce.branch": "main"}
    given = ["manifest:org.example.a=1", "index:org.example.b=2", "index:org.opencontainers.image.revision=x"]
    assert index_annotations(labels, given) == {"org.opencontainers.image.revision": "x", "org.example.b": "2"}
