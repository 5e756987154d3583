"""A stand-in for cosign that records its arguments, for what cannot run here: keyless signing needs an OIDC
token, Fulcio and Rekor, none of which a test on loopback has. ``install(directory, log)`` writes a ``cosign``
that appends each call (its argv, and whether an OIDC token URL and a password were in its environment) to
``log`` as a JSON line, and keeps the signatures and attestations it "wrote" in a state file beside it, so
that the read-back after each write finds them and a second run finds them already there."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCRIPT = """#!{python}
import json, os, sys
from pathlib import Path

log = Path({log!r})
state_path = log.with_suffix(".state.json")
state = json.loads(state_path.read_text()) if state_path.exists() else {{}}
args = sys.argv[1:]
with log.open("a") as out:
    out.write(json.dumps({{
        "argv": args,
        "oidc": bool(os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")),
        "password": bool(os.environ.get("COSIGN_PASSWORD")),
    }}) + "\\n")

def value(flag):
    return args[args.index(flag) + 1] if flag in args else ""

def save():
    state_path.write_text(json.dumps(state))

command = args[0] if args else ""
if "--help" in args:
    print("Usage: cosign " + command)
elif command == "version":
    print(json.dumps({{"gitVersion": "v2.5.0-standin"}}))
elif command == "sign":
    state.setdefault("sig", []).extend(a for a in args if "@sha256:" in a)
    save()
elif command == "attest":
    state.setdefault("att:" + value("--type"), []).append(args[-1])
    save()
elif command == "verify":
    if args[-1] not in state.get("sig", []):
        sys.exit("Error: no signatures found")
    print("[]")
elif command == "verify-attestation":
    if args[-1] not in state.get("att:" + value("--type"), []):
        sys.exit("Error: no matching attestations")
elif command == "sign-blob":
    Path(value("--bundle")).write_text("{{}}")
elif command == "verify-blob":
    if not Path(value("--bundle")).is_file():
        sys.exit("Error: no bundle")
else:
    sys.exit("cosign stand-in: unexpected " + " ".join(args))
"""


def install(directory: Path, log: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cosign = directory / "cosign"
    cosign.write_text(SCRIPT.format(python=sys.executable, log=str(log)))
    cosign.chmod(0o755)
    return cosign


def calls(log: Path, command: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    recorded = [json.loads(line) for line in log.read_text().splitlines()]
    if command is None:
        return recorded
    # ``<command> --help`` is how buildonce asks which flags a cosign has: not a call of that command.
    return [call for call in recorded if call["argv"][:1] == [command] and "--help" not in call["argv"]]
