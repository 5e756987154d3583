#!/usr/bin/env bash
# Install buildonce into a virtual environment under $RUNNER_TEMP; shared by action.yml and consume/action.yml.
#
# The runtime dependencies come from requirements.lock with --require-hashes, so a package that differs from
# the one locked fails the install instead of running. buildonce itself is copied from the action's own
# checkout: building it with pip would download an unpinned build backend. A second call in the same job
# (two builds, or a build and a consume) finds the same buildonce already there and skips the install.
#
# Writes the venv's interpreter to the step output 'python'.
set -euo pipefail

die() {
  printf '::error title=buildonce::%s\n' "$1"
  exit 1
}

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
temp=${RUNNER_TEMP:-}
[ -n "$temp" ] || die "RUNNER_TEMP is not set; this script runs as a step of the buildonce action."
venv=$temp/buildonce/venv
base=python3

command -v "$base" >/dev/null 2>&1 \
  || die "python3 is not on this runner's PATH. Add actions/setup-python (3.10 or later) before this step."
"$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "buildonce needs Python 3.10 or later, but python3 is $("$base" -V 2>&1). Add actions/setup-python before this step."

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/src/buildonce/__init__.py")
# Same sources, same lock and same interpreter: the same install.
fingerprint=$(
  {
    "$base" -c 'import sys; print(sys.executable, sys.version)'
    sha256sum "$root/requirements.lock" | cut -d' ' -f1
    (cd "$root" && find src/buildonce -type f -name '*.py' | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
)
stamp=$venv/.buildonce-fingerprint

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && [ -x "$venv/bin/python" ]; then
  echo "buildonce $version is already installed in $venv"
else
  echo "::group::Install buildonce $version into $venv"
  rm -rf "$venv"
  "$base" -I -m venv "$venv"
  # --no-deps: the lock is the whole runtime set (see scripts/lock).
  "$venv/bin/python" -I -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
    --require-hashes -r "$root/requirements.lock"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  cp -R "$root/src/buildonce" "$site/buildonce"
  find "$site/buildonce" -name __pycache__ -type d -prune -exec rm -rf {} +
  "$venv/bin/python" -I -m buildonce --version
  printf '%s\n' "$fingerprint" >"$stamp"
  echo "::endgroup::"
fi

if [ -n "${GITHUB_OUTPUT:-}" ]; then
  printf 'python=%s\n' "$venv/bin/python" >>"$GITHUB_OUTPUT"
fi
