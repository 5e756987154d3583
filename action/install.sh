#!/usr/bin/env bash
# Install buildonce into a virtual environment kept on the machine (in the runner's tool cache, else under
# $RUNNER_TEMP); shared by action.yml and consume/action.yml.
#
#   install.sh plan   the step before actions/cache: the finished install found there (output 'python'), else
#                     the wheel store's key and path and whether to restore it; with nothing to restore, the
#                     install itself (output 'python'), so the next step is skipped
#   install.sh        install from the hash-checked wheels (downloading what the store lacks), or find the same
#                     install already there; writes the venv's interpreter to the step output 'python'
#
# The work is done by install.py (finding the install) and installer.py (making it), with the standard
# library alone: see there for what is checked and why.
set -euo pipefail

die() {
  printf '::error title=buildonce::%s\n' "$1"
  exit 1
}

command -v python3 >/dev/null 2>&1 \
  || die "python3 is not on this runner's PATH. Add actions/setup-python (3.10 or later) before this step."
# -I: neither PYTHONPATH nor the workspace (the working directory) may change what installs buildonce; -S: the
# install needs the standard library alone, so no .pth file of the runner's site-packages runs (or costs) anything.
exec python3 -I -S "$(dirname -- "${BASH_SOURCE[0]}")/install.py" "$@"
