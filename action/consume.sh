#!/usr/bin/env bash
# Run `buildonce consume`. The inputs arrive as INPUT_* variables from the step's env.
#
# consume/action.yml runs this twice at most: first against the registry, then, only when that step reported
# need-artifact=true (or was skipped for source artifact), after the download, with BUILDONCE_ARTIFACT_NAME
# set. Then the tar the download fetched becomes the artifact-path, and a download that failed or fetched
# no tar ends the step here, with an error that says why the image could not come from the artifact.
#
# What this script decides for buildonce (defer-artifact, and for the artifact step source and artifact-path)
# goes as --input flags: a flag wins over every INPUT_* variable, whatever the runner put in the environment
# (act, unlike GitHub's runner, sets INPUT_ARTIFACT-PATH and friends in a composite's steps to the caller's
# inputs, and buildonce reads both spellings).
set -euo pipefail

die() {
  # A workflow command ends at a line break: escape it, and '%', so that a name cannot add a command.
  local message=${1//'%'/%25}
  message=${message//$'\r'/%0D}
  message=${message//$'\n'/%0A}
  printf '::error title=buildonce::%s\n' "$message"
  exit 1
}

python=${BUILDONCE_PYTHON:?BUILDONCE_PYTHON is not set; the install step must run first}
artifact_name=${BUILDONCE_ARTIFACT_NAME:-}
overrides=()
if [ -n "${BUILDONCE_DEFER_ARTIFACT:-}" ]; then
  overrides+=(--input "defer-artifact=$BUILDONCE_DEFER_ARTIFACT")
fi

if [ -n "$artifact_name" ]; then
  download=${BUILDONCE_DOWNLOAD_PATH:-}
  if [ "${BUILDONCE_DOWNLOAD_OUTCOME:-}" != success ]; then
    die "the image has to come from the artifact '$artifact_name', but its download failed (see the download step above). Check artifact-name, and run-id and github-token (with actions: read) for another run's artifact, and that the build uploaded it and it has not expired."
  fi
  tar=""
  if [ -n "$download" ] && [ -d "$download" ]; then
    # The build names its tar <artifact-name>.tar, .tar.gz or .tar.zst, with a .sha256 file beside it.
    for candidate in "$download"/*.tar "$download"/*.tar.gz "$download"/*.tar.zst; do
      if [ -f "$candidate" ]; then
        tar=$candidate
        break
      fi
    done
  fi
  [ -n "$tar" ] \
    || die "the image has to come from the artifact '$artifact_name', but the download (${download:-no path}) holds no .tar, .tar.gz or .tar.zst file. Give artifact-name the name the build uploaded its image under (its artifact-name output)."
  overrides=(--input source=artifact --input defer-artifact=false --input "artifact-path=$tar")
  echo "Loading the downloaded artifact: $tar"
fi

# -I: the workspace (the working directory) must not shadow the installed buildonce.
exec "$python" -I -m buildonce consume "${overrides[@]}"
