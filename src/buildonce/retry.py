"""The retry policy for registry operations: what is transient, how long to wait, when to give up.

Only registry work is ever retried, never a build. Transient faults are 5xx, 429, refused or reset
connections and timeouts; anything else fails at once with the message of the error that caused it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from buildonce.errors import RegistryError

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

T = TypeVar("T")

MAX_RETRY_AFTER = 300.0
"""A registry asking for more than five minutes is treated as asking for five: the job has a timeout."""


def is_transient(error: BaseException) -> bool:
    return isinstance(error, RegistryError) and error.transient


@dataclass
class RetryPolicy:
    attempts: int = 3
    wait_seconds: float = 10.0
    timeout_seconds: float = 25 * 60
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random
    on_retry: Callable[[str], None] = field(default=lambda message: None)
    most_attempts: int = field(default=0, init=False)
    """The most attempts any one operation has needed so far, look-ups included: the ``attempts`` output."""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def wait_before(self, retry_number: int, error: BaseException | None) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry).

        The first wait is ``wait_seconds`` exactly; later ones double and add up to 50% jitter, so that many
        jobs hitting the same outage do not retry in lockstep. A registry's Retry-After wins when longer.
        """
        wait = self.wait_seconds
        if retry_number > 1:
            wait = self.wait_seconds * 2 ** (retry_number - 1) * (1 + self.jitter() / 2)
        if isinstance(error, RegistryError) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, MAX_RETRY_AFTER))
        return wait

    def call_timed(self, operation: Callable[[float], T], what: str) -> T:
        """``call`` for an operation that takes its deadline: each attempt gets ``timeout_seconds``."""
        result, _ = self.call(lambda: operation(self.timeout_seconds), what)
        return result

    def call(self, operation: Callable[[], T], what: str) -> tuple[T, int]:
        """Run ``operation`` until it succeeds, fails permanently, or runs out of attempts.

        Returns its result and the number of attempts it took. No wait follows the last attempt.
        """
        attempts = 0

        def counted() -> T:
            nonlocal attempts
            attempts += 1
            with self._lock:  # operations run in several threads at once
                self.most_attempts = max(self.most_attempts, attempts)
            return operation()

        try:
            try:
                # Most operations succeed at once: tenacity is imported, and runs the rest, at the first
                # transient fault, which it is handed as its own first attempt's.
                return counted(), attempts
            except RegistryError as error:
                if not error.transient:
                    raise
                first = error
            result = self._retrying(what)(_replaying(first, counted))
        except RegistryError as error:
            if error.transient and attempts >= self.attempts:
                raise RegistryError(
                    f"{what}: still failing after {attempts} attempts: {error}", transient=True
                ) from error
            raise
        return result, attempts

    def _retrying(self, what: str) -> Retrying:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return self.wait_before(state.attempt_number, error)

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            seconds = state.upcoming_sleep
            self.on_retry(
                f"{what}: attempt {state.attempt_number} of {self.attempts} failed ({error}); "
                f"retrying in {seconds:.0f} s"
            )

        return Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait,
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )


def _replaying(failure: BaseException, operation: Callable[[], T]) -> Callable[[], T]:
    """``operation``, whose first call (one already made) raises what it raised then."""
    replayed = False

    def attempt() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise failure
        return operation()

    return attempt
