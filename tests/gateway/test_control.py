"""The gateway fed by a real control plane: its registration (replicas on one port), live routes, `tidegate status`.

A real `tidegate control` process, upstreams on real sockets registered through the API, gateways as
real processes following the watch stream.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess
from tests.gateway.harness import PYTHON, GatewayProcess, Upstream, route
from tests.support.procs import free_port, wait_until
from tests.support.tls import make_certificates
from tidegate.client.control import ControlClient
from tidegate.core.instance import Instance, InstanceState
from tidegate.errors import ControlPlaneError


@pytest.fixture
def plane(tmp_path) -> Iterator[ControlProcess]:
    # A lease long enough that the upstreams registered below need no heartbeat of their own.
    control = ControlProcess(tmp_path / "data", tmp_path / "control.log", ttl=60.0)
    try:
        yield control
    finally:
        control.stop()


@pytest.fixture
def entry(plane) -> Iterator[list[Upstream]]:
    members = [Upstream("e1"), Upstream("e2")]
    with ControlClient(plane.url, TOKEN) as client:
        for index, member in enumerate(members):
            client.register(Instance(f"entry-{index}", "entry", "127.0.0.1", member.port, state=InstanceState.SERVING))
        client.apply_rules(route("entry", "entry"))
    try:
        yield members
    finally:
        for member in members:
            member.stop()


def gateway(tmp_path, plane: ControlProcess, port: int | None = None) -> GatewayProcess:
    started = GatewayProcess(tmp_path, "", "--control", plane.url, "--token", TOKEN, port=port)
    wait_until(lambda: _answers(started.port), timeout=20, what="the gateway to route from the watch")
    return started


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def registered(plane: ControlProcess, service: str = "gateway") -> list[Instance]:
    with ControlClient(plane.url, TOKEN) as client:
        try:
            return client.instances(service)
        except Exception:
            return []


class Load:
    """Clients on threads sending to `port` until stopped: some on fresh connections, some keeping one alive."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.sent = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, keep_alive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(trust_env=False, timeout=10, limits=limits) as client:
            while not self._stop.is_set():
                try:
                    answer = client.get(self.url)
                    outcome = "" if answer.status_code == 200 else f"{answer.status_code} {answer.text.strip()}"
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                with self._lock:
                    self.sent += 1
                    if outcome:
                        self.failed.append(outcome)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def by_admin_port(plane: ControlProcess) -> dict[int | None, Instance]:
    return {i.admin_port: i for i in registered(plane)}


def test_restarting_one_of_two_gateways_on_one_port_under_load_fails_nothing_and_keeps_the_other_registered(tmp_path, plane, entry):
    port = free_port()
    gateways = [gateway(tmp_path, plane, port), gateway(tmp_path, plane, port)]
    load = Load(port)
    try:
        for _ in range(4):  # each replica restarted twice, in turn, the other one serving meanwhile
            wait_until(lambda: set(by_admin_port(plane)) == {g.admin_port for g in gateways}, timeout=20, what="both gateways listed")
            old = gateways.pop(0)
            assert old.stop() == 0
            # The replica that drained deregistered its own registration only (one id each: not
            # `gateway@127.0.0.1:PORT` for both, where the one draining took the other's out).
            left = by_admin_port(plane)
            assert set(left) == {gateways[0].admin_port}, left
            assert left[gateways[0].admin_port].state == InstanceState.SERVING
            gateways.append(gateway(tmp_path, plane, port))
        wait_until(lambda: load.sent > 200, timeout=60, what="some load after the restarts")
    finally:
        load.stop()
        for running in gateways:
            running.stop()
    assert load.sent > 200
    assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"


def test_a_gateway_with_an_agent_token_file_registers_with_a_lease_over_tls_verified_with_its_ca(tmp_path):
    certs = make_certificates(tmp_path / "tls")
    tls = ControlProcess(tmp_path / "data", tmp_path / "control.log", ttl=60.0, extra=["--cert", str(certs.cert), "--key", str(certs.key)])
    member = Upstream("e1")
    try:
        assert tls.url.startswith("https://")
        with ControlClient(tls.url, TOKEN, ca=str(certs.ca)) as admin:
            admin.register(Instance("entry-0", "entry", "127.0.0.1", member.port, state=InstanceState.SERVING))
            admin.apply_rules(route("entry", "entry"))
        agent_token = tmp_path / "data" / "tokens" / "agent"  # the agent role: registration needs a lease secret
        running = GatewayProcess(tmp_path, "", "--control", tls.url, "--token-file", str(agent_token), "--ca", str(certs.ca))
        try:
            wait_until(lambda: _answers(running.port), timeout=20, what="the gateway to route from the watch over TLS")
            with ControlClient(tls.url, TOKEN, ca=str(certs.ca)) as admin:
                wait_until(lambda: admin.instances("gateway"), timeout=20, what="the gateway registered")
                (listed,) = admin.instances("gateway")
                assert listed.metadata.get("role") == "gateway" and listed.port == running.port
                # Its lease is its own: renewed with it (an agent's heartbeat without it is refused).
                other = ControlClient(tls.url, agent_token.read_text().strip(), ca=str(certs.ca))
                with pytest.raises(ControlPlaneError):
                    other.heartbeat(listed.id)
                other.close()
            assert running.stop() == 0
            with ControlClient(tls.url, TOKEN, ca=str(certs.ca)) as admin:
                assert admin.instances("gateway") == []  # deregistered with its lease secret
            assert "could not" not in running.log.read_text(), running.log.read_text()
        finally:
            running.stop()
    finally:
        member.stop()
        tls.stop()


