"""The explicit API's entry: put tidegate's client side into this process by a call.

For code that wants it without `tidegate run` (scripts, workers, notebooks,
the demo): after `tidegate.connect(...)`, httpx, requests and aiohttp calls to
`http://<service>/...` are balanced over that service's live instances, kept
current by the control plane's watch stream. Nothing is registered: a process
becomes an instance only when a server under the agent starts listening.
"""

from __future__ import annotations

import logging
import os

from tidegate.agent.config import DEFAULT_CONTROL, AgentConfig
from tidegate.agent.runtime import AgentRuntime
from tidegate.control.tokens import given_token
from tidegate.errors import ControlPlaneError, TidegateError


def connect(
    control: str | None = None,
    token: str | None = None,
    *,
    service: str | None = None,
    tag: str = "",
    sync_timeout: float = 10.0,
) -> AgentRuntime:
    """Boot the agent's client side in this process and wait for the first instance list.

    Arguments default to the same environment variables `tidegate run` reads
    (TIDEGATE_CONTROL, TIDEGATE_TOKEN_FILE or TIDEGATE_TOKEN, TIDEGATE_SERVICE). Raises
    ControlPlaneError when no instance list arrived within `sync_timeout`
    (neither from the control plane nor from an on-disk snapshot).
    """
    from tidegate.agent import boot

    config = AgentConfig(
        service=service or os.environ.get("TIDEGATE_SERVICE") or "client",
        tag=tag,
        control=(control or os.environ.get("TIDEGATE_CONTROL") or DEFAULT_CONTROL).rstrip("/"),
        token=token if token is not None else (given_token(None, None, os.environ, logging.getLogger("tidegate").warning) or ""),
    )
    runtime = boot.start(config)
    if runtime is None or runtime.lifecycle is None:
        raise TidegateError("tidegate.connect: the agent could not start; see the 'tidegate' log")
    runtime.lifecycle.serving_requests()
    watcher = runtime.lifecycle.watcher
    if watcher is None or not watcher.wait_synced(sync_timeout):
        raise ControlPlaneError(f"tidegate.connect: no instance list from {config.control} within {sync_timeout:g}s")
    return runtime
