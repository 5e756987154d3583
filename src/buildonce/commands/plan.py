"""``buildonce plan``: compute tags, labels and decisions from the inputs and the event; touch nothing."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from buildonce.commands import Invocation
from buildonce.legs import matrix, parse_runners
from buildonce.options import PLAN_COMMAND_INPUTS, plan_options
from buildonce.plan import describe, make_plan


def run(call: Invocation) -> None:
    options = plan_options(call.inputs, PLAN_COMMAND_INPUTS)
    runners = parse_runners(call.inputs.items("runners"), options.platforms)
    context = call.context(options.default_branch)
    plan = make_plan(context, options, now=datetime.now(timezone.utc))
    call.console.info(describe(plan))
    for warning in plan.warnings():
        call.console.warning(warning)
    # For strategy.matrix.include: one leg per planned platform, on the runner 'runners' names for it.
    legs = matrix(plan.platforms, runners)
    call.finish({**plan.outputs(), "matrix": json.dumps(legs, separators=(",", ":"))})
