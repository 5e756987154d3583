#!/usr/bin/env bash
# Run `buildonce consume`, pointing it at the artifact the download step fetched when the caller gave no
# artifact-path of their own. The inputs arrive as INPUT_* variables from the step's env.
set -euo pipefail

python=${BUILDONCE_PYTHON:?BUILDONCE_PYTHON is not set; the install step must run first}
download=${BUILDONCE_DOWNLOAD_PATH:-}

if [ -z "${INPUT_ARTIFACT_PATH:-}" ] && [ -n "$download" ] && [ -d "$download" ]; then
  # The build names its tar <artifact-name>.tar, .tar.gz or .tar.zst, with a .sha256 file beside it.
  for candidate in "$download"/*.tar "$download"/*.tar.gz "$download"/*.tar.zst; do
    if [ -f "$candidate" ]; then
      export INPUT_ARTIFACT_PATH=$candidate
      echo "Artifact fallback: $candidate"
      break
    fi
  done
fi

# -I: the workspace (the working directory) must not shadow the installed buildonce.
exec "$python" -I -m buildonce consume
