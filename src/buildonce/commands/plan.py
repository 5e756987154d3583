"""``buildonce plan``: compute tags, labels and decisions from the inputs and the event; touch nothing."""

from __future__ import annotations

from datetime import datetime, timezone

from buildonce.commands import Invocation
from buildonce.options import plan_options
from buildonce.plan import describe, make_plan


def run(call: Invocation) -> None:
    options = plan_options(call.inputs)
    context = call.context(options.default_branch)
    plan = make_plan(context, options, now=datetime.now(timezone.utc))
    call.console.info(describe(plan))
    for warning in plan.warnings():
        call.console.warning(warning)
    call.finish(plan.outputs())
