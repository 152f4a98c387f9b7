"""Drain notices are signed and go only where the directory says (issue 11, items 1 and 3).

In one process: the consumer's check (a forged, unknown, stale or replayed notice changes
nothing), the provider's choice of targets, and its notices leaving on their own thread,
outside the fork gate. With real processes: an address a caller names in
`x-tidegate-consumer` is never called (64 forged ones that never accept get no
connection and no token), while the real consumer still hears the drain directly.
"""

from __future__ import annotations

import select
import signal
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.agent.offline.test_drain import _call, _up
from tests.support.procs import wait_until
from tidegate.agent.capability import SignedBody
from tidegate.agent.config import AgentConfig
from tidegate.agent.forking import FORK_GATE
from tidegate.agent.offline.drain import LosslessOffline
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.directory import ServiceDirectory
from tidegate.core.drain import DrainSettings
from tidegate.core.instance import Instance, InstanceState
from tidegate.core.notice import NoticeCheck, notice_body, sign, targets

KEY = "k" * 43
NOW = 1_700_000_000.0


def _directory(*extra: Instance) -> ServiceDirectory:
    directory = ServiceDirectory()
    directory.replace(
        1,
        [
            Instance("a", "orders", "127.0.0.1", 8001, notice_key=KEY),
            Instance("b", "orders", "127.0.0.1", 8002, notice_key="other-key"),
            *extra,
        ],
    )
    return directory


def _routable(directory: ServiceDirectory) -> set[str]:
    return {i.id for i in directory.routable("orders")}


def _signed(body: bytes, key: str = KEY) -> SignedBody:
    return SignedBody(body, sign(key, body))


def _lossless(directory: ServiceDirectory) -> LosslessOffline:
    return LosslessOffline(AgentRuntime(config=AgentConfig(service="checkout"), directory=directory), DrainSettings())


# -- the consumer's check ----------------------------------------------------------------------------


def test_a_signed_fresh_notice_of_a_known_instance_is_acted_on_once() -> None:
    directory = _directory()
    lossless = _lossless(directory)
    notice = _signed(notice_body("orders", "a", "127.0.0.1:8001", __import__("time").time()))
    assert lossless.receive_notice(notice)[0] == 200
    assert _routable(directory) == {"b"}
    assert lossless.receive_notice(notice)[0] == 409  # a replay is refused


@pytest.mark.parametrize(
    "body, key, status, reason",
    [
        (notice_body("orders", "a", "127.0.0.1:8001", NOW), "forged-key", 401, "does not verify"),
        (notice_body("orders", "a", "127.0.0.1:8001", NOW), "", 401, "does not verify"),
        (notice_body("orders", "b", "127.0.0.1:8002", NOW), KEY, 401, "does not verify"),  # a's key, b named
        (notice_body("orders", "zzz", "127.0.0.1:8009", NOW), KEY, 401, "no instance"),
        (notice_body("orders", "a", "10.0.0.9:8001", NOW), KEY, 401, "no instance"),  # another address
        (notice_body("billing", "a", "127.0.0.1:8001", NOW), KEY, 401, "no instance"),  # another service
        (notice_body("orders", "a", "127.0.0.1:8001", NOW - 31), KEY, 409, "ts"),
        (notice_body("orders", "a", "127.0.0.1:8001", NOW + 31), KEY, 409, "ts"),
        (b'{"instance": "a", "address": "127.0.0.1:8001"}', KEY, 400, "ts"),
        (b"[]", KEY, 400, "JSON object"),
        (b"{", KEY, 400, "not JSON"),
    ],
)
def test_a_forged_stale_or_malformed_notice_changes_nothing(body: bytes, key: str, status: int, reason: str) -> None:
    directory = _directory()
    signature = sign(key, body) if key else ""
    verdict = NoticeCheck().verify(body, signature, directory.find, NOW)
    assert verdict.status == status and reason in verdict.reason, verdict
    assert _routable(directory) == {"a", "b"}


def test_an_unsigned_notice_is_refused_by_the_capability_and_changes_nothing() -> None:
    directory = _directory()
    lossless = _lossless(directory)
    assert lossless.receive_notice({"instance": "a", "address": "127.0.0.1:8001"})[0] == 400
    assert lossless.receive_notice(SignedBody(notice_body("orders", "a", "127.0.0.1:8001", NOW), "v1=00"))[0] == 401
    assert _routable(directory) == {"a", "b"}


