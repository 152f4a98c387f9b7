"""The instance's life in the registry, owned by the process that owns the listening socket.

Server hooks tell the lifecycle two things: `listening(addresses)` once the server
has bound (only the socket's owner: a single uvicorn, uvicorn's supervisor,
gunicorn's arbiter) and `stopping()` when it shuts down; worker processes say
`serving_requests()` instead, which starts their own directory watch. The owner
registers one instance per listening address from a background thread (the
control plane may be down: it retries with backoff and never blocks or crashes
the server), renews leases every heartbeat interval, re-registers an instance
the control plane forgot, and deregisters on shutdown. The owner also watches
the registry (its workers, if any, keep their own watch): a snapshot from a
new control-plane epoch (the control plane restarted and lost its in-memory
registry) has every instance registered again at once, keeping its first
`registered_at` so consumers do not restart its warm-up.

A process that serves nothing (a batch job, a worker, a CLI tool under `tidegate
run`) registers nothing; its directory watch starts at its first call to a host
the directory does not know (`watch_on_demand`, the router's hook), which waits
a bounded time for the first sync so that very call already routes by name.

The capabilities registered on the runtime take part through their hooks
(`tidegate.agent.capability`): told when this process listens, serves and
stops, they may hold registration back (`may_register`), name the state an
instance registers in (`state_on_register`, else SERVING) and add admin
writes. This package imports none of them; `admin.py` is the admin endpoint.

Credentials: each instance gets, when it is made, a `lease_secret` (kept here,
sent at every registration of that instance, so a re-registration after a
control-plane restart holds the same lease; `X-Tidegate-Lease` on its heartbeats,
state changes and deregistration) and a `notice_key` (in the instance record: what
its drain notices are signed with). The admin endpoint takes writes with an
instance's lease secret; `<state dir>/<service>.admin.json` (0600) holds the
admin address and the first instance's lease secret for a local preStop.
"""

from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidegate.agent.capability import SHARED_DIR_ENV, Capabilities, Listening, Serving
from tidegate.agent.forking import FORK_GATE
from tidegate.agent.lifecycle.admin import AdminServer
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance, InstanceState, lease_fingerprint
from tidegate.errors import ControlPlaneError

if TYPE_CHECKING:
    from tidegate.client.control import ControlClient
    from tidegate.client.watch import Watcher

log = logging.getLogger("tidegate")

Address = tuple[str, int]
#: Retries of a control plane that does not answer: this long at first, doubling up to the max
#: (a snapshot from the control plane ends the wait: `_on_epoch`).
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
DEFAULT_HEARTBEAT_S = 5.0  # when the control plane does not say its lease (a third of its default 15 s)
_WILDCARD_PROBE = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
DEREGISTER_TIMEOUT_S = 3.0
#: How long a worker waits, before taking requests, for its first view of the registry.
DIRECTORY_SYNC_WAIT_S = 2.0


