#!/usr/bin/env bash
# Run `buildonce prune`. The inputs arrive as INPUT_* variables from the step's env.
set -euo pipefail

python=${BUILDONCE_PYTHON:?BUILDONCE_PYTHON is not set; the install step must run first}
# -I: the workspace (the working directory) must not shadow the installed buildonce.
exec "$python" -I -m buildonce prune