# -- the provider's targets ---------------------------------------------------------------------------


def test_only_admin_addresses_the_directory_holds_for_the_named_service_are_targets() -> None:
    directory = _directory(
        Instance("c1", "checkout", "10.0.0.5", 9000, admin_port=9100),
        Instance("c2", "checkout", "127.0.0.1", 9001, admin_port=9101),
    )
    consumers = [
        ("checkout", "10.0.0.5:9100"),  # a real consumer
        ("checkout", "localhost:9101"),  # the one on this host, by another loopback name
        ("checkout", "10.0.0.5:9999"),  # the right host, no admin endpoint there
        ("evil", "10.0.0.5:9100"),  # a service with no such instance
        ("orders", "127.0.0.1:8001"),  # an instance, but not its admin port
        ("checkout", "attacker.example:80"),
        ("checkout", "garbage"),
    ]
    assert targets(consumers, directory.instances) == ["10.0.0.5:9100", "localhost:9101"]


def _never_accepting() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


def test_notices_leave_on_their_own_thread_outside_the_fork_gate() -> None:
    """A consumer that accepts and never answers: `begin` returns, and the fork gate is free while
    the notice waits (on the base the notices were sent inside the gate, before `begin` returned)."""
    listener = _never_accepting()
    port = listener.getsockname()[1]
    directory = _directory(Instance("c", "checkout", "127.0.0.1", 9000, admin_port=port))
    runtime = AgentRuntime(config=AgentConfig(service="orders"), directory=directory)
    lossless = LosslessOffline(runtime, DrainSettings())
    runtime.lifecycle = _Lifecycle([Instance("a", "orders", "127.0.0.1", 8001, notice_key=KEY)])  # type: ignore[assignment]
    lossless.consumer_seen("checkout", f"127.0.0.1:{port}")
    try:
        begun = threading.Thread(target=lossless.begin, daemon=True)
        begun.start()
        assert select.select([listener], [], [], 30)[0], "the notice never reached the consumer"
        accepted, _ = listener.accept()
        assert FORK_GATE._lock.acquire(timeout=30), "the fork gate is held while a notice waits for its answer"
        FORK_GATE._lock.release()
        begun.join(timeout=30)
        assert not begun.is_alive()
        request = accepted.recv(65536)
        assert b"X-Tidegate-Signature: v1=" in request and b"Authorization" not in request, request
        accepted.close()
    finally:
        listener.close()


class _Lifecycle:
    """The two things `begin` asks of the lifecycle: the instances to drain and their lease secrets."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.owner = True
        self.state = InstanceState.SERVING

    def set_serving_state(self, state: InstanceState) -> list[Instance]:
        self.state = state
        return self.instances

    def lease_secret(self, instance_id: str) -> str:
        return ""


# -- real processes -------------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    heard: list[tuple[str, dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802
        _Recorder.heard.append((self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    _Recorder.heard = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_addresses_a_caller_names_are_never_called_and_the_real_consumer_still_hears(control_plane: Any, start: Any, recorder: int) -> None:
    a, a_port, c_port, consumer = _up(control_plane, start, "uvicorn")
    stalls = [_never_accepting() for _ in range(64)]
    try:
        forged = [f"127.0.0.1:{recorder}", *(f"127.0.0.1:{s.getsockname()[1]}" for s in stalls)]
        for address in forged:  # a consumer this provider's directory lists, and one it does not
            for service in ("checkout", "evil"):
                answer = httpx.get(
                    f"http://127.0.0.1:{a_port}/who", headers={"x-tidegate-consumer": f"{service}; admin={address}"}, timeout=10
                )
                assert answer.status_code == 200
        a.proc.signal(signal.SIGTERM)
        a.proc.wait(timeout=60)
        assert "drain notice sent to 1 consumer(s)" in a.proc.output(), a.fail_report()
        wait_until(lambda: "told by direct notice" in consumer.proc.output(), what="the real consumer to hear the drain directly")
        assert _Recorder.heard == []  # no request, so no token either
        for stall in stalls:  # nothing even connected to the 64 that never accept
            assert not select.select([stall], [], [], 0)[0]
        answers = [_call(c_port) for _ in range(10)]
        assert all(r["status_code"] == 200 and r["id"] == "orders-b" for r in answers), answers
    finally:
        for stall in stalls:
            stall.close()