class InstanceLifecycle:
    """Registration, heartbeat, admin endpoint and shutdown of this process's instances."""

    def __init__(self, runtime: AgentRuntime, client_factory: Callable[[], ControlClient] | None = None) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self._client_factory = client_factory or self._default_client
        self._capabilities = Capabilities(runtime)
        self._reset()

    def _reset(self) -> None:
        # A fresh lock too: a fork may copy this one held by a thread that does not exist in the child.
        self._lock = threading.Lock()
        self.state = InstanceState.STARTING
        self.owner = False
        self.instances: list[Instance] = []
        self._bound: list[Address] = []
        self.registered = False
        self.started_at = time.time()
        self.admin: AdminServer | None = None
        self.metrics_dir: Path | None = None  # the directory shared with the workers (`create_shared_dir`)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ControlClient | None = None
        self._lease_s: float | None = None  # learned from the control plane's /v1/health
        self._serving_requests = False
        self._watcher: Watcher | None = None
        self._watch_lock = threading.Lock()
        self._demand_lock = threading.Lock()
        self._watch_demanded = False  # a call to an unknown host asked for the watch (once is enough)
        self._pending: list[str] = []  # ids of instances to register (again) at the next turn
        self._wake = threading.Event()  # the registration thread's sleep ends early (a new epoch, stopping)
        self._epoch = ""  # the control plane's epoch the instances were last registered in
        self._lease_secrets: dict[str, str] = {}  # by instance id, made with the instance, never replaced
        self._admin_file: Path | None = None
        #: Set by `stopping` once it deregisters: a registration that lands after it deregisters itself.
        self._deregistering = False
        self._asks_seen: set[str] = set()  # ids of the control plane's asks already acted on (or refused)
        self._asked: list[str] = []  # asks (ASK_OFFLINE, ASK_ONLINE) waiting for `_act_on_asks`
        self._acting = False  # a thread runs `_act_on_asks`

    # -- what server hooks call ------------------------------------------------------

    def listening(self, addresses: Sequence[Address]) -> None:
        """This process owns listening sockets at `addresses`: publish them as instances."""
        with self._lock:
            if self.owner:
                return
            self.owner = True
            inet = [(host, port) for host, port in addresses if port]
            if not inet:
                log.warning("tidegate: the server listens on no TCP address; nothing to register")
                return
            self._bound = inet
            self.instances = [self._instance(host, port) for host, port in inet]
            self.metrics_dir = create_shared_dir()
            self._start_admin()
            self._capabilities.on_listening(Listening(tuple(self.instances), self._admin_port(), self.metrics_dir, self.config.admin_host))
            self._thread = threading.Thread(target=self._keep_registered, name="tidegate-registration", daemon=True)
            self._thread.start()
            atexit.register(self.stopping)  # a server that exits past its shutdown hook still deregisters
        self._start_watcher(wait_s=0.0)  # a new control-plane epoch is news to the owner (no wait: the server is starting)

    def serving_requests(self) -> None:
        """This process serves requests (a worker, or a single-process server): start its own
        watch and wait (bounded) for its first sync, so its first calls to services route."""
        with self._lock:
            if self._serving_requests:
                return
            self._serving_requests = True
        self._start_watcher(wait_s=DIRECTORY_SYNC_WAIT_S)
        directory = os.environ.get(SHARED_DIR_ENV)
        self._capabilities.on_serving(Serving(Path(directory) if directory else None, self.owner))

    @property
    def watcher(self) -> Watcher | None:
        """This process's directory watch (a `tidegate.client.watch.Watcher`), once serving requests
        (or owning the listening sockets, or calling a host by name)."""
        return self._watcher

    def watch_on_demand(self, host: str) -> bool:
        """A call to `host`, which the directory does not know: in a process with no watch yet (it
        serves nothing), start it and wait for the first sync (at most DIRECTORY_SYNC_WAIT_S, once;
        other threads' calls meanwhile wait for the same sync). True when the directory may know
        more than before the call. Cheap after the first time."""
        if self._watch_demanded or _not_a_service_name(host):
            return False
        with self._demand_lock:
            if self._watch_demanded:
                return True  # another thread's first call waited for the sync meanwhile
            synced = False
            if self._watcher is None:
                log.info("tidegate: first call to %r: watching the registry to route calls by service name", host)
                synced = self._start_watcher(wait_s=DIRECTORY_SYNC_WAIT_S)
            self._watch_demanded = True
            return synced

    def stopping(self) -> None:
        """The server shuts down: deregister every instance (bounded), stop heartbeats."""
        with self._lock:
            if not self.owner or self.state == InstanceState.STOPPED:
                return
            self.state = InstanceState.STOPPED
            self._stop.set()
            self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=DEREGISTER_TIMEOUT_S)
        with self._lock:
            # The join may have timed out with a registration in flight (a slow control plane,
            # several instances): that one, when it lands, deregisters itself (`_register`).
            self._deregistering = True
        self._deregister_all()
        if self.admin is not None:
            self.admin.stop()
        self._remove_admin_file()
        if self._watcher is not None:
            _quietly(self._watcher.stop, "stopping the directory watch")
        self._capabilities.on_stopping()

    def set_serving_state(self, state: InstanceState) -> list[Instance]:
        """A drain (DRAINING) or its undoing (SERVING) changes the state `/ready` and re-registrations
        use; the registered instances, for the caller to announce."""
        with self._lock:
            if self.state == InstanceState.STOPPED:
                return []
            self.state = state
            return list(self.instances) if self.registered else []

    def lease_secret(self, instance_id: str) -> str:
        """The lease secret instance `instance_id` of this process registers with ("" for another id):
        what a heartbeat, a state change or a deregistration of it sends in X-Tidegate-Lease."""
        return self._lease_secrets.get(instance_id, "")

    def after_fork_in_child(self) -> None:
        """A forked child is no owner: its parent's threads are gone and its sockets are the parent's."""
        if self.admin is not None:
            _quietly(self.admin.close_inherited, "closing the inherited admin socket")
        self._reset()

    # -- what the admin endpoint shows --------------------------------------------------

    def ready(self) -> bool:
        return self.registered and self.state.routable

    def state_view(self) -> dict[str, Any]:
        first = self.instances[0] if self.instances else None
        return {
            "service": self.config.service,
            "instance_id": first.id if first else None,
            "state": str(self.state),
            "tag": self.config.tag,
            "address": first.address if first else None,
            "admin_port": self.admin.port if self.admin else None,
            "registered": self.registered,
            "in_flight": self.runtime.metrics.server_in_flight() if self.runtime.metrics is not None else 0,
            "instances": [{"id": i.id, "address": i.address} for i in self.instances],
        }

    def metrics_text(self) -> bytes:
        return self.runtime.metrics.server_text() if self.runtime.metrics is not None else b""

    # -- registration ---------------------------------------------------------------------

    def _state_on_register(self) -> InstanceState:
        """The state an instance enters the registry in: the first a capability names (lossless
        online: WARMING when its service has a warm-up window), else SERVING."""
        return self._capabilities.state_on_register() or InstanceState.SERVING

    def _instance(self, host: str, port: int) -> Instance:
        instance = Instance(
            id=f"{self.config.service}-{uuid.uuid4().hex[:12]}",
            service=self.config.service,
            host=self.config.advertise_host or _advertised(host),
            port=port,
            tag=self.config.tag,
            state=InstanceState.STARTING,
            started_at=self.started_at,
            notice_key=secrets.token_urlsafe(32),
        )
        self._lease_secrets[instance.id] = secrets.token_urlsafe(32)
        return instance

    def _accepting(self) -> bool:
        """Whether every address takes connections yet: a supervisor binds before its
        workers listen, and an address that refuses connections is not published."""
        with FORK_GATE:  # name resolution may import a codec: never let a fork catch that half done
            for host, port in self._bound:
                try:
                    socket.create_connection((_WILDCARD_PROBE.get(host, host), port), timeout=1.0).close()
                except OSError:
                    return False
        return True

    def _startup_done(self) -> bool:
        """Every capability lets registration go ahead (lossless online: the app's startup and prewarm finished)."""
        return self._capabilities.may_register()

    def _keep_registered(self) -> None:
        while not self._accepting() or not self._startup_done():
            if self._stop.wait(0.1):
                return
        backoff = FIRST_BACKOFF_S
        with self._lock:
            self._pending = [i.id for i in self.instances]  # not registered (again) yet
        while not self._stop.is_set():
            self._wake.clear()  # before looking at what is pending: a wake-up from now on is not lost
            with FORK_GATE:
                try:
                    self._renew()
                    backoff = FIRST_BACKOFF_S
                    with self._lock:
                        wait = 0.0 if self._pending else self._heartbeat_interval()
                except ControlPlaneError as error:
                    log.warning("tidegate: %s (retrying in %.1fs)", error, backoff)
                    wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)
                except Exception:  # a bug here must not end heartbeats for good
                    log.exception("tidegate: registration loop failed; retrying")
                    wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)
            self._wake.wait(wait)

    def _renew(self) -> None:
        """Register what is pending, heartbeat the rest; an instance the control plane forgot becomes pending."""
        client = self._control()
        with self._lock:
            pending = list(self._pending)
        if self._lease_s is None or pending:  # learn the lease, and the epoch the registrations land in
            health = client.health()
            lease = health.get("instance_ttl")
            self._lease_s = float(lease) if isinstance(lease, (int, float)) and lease > 0 else 0.0
            self._epoch = str(health.get("epoch") or "")
        for instance in [i for i in self.instances if i.id in pending]:
            self._register(client, instance)
            with self._lock:
                if instance.id in self._pending:
                    self._pending.remove(instance.id)
        for instance in self.instances:
            if instance.id not in pending and not client.heartbeat(instance.id, self.lease_secret(instance.id)):
                log.warning("tidegate: control plane forgot instance %s; registering it again", instance.id)
                with self._lock:
                    if instance.id not in self._pending:
                        self._pending.append(instance.id)

    def _on_epoch(self, epoch: str) -> None:
        """The watch saw a snapshot of control-plane epoch `epoch` (on its thread): when the instances
        were registered in another one, the control plane restarted and lost them: register them
        again now, not at the next heartbeat. Not registered yet, the registration thread stops
        backing off: the control plane answers again."""
        with self._lock:
            if not self.owner or self._stop.is_set() or (self.registered and epoch == self._epoch):
                return
            if self.registered:
                self._pending = [i.id for i in self.instances]
                log.info("tidegate: the control plane restarted (epoch %s); registering %s again", epoch, self.config.service)
        self._wake.set()

    def _check_asks(self) -> None:
        """On every change the watch applies: has the control plane asked one of this process's
        instances to go offline or online? Each ask is acted on once, and only when it names this
        instance's id *and* the lease this process holds on it; the capabilities (lossless
        offline) do the work. A snapshot without the ask (a control-plane restart: the registry
        is new and the instances register again in the state they are in) asks nothing, so a
        drain is neither resurrected nor cancelled by it."""
        if not self.owner or not self.registered or self._stop.is_set():
            return
        for instance in list(self.instances):
            seen = self.runtime.directory.find(instance.id)
            ask = seen.ask if seen is not None else None
            if ask is None or ask.id in self._asks_seen:
                continue
            self._asks_seen.add(ask.id)
            if ask.lease != lease_fingerprint(self.lease_secret(instance.id)):
                log.warning("tidegate: ignored an ask (%s) of instance %s under another lease than this process's", ask.want, instance.id)
                continue
            log.info("tidegate: the control plane asks %s to go %s", instance.id, ask.want)
            with self._lock:
                self._asked.append(ask.want)
                start = not self._acting
                self._acting = True
            if start:
                # One thread at a time, asks in the order seen: the watch thread (inside the fork
                # gate) must not wait for a drain's announcements.
                threading.Thread(target=self._act_on_asks, name="tidegate-ask", daemon=True).start()

    def _act_on_asks(self) -> None:
        while True:
            with self._lock:
                if not self._asked:
                    self._acting = False
                    return
                want = self._asked.pop(0)
            if not self._capabilities.asked(want):
                log.warning("tidegate: asked to go %r, which no capability of this agent does (lossless offline off?); ignored", want)

    def _register(self, client: ControlClient, instance: Instance) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            state = self._state_on_register() if self.state == InstanceState.STARTING else self.state
        stored = client.register(_with_state(instance, state, self._admin_port()), self.lease_secret(instance.id))
        with self._lock:
            self.instances = [stored if i.id == stored.id else i for i in self.instances]
            self.registered = True  # even when shutdown began meanwhile: then `stopping` deregisters it ...
            if not self._stop.is_set():
                self.state = state
            late = self._deregistering  # ... unless it deregistered already: then this one is ours to undo
        log.info("tidegate: registered %s as %s at %s (%s)", self.config.service, stored.id, stored.address, state)
        self._check_asks()  # an ask that reached the watch before this registration's answer
        if late:
            try:
                client.deregister(stored.id, self.lease_secret(stored.id))
                log.info("tidegate: deregistered %s (its registration landed after shutdown began)", stored.id)
            except ControlPlaneError as error:
                log.warning("tidegate: could not deregister %s (the lease will expire): %s", stored.id, error)

    def _deregister_all(self) -> None:
        if not self.registered:
            return
        try:
            client = self._control()
            for instance in self.instances:
                client.deregister(instance.id, self.lease_secret(instance.id))
                log.info("tidegate: deregistered %s", instance.id)
        except ControlPlaneError as error:
            log.warning("tidegate: could not deregister (the lease will expire): %s", error)
        self.registered = False

    def _heartbeat_interval(self) -> float:
        """TIDEGATE_HEARTBEAT_INTERVAL, else a third of the lease the control plane grants."""
        if self.config.heartbeat_interval:
            return self.config.heartbeat_interval
        return self._lease_s / 3 if self._lease_s else DEFAULT_HEARTBEAT_S

    def _control(self) -> ControlClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _default_client(self) -> ControlClient:
        from tidegate.client.control import ControlClient

        return ControlClient(self.config.control, self.config.token or None, timeout=DEREGISTER_TIMEOUT_S, ca=self.config.ca or None)

    def _admin_port(self) -> int | None:
        return self.admin.port if self.admin is not None else None

    def _start_admin(self) -> None:
        config = self.config
        try:
            self.admin = AdminServer(
                _AdminView(self),
                config.token,
                host=config.admin_host,
                port=config.admin_port,
                writes=self._capabilities.admin_routes(),
                lease_secrets=self._lease_secrets.values,
                tls=config.admin_tls(),
                names=[config.advertise_host, socket.gethostname(), *(i.host for i in self.instances)],
            )
            self.admin.start()
            log.info("tidegate: admin endpoint on %s", self._admin_url())
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            log.error("tidegate: admin endpoint not started on %s:%d: %s", config.admin_host, config.admin_port, error)
            self.admin = None
            return
        self._write_admin_file()

    def _admin_url(self) -> str:
        host = _WILDCARD_PROBE.get(self.config.admin_host, self.config.admin_host)
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.admin is not None and self.admin.tls else 'http'}://{host}:{self._admin_port()}"

    def _write_admin_file(self) -> None:
        """`<state dir>/<service>.admin.json` (0600): where this instance's admin endpoint is and the
        lease secret its writes take, for a preStop (`python -m tidegate offline`) on this host."""
        if not self.instances:
            return
        from tidegate.agent.config import state_dir

        path = state_dir() / f"{self.config.service}.admin.json"
        url = self._admin_url()
        record = {"admin": url.split("://", 1)[1], "url": url, "lease_secret": self.lease_secret(self.instances[0].id), "pid": os.getpid()}
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600
            with os.fdopen(fd, "w") as out:
                json.dump(record, out)
            os.replace(temp, path)
            self._admin_file = path
        except OSError as error:
            log.warning("tidegate: could not write %s (a local preStop will not find the admin endpoint): %s", path, error)

    def _remove_admin_file(self) -> None:
        path, self._admin_file = self._admin_file, None
        if path is None:
            return
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():  # not one a later process of this service wrote
                path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    def _start_watcher(self, wait_s: float) -> bool:
        """Start this process's directory watch (once) and wait up to `wait_s` for its first sync;
        True when it is synced."""
        with self._watch_lock:
            watcher = self._watcher
            if watcher is None:
                watcher = self._new_watcher()
                if watcher is None:
                    return False
        if wait_s <= 0:
            return False
        if watcher.wait_synced(wait_s):
            return True
        log.warning("tidegate: no instance directory yet (control plane unreachable?); calls to services fail until it syncs")
        return False

    def _new_watcher(self) -> Watcher | None:
        try:
            from tidegate.client.watch import Watcher
        except ImportError:
            log.debug("tidegate: no directory watch available; outbound routing sees no instances")
            return None
        try:
            config = self.config
            self._watcher = watcher = Watcher(
                config.control,
                config.token or None,
                self.runtime.directory,
                self.runtime.rulebook,
                on_epoch=self._on_epoch,
                on_change=self._check_asks,
                gate=FORK_GATE,
                ca=config.ca or None,
            )
            watcher.start()
            return watcher
        except Exception:
            log.exception("tidegate: directory watch not started")
            return None


