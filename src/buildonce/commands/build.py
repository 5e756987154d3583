"""``buildonce build``: build once, push with retry, verify the digest, keep an artifact.

The order matters: the immutable tags are checked before anything is pushed (a taken tag fails the run, a
tag already holding this commit's image means there is nothing to build, and a build started beside the
check is stopped), the build runs exactly once, then push and verify retry only registry work.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from buildonce.commands import Invocation
from buildonce.commands.connect import retry_policy
from buildonce.commands.key import keyed
from buildonce.commands.origin import Origin, check_before_build, origin_of
from buildonce.docker.buildx import (
    Builder,
    Output,
    Stopper,
    build_command,
    buildx_program,
    check_paths,
    find_builder,
)
from buildonce.docker.buildx import (
    run_build as run_buildx,
)
from buildonce.docker.config import docker_config_with_login
from buildonce.errors import FatalError, InputError
from buildonce.options import BuildOptions, Distribute, PushVia, build_options
from buildonce.plan import Plan, describe, make_plan
from buildonce.signing import default_provenance

if TYPE_CHECKING:
    # What runs beside and after buildx is imported in the thread that prepares it (see build_job).
    from buildonce.commands.build_job import BuildJob
    from buildonce.github.context import Context
    from buildonce.github.workflow import Console
    from buildonce.retry import RetryPolicy


def _planned(call: Invocation, options: BuildOptions) -> tuple[Context, Plan, int | None]:
    """The event's context, the plan (told in the log), and the commit's time as an epoch (the build's
    timestamps)."""
    if call.env.get("COSIGN_PASSWORD"):  # masked before anything else is printed
        call.console.mask(call.env["COSIGN_PASSWORD"])
    context = call.context(options.plan.default_branch)
    if options.source_date_epoch is not None:  # the build's timestamps, so the created label's too
        context = replace(context, commit_time=datetime.fromtimestamp(options.source_date_epoch, timezone.utc))
    plan = make_plan(context, options.plan, now=datetime.now(timezone.utc))
    console = call.console
    console.info(describe(plan))
    for warning in plan.warnings():
        console.warning(warning)
    if not plan.push.value and plan.push.reason != "set by the 'push' input":
        console.notice(f"Not pushing: {plan.push.reason}.", title="buildonce")
    return context, plan, int(context.commit_time.timestamp()) if context.commit_time else None


def run(call: Invocation) -> None:
    options = build_options(call.inputs)
    context, plan, commit_epoch = _planned(call, options)
    console = call.console
    if options.distribute is Distribute.LEG:
        from buildonce.commands.leg import run_leg

        run_leg(call, options, plan, commit_epoch)
        return
    cwd = Path.cwd()
    check_paths(options, cwd)
    builder = find_builder(options.builder, call.env)
    output = choose_output(options.push_via, builder, lambda: _containerd_store(call.env), plan)
    policy = retry_policy(options.retry, console)
    options, origin = _with_signing(call, options, context, plan)
    keyed_run = keyed(options, plan, cwd, f"{output.value} ({builder.driver or 'unknown'} driver)", console)
    options, plan, key = keyed_run.options, keyed_run.plan, keyed_run.key

    with ExitStack() as stack:
        scratch = stack.enter_context(_scratch(call.env))
        early: BuildJob | None = None
        work: Callable[[], BuildJob] = partial(_prepare, call.env, options, plan, console, policy)
        if keyed_run.looks_up:
            # The engine is connected and logged in beside the build (a refused login stops it, as below), or
            # for a reused image's pull: the SDK's import and the engine's login are no longer paid before
            # buildx starts. The look-ups made here use the same login.
            from buildonce.commands.build_job import before_build, finish
            from buildonce.commands.connect import open_registry
            from buildonce.docker.ondemand import EngineOnDemand

            engine = EngineOnDemand(call.env, login=options.login)
            registry = open_registry(options.login, call.env, policy)
            early, found = before_build(
                call.env, options, plan, console, policy, key=key or "", engine=engine, registry=registry
            )
            stack.callback(early.close)
            if found is not None:
                finish(call, found, early, options, origin)
                return
            work = partial(_connected, early, engine.connect)  # the tags were checked: the engine, beside the build
        # The engine, the login and the immutable-tag check run beside the build rather than before it:
        # they cost a registry round trip or two (and the SDK's import), the build rarely less. If the
        # check finds the tag taken, or already holding this commit's image, the build is stopped.
        stopper = Stopper()
        prepared = Beside(
            work,
            lambda done: _stop_unless_needed(done, stopper, options.rebuild),
        )
        stack.callback(prepared.join)
        prepared.start()
        build_env = stack.enter_context(docker_config_with_login(call.env, options.login))
        command = build_command(
            options,
            plan,
            output=output,
            metadata_file=scratch / "metadata.json",
            iidfile=scratch / "iid",
            layout_dir=scratch / "layout",
            source_date_epoch=commit_epoch,
            env=build_env,
            program=buildx_program(build_env),
        )
        try:
            outcome = run_buildx(command, build_env, console, cwd, stopper)
        except FatalError:
            prepared.result()  # a failed preparation (no engine, a taken tag) explains more than the build
            raise
        job = prepared.result()
        if early is None:
            stack.callback(job.close)
        from buildonce.commands.build_job import record_key_and_finish  # imported beside the build already

        # A build that finished before the check is thrown away just the same: one image per commit.
        existing = None if options.rebuild else job.existing
        report = job.reuse(existing) if existing else job.push(output, outcome, scratch)
        record_key_and_finish(call, report, keyed_run, job, origin)


def _with_signing(call: Invocation, options: BuildOptions, context: Context, plan: Plan) -> tuple[BuildOptions, Origin]:
    """Decide before the build whether it is signed: the provenance that will be attested is then part of what
    is built (and of the build key)."""
    origin = origin_of(context, plan.subject.sha, options.plan.label_namespace)
    signing = check_before_build(options.sign, origin, call.env, call.console, pushing=plan.push.value)
    if signing.sign and not options.provenance:
        options = replace(options, provenance=default_provenance(context.repository.private))
    return options, origin


@contextmanager
def _scratch(env: Mapping[str, str]) -> Iterator[Path]:
    """A private directory for the build's metadata, image id and layout, removed afterwards. Under RUNNER_TEMP
    it is made with os.mkdir under a random name, as tempfile makes one: importing tempfile (and shutil under it)
    costs about 3 ms of a build's start. Outside a runner, by tempfile."""
    runner_temp = env.get("RUNNER_TEMP")
    if runner_temp:
        path = Path(runner_temp) / f"buildonce-{os.urandom(8).hex()}"
        path.mkdir(mode=0o700)
    else:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="buildonce-"))
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def _prepare(
    env: Mapping[str, str], options: BuildOptions, plan: Plan, console: Console, policy: RetryPolicy
) -> BuildJob:
    """In the thread beside buildx: import what publishes the image, then connect and check the tags."""
    with _collector_paused():
        from buildonce.commands.build_job import prepare
        from buildonce.docker import engine  # noqa: F401 - the SDK: loaded here, with the collector paused

    return prepare(env, options, plan, console, policy)


