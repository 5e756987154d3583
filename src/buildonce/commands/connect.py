"""The retry policy and the registry client the commands make from their inputs, made one way for all.

The registry client (and so requests) is imported when one is opened, never when this module is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from buildonce.docker.config import Login, docker_config_dir
from buildonce.options import RetryOptions
from buildonce.retry import RetryPolicy

if TYPE_CHECKING:
    from buildonce.github.workflow import Console
    from buildonce.registry.client import Registry


def retry_policy(retry: RetryOptions, console: Console) -> RetryPolicy:
    return RetryPolicy(
        attempts=retry.attempts,
        wait_seconds=retry.wait_seconds,
        timeout_seconds=retry.timeout_seconds,
        on_retry=lambda message: console.warning(message, title="Retrying"),
    )


def open_registry(login: Login | None, env: Mapping[str, str], policy: RetryPolicy) -> Registry:
    """A registry client with the inputs' login and the Docker config's credentials; each of its operations
    ends by the policy's per-attempt deadline."""
    from buildonce.registry.client import Registry

    logins = {login.registry: login.credentials} if login else {}
    return Registry(logins=logins, docker_config=docker_config_dir(env), timeout=policy.timeout_seconds)