def test_a_route_applied_through_the_control_plane_is_followed_live_and_a_bad_one_is_refused(tmp_path, plane, entry):
    other = Upstream("other")
    running = gateway(tmp_path, plane)
    try:
        with ControlClient(plane.url, TOKEN) as client:
            client.register(Instance("other-0", "other", "127.0.0.1", other.port, state=InstanceState.SERVING))
            assert httpx.get(f"{running.url}/o/x").text in ("e1", "e2")
            client.apply_rules(route("entry", "other", prefix="/o"))  # the same route, now /o -> other
            wait_until(lambda: httpx.get(f"{running.url}/o/x").text == "other", timeout=20, what="the gateway to follow the route")
            assert httpx.get(f"{running.url}/elsewhere").status_code == 404  # the old version is gone
            refusal = httpx.post(
                f"{plane.url}/v1/rules",
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/yaml"},
                content=route("entry", "entry", prefix="/o", retries={"attempts": -1}).encode(),
            )
            assert refusal.status_code in (400, 422), refusal.text
            assert "spec.retries.attempts" in refusal.text, refusal.text
        assert httpx.get(f"{running.url}/o/x").text == "other"  # the route in force stays
        assert running.alive()
    finally:
        running.stop()
        other.stop()


def test_tidegate_status_lists_the_gateway(tmp_path, plane, entry):
    running = gateway(tmp_path, plane)
    try:
        wait_until(lambda: registered(plane) != [], timeout=20, what="the gateway registered")
        status = subprocess.run(
            [PYTHON, "-m", "tidegate", "status", "--control", plane.url, "--token", TOKEN, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        services = {service["name"]: service["instances"] for service in json.loads(status.stdout)["services"]}
        (listed,) = services["gateway"]
        assert (listed["port"], listed["metadata"]) == (running.port, {"role": "gateway"}), services
        table = subprocess.run(
            [PYTHON, "-m", "tidegate", "status", "--control", plane.url, "--token", TOKEN], capture_output=True, text=True, timeout=60
        )
        assert listed["id"] in table.stdout and f"127.0.0.1:{running.port}" in table.stdout, table.stdout
    finally:
        running.stop()


class WatchRelay:
    """A TCP relay in front of the control plane that, while `hold` is set, passes a watch stream
    up to the end of its snapshot frame and holds what follows (the changes replayed after it)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hold = threading.Event()
        self.hold.set()
        self.snapshot_sent = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        seen = b""
        held = False
        try:
            while data := source.recv(65536):
                if answers and not held and self.hold.is_set():
                    seen += data
                    start = seen.find(b"event: snapshot")
                    end = seen.find(b"\n\n", start) if start >= 0 else -1
                    if end >= 0:  # the snapshot frame ends here: pass it, hold the rest
                        sink.sendall(data[: len(data) - (len(seen) - end - 2)])
                        rest = seen[end + 2 :]
                        self.snapshot_sent.set()
                        while self.hold.is_set():
                            threading.Event().wait(0.01)
                        held = True
                        sink.sendall(rest)
                        continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end_ in (source, sink):
                try:
                    end_.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.hold.clear()
        self.listener.close()


def test_a_starting_gateway_listens_only_once_its_watch_caught_up_past_an_old_shared_snapshot(tmp_path, plane):
    with ControlClient(plane.url, TOKEN) as client:
        client.apply_rules(route("entry", "entry"))
        # A first watcher makes the control plane build its shared snapshot now: the route, no entry instance.
        with httpx.stream("GET", f"{plane.url}/v1/watch", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as watch:
            for line in watch.iter_lines():
                if line.startswith("event: snapshot"):
                    break
        member = Upstream("e1")
        client.register(Instance("entry-0", "entry", "127.0.0.1", member.port, state=InstanceState.SERVING))
    relay = WatchRelay(plane.port)
    port = free_port()
    started = subprocess.Popen(
        [PYTHON, "-m", "tidegate", "gateway", "--port", str(port), "--admin-port", "-1"]
        + ["--control", f"http://127.0.0.1:{relay.port}", "--token", TOKEN],
        stdout=(tmp_path / "gateway.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        # The new gateway's watch takes that old snapshot, then the registration of entry-0 after it:
        # held back here. Whatever the gateway answers meanwhile must not be "entry is not registered".
        assert relay.snapshot_sent.wait(30), (tmp_path / "gateway.log").read_text()
        answers = []
        for _ in range(100):  # a look at the port for a while (it does not listen yet: nothing to see)
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.strip())
                break
            except httpx.ConnectError:
                threading.Event().wait(0.05)
        relay.hold.clear()
        wait_until(lambda: _answers(port), timeout=30, what="the gateway to route once caught up")
        assert answers in ([], ["e1"]), answers
        assert started.poll() is None
    finally:
        started.terminate()
        started.wait(30)
        relay.close()
        member.stop()
