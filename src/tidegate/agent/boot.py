"""Boots the agent in this process: once, cheaply, and never at the program's expense.

`start()` builds the process's `AgentRuntime` (settings, directory, rule book),
registers its capabilities in the order their hooks run — metrics, lanes,
lossless online, the outbound router, lossless offline, stability — gives it
its lifecycle, builds the process's one outbound call pipeline from them
(which the HTTP client instrumentors take), publishes it, and applies every
instrumentor. Booting starts no thread and binds nothing: a process becomes a
server only when a server hook says so, and watches the registry only then or
at its first call to a host the directory does not know (a batch job, a
worker, a CLI tool: the router's `on_unknown` is the lifecycle's
`watch_on_demand`), so a wrapper process (e.g. `opentelemetry-instrument`
before its exec) costs nothing. A forked child gets one at-fork call: every
capability's `after_fork_in_child`, then the lifecycle's (no ownership of its
parent's registration).
"""

from __future__ import annotations

import logging
import os
import threading

from tidegate.agent import lanes, offline, online, stability
from tidegate.agent.capability import Capabilities
from tidegate.agent.config import AgentConfig, AgentConfigError, remove_temporary_token_at_exit
from tidegate.agent.instrumentation import install_all
from tidegate.agent.instrumentation.base import outbound_pipeline
from tidegate.agent.lifecycle import InstanceLifecycle
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.metrics.push import MetricsPush
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.agent.runtime import AgentRuntime, get_runtime, set_runtime
from tidegate.core import context
from tidegate.core.instance import InstanceState

log = logging.getLogger("tidegate")

_boot_lock = threading.Lock()


def start(config: AgentConfig | None = None) -> AgentRuntime | None:
    """Boot the agent (idempotent); None when its settings are invalid, which is logged."""
    with _boot_lock:
        runtime = get_runtime()
        if runtime is not None:
            return runtime
        remove_temporary_token_at_exit()  # the token file `tidegate run` made for this program, if any
        try:
            config = config or AgentConfig.from_env()
        except AgentConfigError as error:
            log.error("tidegate: agent not started: %s", error)
            return None
        _ensure_log_handler()
        metrics = AgentMetrics()
        runtime = AgentRuntime(config=config, metrics=metrics)
        runtime.consumer = config.service
        context.set_lane_key(config.lane_key)
        runtime.add(metrics)
        runtime.add(MetricsPush(runtime, metrics.snapshot))  # the server's numbers to the control plane
        lane_state = runtime.add(lanes.install(runtime.rulebook, config.service, config.tag))
        lossless_online = online.install(runtime)
        router = _build_router(runtime, lane_state, lossless_online)
        runtime.router = router
        runtime.lifecycle = lifecycle = InstanceLifecycle(runtime)
        if router is not None:
            router.on_unknown = lifecycle.watch_on_demand  # a process that serves nothing routes by name too
        if runtime.router is not None:
            lossless_online.remember_calls()
        offline.install(runtime)
        _install_stability(runtime)
        _build_outbound_pipeline(runtime)
        set_runtime(runtime)
        install_all(runtime)
        os.register_at_fork(after_in_child=_after_fork_in_child)
        return runtime


def current_state() -> InstanceState | None:
    """This process's instance state, or None when the agent is not loaded."""
    runtime = get_runtime()
    if runtime is None or runtime.lifecycle is None:
        return None
    return runtime.lifecycle.state


def _build_router(runtime: AgentRuntime, lane_state: lanes.LaneState, lossless_online: online.LosslessOnline) -> OutboundRouter | None:
    try:
        return runtime.add(OutboundRouter(runtime.directory, lanes=lane_state, weighting=lossless_online.warmup.weighting))
    except Exception:
        log.exception("tidegate: outbound routing not started; calls go out untouched")
        return None


def _build_outbound_pipeline(runtime: AgentRuntime) -> None:
    try:
        outbound_pipeline(runtime)
    except Exception:
        log.exception("tidegate: the outbound call pipeline not started; calls go out untouched")


def _install_stability(runtime: AgentRuntime) -> None:
    try:
        stability.install(runtime)
    except Exception:  # protection failing to start must not stop the program
        log.exception("tidegate: stability protection not started; calls are not governed")


def _after_fork_in_child() -> None:
    runtime = get_runtime()
    if runtime is None:
        return
    Capabilities(runtime).after_fork_in_child()
    if runtime.lifecycle is not None:
        runtime.lifecycle.after_fork_in_child()


def _ensure_log_handler() -> None:
    """Warnings of the agent reach stderr even when the program configures no logging."""
    logger = logging.getLogger("tidegate")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        level = os.environ.get("TIDEGATE_LOG_LEVEL", "INFO").upper()
        logger.setLevel(level if level in logging.getLevelNamesMapping() else logging.INFO)
        logger.propagate = False
