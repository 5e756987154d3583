from __future__ import annotations

import pytest

from buildonce.errors import BuildError, RegistryError
from buildonce.retry import MAX_RETRY_AFTER, RetryPolicy


class Flaky:
    def __init__(self, failures: list[BaseException], result: str = "ok") -> None:
        self.failures = list(failures)
        self.calls = 0
        self.result = result

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


def policy(attempts: int = 3, wait: float = 10) -> tuple[RetryPolicy, list[float], list[str]]:
    sleeps: list[float] = []
    messages: list[str] = []
    return (
        RetryPolicy(
            attempts=attempts, wait_seconds=wait, sleep=sleeps.append, jitter=lambda: 0.5, on_retry=messages.append
        ),
        sleeps,
        messages,
    )


def test_transient_faults_are_retried_with_first_wait_exact_then_exponential_with_jitter() -> None:
    retry, sleeps, messages = policy(attempts=4)
    operation = Flaky([RegistryError("503", transient=True)] * 3)
    assert retry.call(operation, "push x") == ("ok", 4)
    assert sleeps == [10, 10 * 2 * 1.25, 10 * 4 * 1.25]
    assert len(messages) == 3
    assert "attempt 1 of 4" in messages[0]
    assert "503" in messages[0]


def test_no_wait_after_the_last_attempt() -> None:
    retry, sleeps, _ = policy(attempts=3)
    operation = Flaky([RegistryError("503", transient=True)] * 5)
    with pytest.raises(RegistryError, match="still failing after 3 attempts"):
        retry.call(operation, "push x")
    assert operation.calls == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("error", [RegistryError("401 unauthorized"), BuildError("broken"), ValueError("bug")])
def test_permanent_faults_fail_at_once(error: Exception) -> None:
    retry, sleeps, messages = policy()
    operation = Flaky([error])
    with pytest.raises(type(error)):
        retry.call(operation, "push x")
    assert operation.calls == 1
    assert sleeps == []
    assert messages == []


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    retry, sleeps, _ = policy(wait=1)
    operation = Flaky(
        [RegistryError("429", transient=True, retry_after=7), RegistryError("429", transient=True, retry_after=10_000)]
    )
    retry.call(operation, "push x")
    assert sleeps == [7, MAX_RETRY_AFTER]


def test_single_attempt_policy_never_sleeps() -> None:
    retry, sleeps, _ = policy(attempts=1)
    with pytest.raises(RegistryError):
        retry.call(Flaky([RegistryError("503", transient=True)]), "x")
    assert sleeps == []


def test_a_permanent_fault_after_a_transient_one_ends_the_retries_with_its_own_error() -> None:
    retry, sleeps, messages = policy(attempts=5)
    operation = Flaky([RegistryError("503", transient=True), RegistryError("404 manifest unknown")])
    with pytest.raises(RegistryError, match="404 manifest unknown") as raised:
        retry.call(operation, "read x")
    assert not raised.value.transient
    assert operation.calls == 2
    assert sleeps == [10]
    assert len(messages) == 1
    assert retry.most_attempts == 2


def test_an_operation_that_succeeds_at_once_takes_one_attempt_and_no_wait() -> None:
    retry, sleeps, messages = policy()
    assert retry.call(Flaky([]), "read x") == ("ok", 1)
    assert (sleeps, messages, retry.most_attempts) == ([], [], 1)


def test_a_single_attempt_that_fails_transiently_says_so() -> None:
    retry, _, messages = policy(attempts=1)
    with pytest.raises(RegistryError, match="still failing after 1 attempts: 503"):
        retry.call(Flaky([RegistryError("503", transient=True)]), "read x")
    assert messages == []
