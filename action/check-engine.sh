#!/usr/bin/env bash
# Fail early, with one clear annotation, on a runner that has no Docker CLI or no buildx plugin: without
# them nothing can be built or pulled, and the Python install that follows would only waste a minute.
set -euo pipefail

die() {
  printf '::error title=buildonce::%s\n' "$1"
  exit 1
}

command -v docker >/dev/null 2>&1 \
  || die "the docker CLI is not on this runner's PATH. Use a runner with Docker (ubuntu-latest has it) or install Docker before this step."
if ! buildx=$(docker buildx version 2>&1); then
  die "docker buildx is not available on this runner ($(printf '%s' "$buildx" | head -n 1)). Add docker/setup-buildx-action before this step."
fi
printf 'docker: %s\nbuildx: %s\n' "$(docker --version 2>/dev/null || echo unknown)" "$buildx"
