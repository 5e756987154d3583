#!/usr/bin/env bash
# Run `buildonce merge`; with an empty legs input, on the leg files downloaded into $BUILDONCE_LEGS_DIR.
#
# The downloaded legs go as an --input flag, which wins over INPUT_LEGS (act sets a composite's own inputs as
# INPUT_* variables in its steps, the empty legs input among them).
set -euo pipefail

if [[ -n "${INPUT_LEGS//[[:space:]]/}" ]]; then
  exec "$BUILDONCE_PYTHON" -I -m buildonce merge
fi
shopt -s nullglob
files=("${BUILDONCE_LEGS_DIR:?}"/*.json)
legs=""
for file in "${files[@]}"; do
  legs+="$(cat -- "$file")"$'\n'
done
exec "$BUILDONCE_PYTHON" -I -m buildonce merge --input "legs=$legs"
