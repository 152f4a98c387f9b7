"""Delayed registration: an instance registers only once its app started and its prewarm ran.

Every request-serving process calls `Prewarm.begin(addresses, loop)` from its
server hook once the app's startup finished (uvicorn: lifespan startup done
and sockets bound; gunicorn: worker booted). A background thread then runs the
prewarm steps the plan switches on — the library steps each instrumentor
registered (`add_step`: SQLAlchemy pools filled, redis-py pools connected, HTTP
connections opened to services called in the previous life or declared), then
warm-up requests sent to the instance itself — waits the
optional register delay, and leaves a marker file in the server's shared
directory (`SHARED_DIR_ENV`). The process that owns the socket asks
`may_register()` before registering: true once a marker is there, or after
`TIDEGATE_PREWARM_TIMEOUT` (default 60 s) so a server without a startup hook
still registers. A failing step is logged and the next one runs.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tidegate.agent.capability import SHARED_DIR_ENV
from tidegate.core.prewarm import PrewarmPlan, PrewarmSpecError, WarmupRequest, overlay, parse_seconds, plan_from_env
from tidegate.rules.settings import KIND as SETTINGS_KIND

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate")

Address = tuple[str, int]
DEFAULT_TIMEOUT_S = 60.0
MARKER_PREFIX = "prewarmed-"
_PROBE_HOST = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
#: The plan's switch of a library step (a `PrewarmPlan` field).
Switch = Literal["sqlalchemy", "redis", "http"]
#: The order library steps run in, by their switch.
SWITCHES: tuple[Switch, ...] = ("sqlalchemy", "redis", "http")
#: A library step: `step(plan, loop)` fills what it tracks and returns a summary for the log
#: (`loop`: the server's event loop, where async pools' connections belong; None for WSGI servers).
PrewarmStep = Callable[[PrewarmPlan, "asyncio.AbstractEventLoop | None"], str]


class Prewarm:
    """This process's startup gate and prewarm run."""

    def __init__(self, runtime: AgentRuntime, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self.runtime = runtime
        self.local_plan, problems = plan_from_env(env)
        for problem in problems:
            log.error("tidegate: %s (that prewarm setting keeps its default)", problem)
        self.timeout_s = DEFAULT_TIMEOUT_S
        text = env.get("TIDEGATE_PREWARM_TIMEOUT", "").strip()
        if text:
            try:
                self.timeout_s = parse_seconds(text, "TIDEGATE_PREWARM_TIMEOUT")
            except PrewarmSpecError as bad:
                log.error("tidegate: %s (using %.0f s)", bad, DEFAULT_TIMEOUT_S)
        self._lock = threading.Lock()
        self._begun_in: int | None = None  # pid that began, so a forked child begins again
        self.done = threading.Event()
        self.report: list[str] = []
        self._waiting_since: float | None = None
        self._open = False
        self._steps: dict[Switch, PrewarmStep] = {}

    def add_step(self, switch: Switch, step: PrewarmStep) -> None:
        """Run `step` when the plan's `switch` is on (an instrumentor registers the step of its library;
        a second one for the same switch replaces the first)."""
        self._steps[switch] = step

    # -- request-serving process --------------------------------------------------------

    def plan(self) -> PrewarmPlan:
        """The local plan overlaid with this service's `ServiceSettings` in force."""
        plan = self.local_plan
        for rule in self.runtime.rulebook.of_kind(SETTINGS_KIND):
            spec = rule.document.get("spec") or {}
            if spec.get("service") == self.runtime.config.service:
                try:
                    plan = overlay(plan, spec)
                except PrewarmSpecError as bad:
                    log.error("tidegate: %s/%s: %s", SETTINGS_KIND, rule.name, bad)
        return plan

    def begin(self, addresses: Sequence[Address], loop: asyncio.AbstractEventLoop | None = None) -> None:
        """The app's startup finished in this process: prewarm in the background, then mark it."""
        with self._lock:
            if self._begun_in == os.getpid():
                return
            self._begun_in = os.getpid()
            self.done = threading.Event()
        threading.Thread(target=self._run, args=(list(addresses), loop), name="tidegate-prewarm", daemon=True).start()

    def _run(self, addresses: list[Address], loop: asyncio.AbstractEventLoop | None) -> None:
        began = time.monotonic()
        plan = self.plan()
        report: list[str] = []
        for switch in SWITCHES:
            if not getattr(plan, switch):
                report.append(f"{switch}: off")
                continue
            step = self._steps.get(switch)
            if step is None:
                continue  # its library is not instrumented here
            try:
                report.append(f"{switch}: {step(plan, loop)}")
            except Exception as error:  # a failed step never keeps the instance out of the registry
                log.exception("tidegate: prewarm step %s failed", switch)
                report.append(f"{switch}: failed ({error})")
        if plan.warmup_requests:
            report.append(f"warm-up requests: {send_warmup_requests(addresses, plan.warmup_requests)}")
        if plan.register_delay_s:
            time.sleep(plan.register_delay_s)
            report.append(f"register delay: {plan.register_delay_s:g} s")
        self.report = report
        log.info("tidegate: startup and prewarm done in %.2f s (%s)", time.monotonic() - began, "; ".join(report))
        self._mark_done()

    def _mark_done(self) -> None:
        self.done.set()
        directory = os.environ.get(SHARED_DIR_ENV)
        if directory:
            try:
                (Path(directory) / f"{MARKER_PREFIX}{os.getpid()}").write_text(str(time.time()))
            except OSError as error:
                log.warning("tidegate: could not mark prewarm done in %s: %s", directory, error)

    # -- socket-owning process ---------------------------------------------------------

    def may_register(self) -> bool:
        """Whether startup and prewarm finished in a request-serving process (or waiting timed out)."""
        if self._open:
            return True
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        directory = os.environ.get(SHARED_DIR_ENV)
        if self.done.is_set() or (directory and any(Path(directory).glob(f"{MARKER_PREFIX}*"))):
            self._open = True
        elif time.monotonic() - self._waiting_since >= self.timeout_s:
            log.warning("tidegate: no startup/prewarm report after %.0f s (TIDEGATE_PREWARM_TIMEOUT); registering anyway", self.timeout_s)
            self._open = True
        return self._open


def send_warmup_requests(addresses: Sequence[Address], requests: Sequence[WarmupRequest], timeout_s: float = 10.0) -> str:
    """Send each warm-up request to the first address (the instance itself); a summary of the statuses."""
    if not addresses:
        return "no address to send to"
    host, port = addresses[0]
    host = _PROBE_HOST.get(host, host)
    statuses: dict[str, int] = {}
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        for request in requests:
            for _ in range(request.count):
                outcome = _send(connection, request)
                statuses[outcome] = statuses.get(outcome, 0) + 1
    finally:
        connection.close()
    return ", ".join(f"{count} x {key}" for key, count in statuses.items())


def _send(connection: http.client.HTTPConnection, request: WarmupRequest) -> str:
    try:
        connection.request(request.method, request.path, headers={"user-agent": "tidegate-warmup"})
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as error:
        connection.close()  # the next request reconnects
        return type(error).__name__
