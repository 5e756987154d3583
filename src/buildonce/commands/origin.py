"""Where an image comes from (the commit, the run, a fork's code or not), and the check made before a build
that signing it can work: settings that contradict each other, or no cosign, fail the run before anything is
built or pushed. The signing step itself (``buildonce.commands.sign``) is imported only once there is a digest
to sign.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildonce.plan import foreign_code
from buildonce.signing import Decision, SignOptions, decide

if TYPE_CHECKING:
    from buildonce.github.context import Context
    from buildonce.github.workflow import Console

OIDC_VARIABLE = "ACTIONS_ID_TOKEN_REQUEST_URL"


@dataclass(frozen=True)
class Origin:
    """Where the image comes from, as the signature's annotations and a keyless identity name it."""

    sha: str
    """The commit the image was built from: what a re-run's signature must name."""
    server_url: str
    repository: str
    run_id: str
    workflow_sha: str
    """``GITHUB_SHA``, which a keyless certificate names (for a pull request, its merge commit)."""
    fork: bool
    namespace: str

    @property
    def run_url(self) -> str:
        if not (self.repository and self.run_id):
            return ""
        return f"{self.server_url.rstrip('/')}/{self.repository}/actions/runs/{self.run_id}"


def origin_of(context: Context, sha: str, namespace: str) -> Origin:
    return Origin(
        sha=sha,
        server_url=context.server_url,
        repository=context.repository.full_name,
        run_id=context.run_id,
        workflow_sha=context.sha,
        fork=bool(foreign_code(context)),
        namespace=namespace,
    )


def check_before_build(
    options: SignOptions, origin: Origin, env: Mapping[str, str], console: Console, *, pushing: bool
) -> Decision:
    """Mask the key's password, and refuse signing that cannot work (settings that contradict each other, no
    cosign) before anything is built or pushed."""
    if env.get("COSIGN_PASSWORD"):
        console.mask(env["COSIGN_PASSWORD"])
    decision = decide(options, pushed=pushing, fork=origin.fork, oidc=bool(env.get(OIDC_VARIABLE)))
    if decision.sign:
        from buildonce.docker.cosign import Cosign

        Cosign.find(env)
    return decision