class _AdminView:
    def __init__(self, lifecycle: InstanceLifecycle) -> None:
        self._lifecycle = lifecycle

    def ready(self) -> bool:
        return self._lifecycle.ready()

    def state(self) -> dict[str, Any]:
        return self._lifecycle.state_view()

    def metrics_text(self) -> bytes:
        return self._lifecycle.metrics_text()


def _with_state(instance: Instance, state: InstanceState, admin_port: int | None) -> Instance:
    """`instance` as it registers now: every field kept (`registered_at` too: a re-registration
    goes on with the warm-up it had), its state and admin port as they are now."""
    return dataclasses.replace(instance, state=state, admin_port=admin_port)


def _not_a_service_name(host: str) -> bool:
    """An IP literal or `localhost`: never a service name, so no reason to watch the registry."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def create_shared_dir() -> Path:
    """Make the directory this server's owner shares with its workers, export it, remove it at exit."""
    path = Path(tempfile.mkdtemp(prefix="tidegate-metrics-"))
    os.environ[SHARED_DIR_ENV] = str(path)
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # a forked worker exiting must not remove its server's directory
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def _advertised(bound_host: str) -> str:
    """The host consumers should call: the bound one, or this machine's address for a wildcard bind."""
    if bound_host not in ("0.0.0.0", "::", ""):
        return bound_host
    # The host name's address: what Kubernetes gives a pod (its IP) and what
    # most hosts resolve; found without sending anything anywhere.
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return address


def _quietly(action: Callable[[], object], what: str) -> None:
    try:
        action()
    except Exception:
        log.debug("tidegate: failed %s", what, exc_info=True)
