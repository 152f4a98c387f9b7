"""Where a gateway's instances and rules come from, and its own registration.

- The control plane (`--control`): the watch stream every agent follows
  (`tidegate.client.watch.Watcher`: instances with their states, rules, an
  on-disk snapshot served from when the control plane is unreachable), and
  the gateway registered as an instance of its service name (`gateway` by
  default) with metadata `{"role": "gateway"}`, heartbeated, so `tidegate
  status` lists it and agents behind it know its address (a governed peer).
  As the agent's lifecycle does: the instance id is this process's own
  (`gateway-<random>`: replicas on one address never share a registration,
  so one draining never deregisters another), and it is leased to a
  `lease_secret` made at start (heartbeat, state and deregistration send it
  as `X-Tidegate-Lease`), with a `notice_key` in the record.
- A routes file (`--routes FILE`, YAML or JSON documents of any kind the
  gateway reads: GatewayRoute, TrafficLane, CanaryRule, stability rules),
  re-read when it changes; a document that fails keeps its last valid version.
  Used when there is no control plane (with it, rules come from the plane).
- Static upstreams (`--upstream orders=127.0.0.1:9001,127.0.0.1:9002`), for a
  gateway without a control plane.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance, InstanceState
from tidegate.core.rulebook import RuleBook, RuleKey, StoredRule
from tidegate.errors import RuleError, TidegateError
from tidegate.rules.document import document_key, load_documents, validate

if TYPE_CHECKING:
    from tidegate.client.control import ControlClient
    from tidegate.client.watch import Watcher
    from tidegate.gateway.config import Config

log = logging.getLogger("tidegate.gateway")

#: How often the gateway renews its registration at most (a third of the control plane's lease when
#: shorter), and looks at its routes file.
HEARTBEAT_S = 3.0
FILE_POLL_S = 1.0
#: How long a starting gateway waits for the watch to catch up with the control plane before it
#: listens anyway (with a warning), and for a snapshot from disk when the control plane is unreachable.
SYNC_TIMEOUT_S = 30.0
OFFLINE_SYNC_S = 5.0
ROLE = {"role": "gateway"}


class Sources:
    def __init__(self, config: Config, directory: ServiceDirectory, rulebook: RuleBook) -> None:
        self.config = config
        self.directory = directory
        self.rulebook = rulebook
        self.admin_address = ""
        self.watcher: Watcher | None = None
        self.client: ControlClient | None = None
        self.instance: Instance | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._file_mtime = 0.0
        self._file_valid: dict[RuleKey, StoredRule] = {}
        self._revision = 0
        self._interval = HEARTBEAT_S
        self.lease_secret = secrets.token_urlsafe(32)  # made once, never sent but to the control plane

    def start(self) -> None:
        config = self.config
        for service, members in config.upstreams.items():
            for index, (host, port, tag) in enumerate(members):
                self._revision += 1
                self.directory.put(self._revision, Instance(f"{service}-{index}@{host}:{port}", service, host, port, tag=tag))
        if config.routes_file:
            self.load_routes_file()
        if config.control:
            from tidegate.client.watch import Watcher

            snapshot = Path(config.snapshot) if config.snapshot else None
            self.watcher = Watcher(config.control, config.token, self.directory, self.rulebook, snapshot_path=snapshot, ca=config.ca)
            self.watcher.start()
            self._wait_current(self.watcher)
        if config.routes_file and not config.control:
            self._spawn(self._poll_file)

    def _wait_current(self, watcher: Watcher) -> None:
        """Return once the watch has brought the directory and rules up to the control plane's
        head when its stream opened (or a snapshot from disk stands in for an unreachable one).

        A new watcher is sent the control plane's newest shared snapshot, which may be old (it is
        rebuilt only after many changes), then the changes after it: with the snapshot alone a gateway
        would serve a view from minutes ago (a route whose service had no instance yet: 503 "not
        registered" from a replica that just started). So the gateway listens only once caught up
        (`Watcher.wait_synced`: up to the `X-Tidegate-Head` the stream announced); with no control
        plane answering, at most OFFLINE_SYNC_S for the disk snapshot."""
        if not watcher.wait_synced(SYNC_TIMEOUT_S, unreachable_timeout=OFFLINE_SYNC_S):
            log.warning(
                "tidegate gateway: the watch is not current (control plane %s; revision %d); listening anyway",
                "answers" if watcher.reached else "not reachable",
                watcher.revision,
            )

    def _spawn(self, target: object) -> None:
        thread = threading.Thread(target=target, daemon=True, name="tidegate-gateway-sources")  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    # -- the routes file -----------------------------------------------------------------------

    def load_routes_file(self) -> list[RuleError]:
        """Read the routes file into the rule book; a document that fails keeps its last valid version."""
        path = Path(self.config.routes_file)
        problems: list[RuleError] = []
        try:
            self._file_mtime = path.stat().st_mtime
            documents = load_documents(path.read_bytes())
        except (OSError, RuleError) as error:
            log.error("tidegate gateway: routes file %s not read (%s); the rules in force stay", path, error)
            return [error] if isinstance(error, RuleError) else []
        self._revision += 1
        kept: dict[RuleKey, StoredRule] = {}
        for document in documents:
            try:
                validate(document)
                namespace, kind, name = document_key(document)
                kept[(namespace, kind, name)] = StoredRule(namespace, kind, name, self._revision, document)
            except (RuleError, KeyError, TypeError) as error:
                problem = error if isinstance(error, RuleError) else RuleError(str(error))
                problems.append(problem)
                log.error("tidegate gateway: %s: a document was refused (%s); its last valid version (if any) stays", path, problem)
                try:
                    key = document_key(document)
                except Exception:
                    continue
                previous = self._file_valid.get(key)
                if previous is not None:
                    kept[key] = previous
        self._file_valid = kept
        self.rulebook.replace(kept.values())
        return problems

    def _poll_file(self) -> None:
        path = Path(self.config.routes_file)
        while not self._stop.wait(FILE_POLL_S):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if mtime != self._file_mtime:
                self.load_routes_file()

    # -- registration ---------------------------------------------------------------------------

    def register(self, host: str, port: int) -> None:
        """Register this gateway with the control plane (when there is one) and keep its lease."""
        config = self.config
        if not config.control:
            return
        from tidegate.client.control import ControlClient

        admin_port = int(self.admin_address.rsplit(":", 1)[1]) if self.admin_address else None
        self.client = ControlClient(config.control, config.token, ca=config.ca)
        wanted = Instance(
            instance_id(config.service),
            config.service,
            host,
            port,
            state=InstanceState.SERVING,
            admin_port=admin_port,
            started_at=time.time(),
            metadata=ROLE,
            notice_key=secrets.token_urlsafe(32),
        )
        try:
            lease = self.client.health().get("instance_ttl")
            if isinstance(lease, (int, float)) and not isinstance(lease, bool) and lease > 0:
                self._interval = min(HEARTBEAT_S, float(lease) / 3)  # as the agent: a third of the lease
            self.instance = self.client.register(wanted, self.lease_secret)
        except TidegateError as error:
            log.error("tidegate gateway: could not register with the control plane (%s); retrying with the heartbeat", error)
            self.instance = None
        self._wanted = wanted
        self._spawn(self._heartbeat)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._interval):
            client = self.client
            if client is None:
                return
            try:
                if self.instance is None or not client.heartbeat(self.instance.id, self.lease_secret):
                    self.instance = client.register(self.instance or self._wanted, self.lease_secret)
            except TidegateError as error:
                log.warning("tidegate gateway: heartbeat failed (%s)", error)

    def announce(self, state: InstanceState) -> None:
        """Tell the control plane this gateway drains (best effort: it drains either way)."""
        client, instance = self.client, self.instance
        if client is None or instance is None:
            return
        try:
            client.set_state(instance.id, state, self.lease_secret)
        except TidegateError as error:
            log.warning("tidegate gateway: could not tell the control plane it drains (%s)", error)

    def stop(self) -> None:
        self._stop.set()
        client, instance = self.client, self.instance
        if client is not None:
            if instance is not None:
                try:
                    client.deregister(instance.id, self.lease_secret)
                except TidegateError:
                    pass
            client.close()
        if self.watcher is not None:
            self.watcher.stop()


def instance_id(service: str) -> str:
    """A registration id of this process's own, like an agent's (`gateway-3f9c0a1b2d4e`): two gateways
    on one address (replicas sharing a port with SO_REUSEPORT) are two instances, each with its lease."""
    return f"{service}-{secrets.token_hex(6)}"
