"""Target platforms, checked before building.

buildx accepts any ``os/arch`` string for a ``FROM scratch`` build and pushes it, so a typo such as
``linux/amd46`` would publish a useless image; the names here are the ones Go and containerd know.
"""

from __future__ import annotations

from buildonce.errors import InputError

KNOWN_OS = frozenset(
    {
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
    }
)
KNOWN_ARCH = frozenset(
    {
        "386",
        "amd64",
        "arm",
        "arm64",
        "loong64",
        "mips",
        "mips64",
        "mips64le",
        "mipsle",
        "ppc64",
        "ppc64le",
        "riscv64",
        "s390x",
        "wasm",
    }
)
# containerd normalises these spellings; accept them as the CLI does.
ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "i386": "386",
    "armhf": "arm",
    "armel": "arm",
}
KNOWN_VARIANTS = {
    "arm": frozenset({"v5", "v6", "v7", "v8"}),
    "arm64": frozenset({"v8", *(f"v8.{minor}" for minor in range(10)), "v9", *(f"v9.{minor}" for minor in range(6))}),
    "amd64": frozenset({"v1", "v2", "v3", "v4"}),
    "386": frozenset({"sse2", "softfloat"}),
}

DEFAULT_VARIANTS = {"arm64": "v8"}
"""The variant of a platform that names none, as containerd matches them: arm64 is arm64/v8."""


def matches(wanted: str, os_name: object, arch: object, variant: object) -> bool:
    """Whether an image of ``os_name/arch[/variant]`` (as an index names it) serves ``wanted``
    (``os/arch[/variant]``); ``wanted`` without a variant takes any."""
    parts = wanted.split("/")
    if [os_name, arch] != parts[:2]:
        return False
    if len(parts) < 3:
        return True
    return variant == parts[2] or (not variant and DEFAULT_VARIANTS.get(parts[1]) == parts[2])


def check_platform(text: str, *, source: str = "platforms") -> str:
    """Return the platform as given if it names a known os/arch[/variant]; raise a clear error if not."""
    platform = text.strip()
    parts = platform.lower().split("/")
    example = "Use names like linux/amd64, linux/arm64 or linux/arm/v7."
    if platform == "local":
        return platform
    if len(parts) not in (2, 3) or not all(parts):
        raise InputError(f"input '{source}': {platform!r} is not of the form os/arch[/variant]. {example}")
    os_name, arch = parts[0], ARCH_ALIASES.get(parts[1], parts[1])
    if os_name not in KNOWN_OS:
        raise InputError(f"input '{source}': {platform!r} names an unknown OS {parts[0]!r}. {example}")
    if arch not in KNOWN_ARCH:
        raise InputError(f"input '{source}': {platform!r} names an unknown architecture {parts[1]!r}. {example}")
    if len(parts) == 3 and parts[2] not in KNOWN_VARIANTS.get(arch, frozenset()):
        known = ", ".join(sorted(KNOWN_VARIANTS.get(arch, frozenset()))) or "none"
        raise InputError(
            f"input '{source}': {platform!r} names an unknown variant {parts[2]!r} for {arch} "
            f"(known: {known}). {example}"
        )
    return platform
