"""Lossless offline in the agent: drain this instance before its server stops, and hear others drain.

`LosslessOffline` is the process's one object for it, a capability registered
on the runtime by `install`. In the process that owns the listening socket it runs the
drain (shared/DESIGN.md, "Lossless offline"): on SIGTERM, from the server hooks
before the server's own shutdown closes the listener, or on `POST /offline`:

  1. state DRAINING: `/ready` says 503, the control plane is told (it pushes
     the state to every consumer's watch stream, and routable() drops it);
  2. every channel at once: the push of 1 (started first), a direct signed
     `POST /drain-notice` to the admin endpoint of each consumer that called
     recently and that the directory backs (`tidegate.core.notice`: no token is
     ever sent to a consumer, and an address a caller names that no instance of
     its service holds is never called), and `x-tidegate-draining: 1` plus
     `Connection: close` on every response. Both calls run on their own
     threads, outside the fork gate: a consumer that never answers delays
     nothing but its own notice;
  3. wait until no request is in flight (at least a settle time, at most
     TIDEGATE_DRAIN_TIMEOUT, 20 s by default), then return to the server,
     whose own shutdown runs (the instance is deregistered there).

In every process it also keeps `DrainNotices` (the consumer side) and the
recent-consumer set. Workers of a multi-process server learn the drain and the
notices from the owner, and report their in-flight count and consumers back,
through `board.py`. TIDEGATE_LOSSLESS=off leaves all of this out (its admin
writes then answer 409 saying so).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tidegate.agent.capability import AdminRoute, Capability, Listening, Serving, SignedBody
from tidegate.agent.offline.board import POLL_S, OwnerBoard, WorkerBoard
from tidegate.agent.offline.notices import DrainNotices
from tidegate.agent.runtime import AgentRuntime, get_runtime
from tidegate.core.context import DRAINING_HEADER, consumer_value
from tidegate.core.drain import DEFAULT_TIMEOUT_S, Drain, DrainPhase, DrainSettings, RecentConsumers
from tidegate.core.instance import ASK_OFFLINE, ASK_ONLINE, Instance, InstanceState
from tidegate.core.notice import SIGNATURE_HEADER, NoticeCheck, notice_body, sign, targets

if TYPE_CHECKING:
    from tidegate.core.context import RequestContext

log = logging.getLogger("tidegate")

#: Set by the owner before its workers fork or spawn: the admin address calls from them name.
ADMIN_ENV = "TIDEGATE_CONSUMER_ADMIN"
NOTICE_TIMEOUT_S = 1.0
#: Consumers told at once (each at most NOTICE_TIMEOUT_S per notice).
NOTICE_PARALLEL = 16
_DRAIN_HEADERS = ((DRAINING_HEADER, "1"), ("Connection", "close"))


class LosslessError(ValueError):
    """A drain setting or request is malformed; the message names it."""


def settings_from_env(environ: dict[str, str] | None = None) -> tuple[bool, DrainSettings]:
    """(on, settings) from TIDEGATE_LOSSLESS and TIDEGATE_DRAIN_TIMEOUT."""
    env = os.environ if environ is None else environ
    switch = env.get("TIDEGATE_LOSSLESS", "on").strip().lower()
    if switch not in ("on", "off", "1", "0", "true", "false", ""):
        raise LosslessError(f"TIDEGATE_LOSSLESS: {switch!r} is not on or off")
    on = switch in ("on", "1", "true", "")
    text = env.get("TIDEGATE_DRAIN_TIMEOUT", "").strip()
    try:
        timeout = float(text) if text else DEFAULT_TIMEOUT_S
        return on, DrainSettings(timeout_s=timeout, settle_s=min(1.0, timeout))
    except ValueError as error:
        raise LosslessError(f"TIDEGATE_DRAIN_TIMEOUT: {text!r}: {error}") from None


def install(runtime: AgentRuntime) -> LosslessOffline | None:
    """Register the process's `LosslessOffline` on `runtime`; None when switched off (or misconfigured,
    logged), and then what is registered instead only answers the admin writes with why."""
    try:
        on, settings = settings_from_env()
    except LosslessError as error:
        log.error("tidegate: lossless offline off: %s", error)
        on, settings = False, DrainSettings()
    if not on:
        runtime.add(SwitchedOff())
        return None
    return runtime.add(LosslessOffline(runtime, settings))


class LosslessOffline(Capability):
    """This process's lossless offline: the drain (socket owner), the recent consumers, the notices heard."""

    def __init__(self, runtime: AgentRuntime, settings: DrainSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.notices = DrainNotices(runtime.directory)
        self.consumers = RecentConsumers()
        self.notice_check = NoticeCheck()
        self.drain = Drain(settings)
        self._lock = threading.Lock()
        self._owner_board: OwnerBoard | None = None
        self._worker_thread: threading.Thread | None = None
        self._applied_notices: set[tuple[str, float]] = set()
        #: Set from a signal handler (which must not start threads or take the agent's locks):
        #: a thread waiting on it begins the drain before the server gets round to its shutdown.
        self._signalled = threading.Event()
        self.stopping = False  # the server was told to stop (SIGTERM): the drain is not undone

    # -- inbound: who calls ------------------------------------------------------------------

    def consumer_seen(self, service: str, admin: str) -> None:
        """A request came from `service`, whose admin endpoint is at `admin` (request path)."""
        self.consumers.seen(service, admin, time.time())

    # -- owner: the drain ----------------------------------------------------------------------

    def on_listening(self, owner: Listening) -> None:
        """This process owns the socket: calls from it (and its workers) name its admin address.

        The address is named when providers can reach it (`Listening.admin_address`): an admin
        endpoint on loopback only for an instance that advertises a loopback host (its providers
        run on the same machine), one on the pod's address (TIDEGATE_ADMIN_HOST) from anywhere;
        otherwise the control plane's push and the response header tell this consumer."""
        address = owner.admin_address
        if address:
            os.environ[ADMIN_ENV] = address
            self.runtime.consumer = consumer_value(self.runtime.config.service, address)
        if owner.shared_dir is not None:
            self._owner_board = OwnerBoard(owner.shared_dir)
        threading.Thread(target=self._begin_when_signalled, name="tidegate-drain-signal", daemon=True).start()

    def signalled(self) -> None:
        """SIGTERM arrived (called from the signal handler): begin draining now. A drain begun by
        SIGTERM is the server stopping: `POST /online` must not undo it, from the first moment."""
        self.stopping = True
        self._signalled.set()

    def _begin_when_signalled(self) -> None:
        self._signalled.wait()
        try:
            self.begin()
        except Exception:  # the server's own shutdown hook drains again if this failed
            log.exception("tidegate: beginning the drain on SIGTERM failed")

    def begin(self) -> bool:
        """Steps 1 and 2 of the drain; False when one is under way or over already."""
        lifecycle = self.runtime.lifecycle
        with self._lock:
            if not self.drain.begin(time.monotonic()):
                return False
            started = time.time()
            self._headers(on=True)
            if self._owner_board is not None:
                self._owner_board.draining_since = started
                self._owner_board.publish()
        instances = lifecycle.set_serving_state(InstanceState.DRAINING) if lifecycle is not None else []
        # The control plane first; the direct notices beside it, on their own thread: neither waits
        # for the other, and neither runs inside the fork gate.
        threading.Thread(
            target=self._announce, args=(instances, InstanceState.DRAINING), name="tidegate-drain-announce", daemon=True
        ).start()
        threading.Thread(target=self._notify_consumers, args=(instances,), name="tidegate-drain-notices", daemon=True).start()
        log.info(
            "tidegate: draining %s: consumers told; in-flight requests finish (at most %gs)",
            self.runtime.config.service,
            self.settings.timeout_s,
        )
        return True

    def progress(self) -> dict[str, Any]:
        """Observe the in-flight count now; the drain's progress."""
        with self._lock:
            self.drain.observe(self._in_flight(), time.monotonic())
            return self.drain.progress(time.monotonic())

    def wait(self) -> dict[str, Any]:
        """Step 3: until nothing is in flight (or the timeout); the final progress."""
        while True:
            progress = self.progress()
            if self.drain.phase != DrainPhase.DRAINING:
                break
            time.sleep(self.drain.next_check_in(time.monotonic(), POLL_S) or POLL_S / 5)
        log.info(
            "tidegate: drain of %s %s after %.2fs (%d in flight)",
            self.runtime.config.service,
            "done" if self.drain.phase == DrainPhase.DRAINED else "ended",
            progress["elapsed_s"],
            progress["in_flight"],
        )
        return progress

    def drain_before_stop(self) -> None:
        """What a server hook calls when SIGTERM arrives, before the server's own shutdown."""
        lifecycle = self.runtime.lifecycle
        if lifecycle is None or not lifecycle.owner or lifecycle.state == InstanceState.STOPPED:
            return
        self.stopping = True
        self.begin()  # a no-op when the signal's thread began it already
        self.wait()

    def online(self) -> bool:
        """Undo a drain that has not finished; False when there is none, or the server is stopping."""
        with self._lock:
            if self.stopping or not self.drain.cancel(time.monotonic()):
                return False
            self._headers(on=False)
            if self._owner_board is not None:
                self._owner_board.draining_since = 0.0
                self._owner_board.publish()
        lifecycle = self.runtime.lifecycle
        instances = lifecycle.set_serving_state(InstanceState.SERVING) if lifecycle is not None else []
        self._announce(instances, InstanceState.SERVING)
        log.info("tidegate: drain of %s undone; serving again", self.runtime.config.service)
        return True

    def asked(self, want: str) -> bool:
        """The control plane asks (an admin, a rollout's promotion): offline runs the drain the admin
        endpoint's `POST /offline?wait=false` runs (in-flight requests finish, consumers told, /ready
        503; the process stays up, so online can undo it); online undoes it as `POST /online` does."""
        lifecycle = self.runtime.lifecycle
        if lifecycle is None or not lifecycle.owner:
            return False
        if want == ASK_OFFLINE:
            if self.drain.phase in (DrainPhase.IDLE, DrainPhase.CANCELLED):
                self.begin()
            return True
        if want == ASK_ONLINE:
            if not self.online() and self.drain.phase != DrainPhase.IDLE:
                # Stopping, or the drain finished: the registry must not say SERVING meanwhile.
                log.warning("tidegate: asked to come online, but %s cannot (drain is %s)", self.runtime.config.service, self.drain.phase)
                self._announce(lifecycle.set_serving_state(InstanceState.DRAINING), InstanceState.DRAINING)
            return True
        return False

    def _headers(self, on: bool) -> None:
        headers = self.runtime.response_headers
        for header in _DRAIN_HEADERS:
            if on and header not in headers:
                headers.append(header)
            elif not on and header in headers:
                headers.remove(header)

    def _in_flight(self) -> int:
        own = self.runtime.metrics.in_flight if self.runtime.metrics is not None else 0
        board = self._owner_board
        if board is None:
            return own
        return own + board.workers_in_flight(board.draining_since)

    def _announce(self, instances: list[Instance], state: InstanceState) -> None:
        if not instances:
            return
        from tidegate.client.control import ControlClient
        from tidegate.errors import ControlPlaneError

        config, lifecycle = self.runtime.config, self.runtime.lifecycle
        try:
            with ControlClient(config.control, config.token or None, timeout=2.0) as client:
                for instance in instances:
                    client.set_state(instance.id, state, lease=lifecycle.lease_secret(instance.id) if lifecycle else "")
        except ControlPlaneError as error:
            log.warning("tidegate: could not tell the control plane %s is %s (other channels carry it): %s", config.service, state, error)

    def _notify_consumers(self, instances: list[Instance]) -> None:
        """The direct channel: a signed POST /drain-notice to every recent consumer the directory
        backs, NOTICE_PARALLEL at a time; never a token."""
        now = time.time()
        if self._owner_board is not None:
            self.consumers.merge(tuple(c) for r in self._owner_board.reports() for c in r.get("consumers", ()))
        recent = [(service, admin) for service, admin, _ in self.consumers.current(now)]
        chosen = targets(recent, self.runtime.directory.instances)
        if len(chosen) < len({admin for _, admin in recent}):
            log.info(
                "tidegate: %d recent consumer address(es) no instance in the directory holds: not told",
                len({a for _, a in recent}) - len(chosen),
            )
        signed = [(i.id, i.notice_key) for i in instances if i.notice_key]
        if not chosen or not signed:
            return
        service = self.runtime.config.service
        by_id = {i.id: i for i in instances}

        def tell(admin: str) -> None:
            for instance_id, key in signed:
                body = notice_body(service, instance_id, by_id[instance_id].address, time.time())
                request = urllib.request.Request(
                    f"http://{admin}/drain-notice",
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(key, body)},
                )
                try:
                    with urllib.request.urlopen(request, timeout=NOTICE_TIMEOUT_S) as answer:
                        answer.read()
                except OSError as error:
                    log.info("tidegate: drain notice to consumer admin %s failed (other channels carry it): %s", admin, error)
                    return

        with ThreadPoolExecutor(max_workers=min(NOTICE_PARALLEL, len(chosen)), thread_name_prefix="tidegate-notice") as pool:
            list(pool.map(tell, chosen))
        log.info("tidegate: drain notice sent to %d consumer(s): %s", len(chosen), ", ".join(chosen))

    # -- consumer side: notices from providers ----------------------------------------------------

    def receive_notice(self, body: Any) -> tuple[int, dict[str, Any]]:
        """`POST /drain-notice`: a provider this process calls drains. Acted on only when signed by
        an instance the directory knows, fresh and not seen before (`tidegate.core.notice`)."""
        if not isinstance(body, SignedBody):
            return 400, {"error": "a drain notice is the exact signed body of a POST /drain-notice"}
        verdict = self.notice_check.verify(body.raw, body.signature, self.runtime.directory.find, time.time())
        if not verdict.ok or verdict.instance is None:
            log.info("tidegate: drain notice refused (%d): %s", verdict.status, verdict.reason)
            return verdict.status, {"error": verdict.reason}
        instance = verdict.instance
        fresh = self.notices.notice(instance.id, instance.address, "direct notice")
        if self._owner_board is not None:
            self._owner_board.add_notice(instance.id, instance.address, time.time())
        return 200, {"noticed": instance.id, "new": fresh}

    # -- workers of a multi-process server ---------------------------------------------------------

    def on_serving(self, serving: Serving) -> None:
        """A worker serves requests: take the owner's admin address, follow the board."""
        if serving.owner:
            return
        address = os.environ.get(ADMIN_ENV)
        if address:
            self.runtime.consumer = consumer_value(self.runtime.config.service, address)
        if serving.shared_dir is not None and self._worker_thread is None:
            board = WorkerBoard(serving.shared_dir)
            self._worker_thread = threading.Thread(target=self._follow, args=(board,), name="tidegate-drain-board", daemon=True)
            self._worker_thread.start()

    def after_fork_in_child(self) -> None:
        """A forked child has none of its parent's threads, and is no owner."""
        self._lock = threading.Lock()
        self._signalled = threading.Event()
        self._worker_thread = None
        self._owner_board = None

    # -- the admin endpoint ---------------------------------------------------------------------------

    def admin_routes(self) -> Mapping[str, AdminRoute]:
        """`POST /offline[?wait=false]`, `POST /online` (token-checked by the admin endpoint; they may
        take long, a drain, and so run outside the fork gate), `POST /drain-notice` (checked by its signature)."""
        return {
            "/offline": AdminRoute(self._admin_offline, gated=False),
            "/online": AdminRoute(self._admin_online, gated=False),
            "/drain-notice": AdminRoute(lambda body, query: self.receive_notice(body), signed=True),
        }

    def _admin_offline(self, body: Any, query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
        wait = query.get("wait", ["true"])[-1].lower()
        if wait not in ("true", "false", "1", "0"):
            return 400, {"error": f"query 'wait' must be true or false; got {wait!r}"}
        lifecycle = self.runtime.lifecycle
        if lifecycle is None or not lifecycle.owner:
            return 409, {"error": "this process owns no listening socket: nothing to drain"}
        if self.drain.phase in (DrainPhase.IDLE, DrainPhase.CANCELLED):
            self.begin()
        progress = self.wait() if wait in ("true", "1") else self.progress()
        return 200, progress

    def _admin_online(self, body: Any, query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if not self.online():
            why = "the server is stopping (SIGTERM)" if self.stopping else f"no unfinished drain to undo (drain is {self.drain.phase})"
            return 409, {"error": why, **self.progress()}
        return 200, self.progress()

    # -- workers' side of the board -----------------------------------------------------------------

    def _follow(self, board: WorkerBoard) -> None:
        draining_since = 0.0
        while True:
            try:
                seen = board.changed()
                if seen is not None:
                    draining_since = float(seen.get("draining") or 0)
                    self._headers(on=bool(draining_since))
                    for instance_id, address, at in seen.get("notices", ()):
                        if (instance_id, at) not in self._applied_notices:
                            self._applied_notices.add((instance_id, at))
                            self.notices.notice(instance_id, address, "direct notice (via the server's main process)")
                in_flight = self.runtime.metrics.in_flight if self.runtime.metrics is not None else 0
                board.report(
                    {
                        "ack": draining_since,
                        "in_flight": in_flight if draining_since else 0,
                        "consumers": self.consumers.current(time.time()),
                    }
                )
            except Exception:  # the board must not stop following for one bad read
                log.debug("tidegate: drain board follow failed", exc_info=True)
            time.sleep(POLL_S)


class SwitchedOff(Capability):
    """Stands in for lossless offline when TIDEGATE_LOSSLESS=off: its admin writes say why they do nothing."""

    def admin_routes(self) -> Mapping[str, AdminRoute]:
        def refuse(body: Any, query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
            return 409, {"error": "lossless offline is switched off (TIDEGATE_LOSSLESS=off)"}

        return {
            "/offline": AdminRoute(refuse, gated=False),
            "/online": AdminRoute(refuse, gated=False),
            "/drain-notice": AdminRoute(refuse, signed=True),
        }


# -- what server hooks and inbound adapters call ---------------------------------------------------


def drain_on_signal(runtime: AgentRuntime | None) -> None:
    """A server's SIGTERM handler calls this: the drain begins at once, not at the server's next tick."""
    lossless = runtime.capability(LosslessOffline) if runtime is not None else None
    if lossless is not None and lossless.runtime.lifecycle is not None and lossless.runtime.lifecycle.owner:
        lossless.signalled()


def drain_before_stop(runtime: AgentRuntime | None) -> None:
    """Server hooks call this on SIGTERM, before the server's own shutdown; returns once drained."""
    lossless = runtime.capability(LosslessOffline) if runtime is not None else None
    if lossless is not None:
        lossless.drain_before_stop()


def note_consumer(incoming: RequestContext) -> None:
    """Inbound adapters call this for a request whose consumer named its admin address."""
    runtime = get_runtime()
    lossless = runtime.capability(LosslessOffline) if runtime is not None else None
    if lossless is not None:
        lossless.consumer_seen(incoming.origin, incoming.origin_admin)
