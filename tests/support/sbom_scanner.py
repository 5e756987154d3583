"""An SBOM generator image that follows BuildKit's scanner protocol, built locally (BuildKit's default
scanner cannot be pulled here): BuildKit runs it with the image's root file system at
``$BUILDKIT_SCAN_SOURCE`` and reads in-toto statements from ``$BUILDKIT_SCAN_DESTINATION``. It writes one
SPDX document listing every file with its sha256; BuildKit fills in the statement's subject."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

SCANNER_IMAGE = "buildonce-test/sbom-scanner:1"

SCAN_SCRIPT = r"""set -eu
out="$BUILDKIT_SCAN_DESTINATION/sbom.spdx.json"
{
  printf '{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","predicate":'
  printf '{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"buildonce-test",'
  printf '"documentNamespace":"https://buildonce.invalid/spdx/test",'
  printf '"creationInfo":{"created":"2000-01-01T00:00:00Z","creators":["Tool: buildonce-test-scanner"]},"files":['
  n=0
  for f in $(cd "$BUILDKIT_SCAN_SOURCE" && find . -type f | sort); do
    [ "$n" -gt 0 ] && printf ','
    n=$((n + 1))
    sum=$(sha256sum "$BUILDKIT_SCAN_SOURCE/$f" | cut -d' ' -f1)
    printf '{"fileName":"%s","SPDXID":"SPDXRef-File-%d","checksums":[{"algorithm":"SHA256","checksumValue":"%s"}]}' \
      "$f" "$n" "$sum"
  done
  printf ']}}'
} >"$out"
"""


def scanner_image(base: str, name: str = SCANNER_IMAGE) -> str:
    """Build the scanner into the engine (once per engine) on ``base``, an image with a shell."""
    found = subprocess.run(["docker", "image", "inspect", name], capture_output=True, timeout=60, check=False)
    if found.returncode == 0:
        return name
    with tempfile.TemporaryDirectory(prefix="buildonce-scanner-") as directory:
        context = Path(directory)
        (context / "scan.sh").write_text(SCAN_SCRIPT)
        (context / "Dockerfile").write_text(f'FROM {base}\nCOPY scan.sh /scan.sh\nCMD ["sh", "/scan.sh"]\n')
        subprocess.run(
            ["docker", "buildx", "build", "--load", "-q", "-t", name, str(context)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    return name
