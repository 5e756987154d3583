#!/usr/bin/env bash
# Decide whether this job signs, so that the pinned cosign is installed only then: sign true, or auto with
# a key or with an OIDC token (permissions: id-token: write sets ACTIONS_ID_TOKEN_REQUEST_URL). buildonce
# decides again, with everything it knows (whether the image was pushed, a fork); this only saves the install.
set -euo pipefail

sign=${INPUT_SIGN:-auto}
install=false
case "${sign,,}" in
  true) install=true ;;
  auto) if [ -n "${INPUT_SIGN_KEY:-}" ] || [ -n "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ]; then install=true; fi ;;
esac
printf 'install=%s\n' "$install" >>"${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
echo "cosign needed: $install"