def _connected(job: BuildJob, connect: Callable[[], object]) -> BuildJob:
    """In the thread beside buildx, for a job whose tags were checked before it: connect its engine."""
    with _collector_paused():
        from buildonce.docker import engine  # noqa: F401 - the SDK: loaded here, with the collector paused
    connect()
    return job


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Imports make objects that live as long as the process; with the collector on, it walks them again and
    again while they are made: CPU time that, on a two-core runner, the build beside needs (about 5 ms of a
    trivial build here). Paused meanwhile, then what was made is frozen, as the start's imports are
    (``buildonce.__main__``)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_on:
            gc.enable()


class Beside:
    """One call run in a thread of its own beside the build; ``then`` gets it in that thread when it ends."""

    def __init__(self, work: Callable[[], BuildJob], then: Callable[[Beside], None]) -> None:
        self.job: BuildJob | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work, then), name="prepare")

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()

    def result(self) -> BuildJob:
        """The job, once prepared; the preparation's own exception when it failed."""
        self.join()
        if self.error is not None:
            raise self.error
        if self.job is None:
            raise RuntimeError("the preparation beside the build never ran")
        return self.job

    def _run(self, work: Callable[[], BuildJob], then: Callable[[Beside], None]) -> None:
        try:
            self.job = work()
        except BaseException as exc:  # raised again by result(), in the thread that asks
            self.error = exc
        then(self)


def _stop_unless_needed(prepared: Beside, stopper: Stopper, rebuild: bool) -> None:
    if prepared.error is not None:
        stopper.stop()
        return
    if prepared.job is not None and prepared.job.existing is not None and not rebuild:
        stopper.stop()


def _containerd_store(env: Mapping[str, str]) -> bool:
    from buildonce.docker.engine import Engine

    engine = Engine.connect(env)
    try:
        return engine.containerd_store
    finally:
        engine.close()


def choose_output(push_via: PushVia, builder: Builder, containerd_store: Callable[[], bool], plan: Plan) -> Output:
    """Build into the engine when it can hold the result (the docker driver; several platforms need the
    containerd store), else into an OCI layout that buildonce pushes itself. Either way the build runs once
    and a push fault only ever repeats the push."""
    # Asked only where it matters: the answer costs a connection to the engine.
    needs_store = len(plan.platforms) > 1 or push_via is PushVia.LAYOUT
    if builder.exports_to_engine and needs_store and not containerd_store():
        # The classic image store holds one platform, and its docker driver exports nothing but images.
        if len(plan.platforms) > 1:
            raise InputError(
                f"input 'platforms' names {len(plan.platforms)} platforms, but the builder {builder.name!r} uses the "
                "docker driver with the classic image store, which holds one platform per image. Create a "
                "docker-container builder first (docker/setup-buildx-action), or enable the containerd image store."
            )
        if push_via is PushVia.LAYOUT:
            raise InputError(
                "input 'push-via' is layout, but the docker driver with the classic image store cannot export "
                "an OCI layout. Use push-via: auto, or a docker-container builder."
            )
        return Output.ENGINE
    if push_via is PushVia.LAYOUT:
        return Output.LAYOUT
    engine_can = builder.exports_to_engine
    if push_via is PushVia.ENGINE:
        if not engine_can:
            raise InputError(
                f"input 'push-via' is engine, but the builder {builder.name!r} ({builder.driver} driver) cannot "
                "build this image into the engine's image store. Use push-via: auto."
            )
        return Output.ENGINE
    return Output.ENGINE if engine_can else Output.LAYOUT
