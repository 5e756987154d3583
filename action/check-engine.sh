#!/usr/bin/env bash
# Fail early, with one clear annotation, on a runner that lacks what the action needs: without it nothing can
# be built or pulled, and the Python install that follows would only waste time.
#
#   check-engine.sh        the build action: the docker CLI and its buildx plugin
#   check-engine.sh pull   the consume action: the docker CLI alone (it pulls, and never runs buildx)
set -euo pipefail

die() {
  printf '::error title=buildonce::%s\n' "$1"
  exit 1
}

case "${1:-build}" in
  build | pull) ;;
  *) die "check-engine.sh: unknown argument '$1'; use 'pull' or none" ;;
esac
docker=$(command -v docker 2>/dev/null) \
  || die "the docker CLI is not on this runner's PATH. Use a runner with Docker (ubuntu-latest has it) or install Docker before this step."
if [ "${1:-build}" = pull ]; then
  # Found is enough: consume's first docker pull says what is wrong with the CLI or its engine, and asking
  # `docker --version` here would cost every test job a process start.
  printf 'docker: %s\n' "$docker"
  exit 0
fi
if ! buildx=$(docker buildx version 2>&1); then
  die "docker buildx is not available on this runner ($(printf '%s' "$buildx" | head -n 1)). Add docker/setup-buildx-action before this step."
fi
printf 'docker: %s\nbuildx: %s\n' "$(docker --version 2>/dev/null || echo unknown)" "$buildx"
