"""``python -m buildonce``: the command line (``buildonce.cli``), after the one thing started before its
imports: consume's pull of a digest given, when the inputs name it plainly (``buildonce.docker.ahead``)."""

from __future__ import annotations

import gc
import os
import sys

from buildonce.docker.ahead import pull_ahead


def run() -> int:
    ahead = pull_ahead(sys.argv[1:], os.environ)
    try:
        # Importing allocates much and frees next to nothing: the collector would walk it all several times
        # for nothing (about 10 ms of a build's start). Collected again once the command is loaded, without
        # walking what the imports made.
        gc.disable()
        from buildonce.cli import main, skip_last_collections

        skip_last_collections()
        return main(ahead=ahead, loaded=_collect_from_here)
    finally:
        if ahead is not None:
            ahead.cancel()  # when the command did not take it


def _collect_from_here() -> None:
    gc.freeze()
    gc.enable()


if __name__ == "__main__":
    sys.exit(run())
