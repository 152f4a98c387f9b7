"""The gateway's data plane on real sockets: routing, keep-alive, streaming, retries, drains, the edge, limits."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import pytest

from tests.gateway.harness import GatewayProcess, Upstream, document, raw, route, upstreams


@pytest.fixture
def orders():
    members = [Upstream("orders-a"), Upstream("orders-b")]
    yield members
    for member in members:
        member.stop()


def test_routes_strip_prefix_and_forwarded_headers(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("api", "orders", "/api/", stripPrefix="/api"), *upstreams(*orders))
    try:
        answer = httpx.get(gateway.url + "/api/echo?x=1", headers={"x-forwarded-for": "10.0.0.9"})
        assert answer.status_code == 200
        seen = dict(eval(answer.text))  # the upstream's view: [(name, value), ...]
        assert seen["target"] == "/echo?x=1"
        assert seen["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
        assert seen["forwarded"].startswith("for=127.0.0.1;proto=http")
        assert seen["x-tidegate-consumer"].startswith("gateway")
        assert httpx.get(gateway.url + "/other").status_code == 404
    finally:
        assert gateway.stop() == 0


def test_keep_alive_pool_reuses_upstream_connections(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(orders[0]))
    try:
        with httpx.Client() as client:
            for _ in range(50):
                assert client.get(gateway.url + "/x").status_code == 200
        assert orders[0].requests == 50
        assert orders[0].connections <= 2
    finally:
        gateway.stop()


def test_bodies_stream_both_ways(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(orders[0]))
    try:

        def chunks():
            for _ in range(64):
                yield b"z" * 65536

        upload = httpx.post(gateway.url + "/upload", content=chunks(), timeout=30)  # chunked, 4 MiB
        assert upload.text == str(64 * 65536)
        size = 0
        with httpx.stream("GET", gateway.url + "/big?n=20000000", timeout=30) as download:
            for piece in download.iter_bytes():
                size += len(piece)
        assert size == 20_000_000
        assert gateway.rss_kib() < 200_000  # 20 MB passed through without being held whole
    finally:
        gateway.stop()


def test_connect_failure_is_retried_on_another_instance(tmp_path, orders):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connections are refused
    gateway = GatewayProcess(tmp_path, route("all", "orders"), "--upstream", f"orders=127.0.0.1:{dead_port}", *upstreams(orders[0]))
    try:
        statuses = [httpx.get(gateway.url + "/x").status_code for _ in range(30)]
        assert statuses == [200] * 30
    finally:
        gateway.stop()


def test_a_draining_response_takes_its_instance_out(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(*orders))
    try:
        with httpx.Client() as client:
            # Until orders-a answers with x-tidegate-draining, both take requests.
            for _ in range(20):
                answer = client.get(gateway.url + "/drain?who=orders-a")
                if answer.headers["x-instance"] == "orders-a":
                    break
            assert "x-tidegate-draining" not in answer.headers  # internal: not passed to clients
            before = orders[0].requests
            names = {client.get(gateway.url + "/x").headers["x-instance"] for _ in range(40)}
        assert names == {"orders-b"}
        assert orders[0].requests == before
    finally:
        gateway.stop()


def test_no_instance_and_unknown_service_are_503(tmp_path):
    gateway = GatewayProcess(tmp_path, route("all", "nobody"))
    try:
        answer = httpx.get(gateway.url + "/x")
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
    finally:
        gateway.stop()


def test_edge_drops_client_lanes_and_colors_by_rule(tmp_path, orders):
    rules = route("all", "orders")
    rules += route("testers", "orders", "/t/", stripPrefix="/t", trustLane={"header": "x-tester", "token": "a-very-long-tester-token"})
    rules += document("TrafficLane", "gray-by-header", {"lane": {"name": "gray"}, "rules": [{"http": {"headers": {"x-gray": "yes"}}}]})
    gateway = GatewayProcess(tmp_path, rules, *upstreams(orders[0]))
    try:

        def baggage(path: str, **headers: str) -> str:
            return dict(eval(httpx.get(gateway.url + path, headers=headers).text)).get("baggage", "")

        assert baggage("/echo", baggage="tidegate.lane=gray,user=1") == "user=1"  # the lane an outsider set is dropped
        assert baggage("/echo", **{"x-gray": "yes"}) == "tidegate.lane=gray"  # colored at the edge
        assert baggage("/echo", **{"x-gray": "yes", "baggage": "tidegate.lane=blue"}) == "tidegate.lane=gray"
        assert baggage("/t/echo", baggage="tidegate.lane=blue", **{"x-tester": "a-very-long-tester-token"}) == "tidegate.lane=blue"
        assert baggage("/t/echo", baggage="tidegate.lane=blue", **{"x-tester": "wrong"}) == ""
    finally:
        gateway.stop()


def test_route_canary_header_beats_cookie_beats_weight(tmp_path):
    base, canary = Upstream("base"), Upstream("v2")
    rules = route("all", "orders", canary={"tag": "v2", "header": {"name": "x-canary"}, "cookie": {"name": "canary"}, "weight": 10})
    gateway = GatewayProcess(tmp_path, rules, *upstreams(base), *upstreams(canary, tag="v2"))
    try:
        with httpx.Client() as client:

            def where(**headers: str) -> str:
                return client.get(gateway.url + "/x", headers=headers).headers["x-instance"]

            assert {where(**{"x-canary": "always"}) for _ in range(20)} == {"v2"}
            assert {where(**{"x-canary": "never", "cookie": "canary=always"}) for _ in range(20)} == {"base"}
            assert {where(cookie="canary=always") for _ in range(20)} == {"v2"}
            assert {where(cookie="canary=never") for _ in range(20)} == {"base"}
            share = sum(where() == "v2" for _ in range(2000)) / 2000
        assert 0.07 <= share <= 0.13
    finally:
        gateway.stop()
        base.stop()
        canary.stop()


def test_flow_rule_on_a_route_answers_429_with_retry_after(tmp_path, orders):
    rules = route("all", "orders")
    rules += document(
        "FaultToleranceRule",
        "edge-limit",
        {
            "targets": [{"targetResourceName": "route/all"}],
            "strategies": [{"kind": "RateLimitStrategy", "spec": {"threshold": 5, "statDurationSeconds": 1}}],
        },
        api="fault-tolerance.opensergo.io/v1alpha1",
    )
    gateway = GatewayProcess(tmp_path, rules, *upstreams(orders[0]))
    try:
        with httpx.Client() as client:
            answers = [client.get(gateway.url + "/x") for _ in range(20)]
        refused = [a for a in answers if a.status_code == 429]
        assert 10 <= len(refused) <= 15
        assert all(a.headers.get("retry-after") for a in refused)
        assert sum(a.status_code == 200 for a in answers) >= 5
    finally:
        gateway.stop()


def test_websocket_upgrade_passes_through(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(orders[0]))
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 101")
            sock.sendall(b"ping-frame")
            echoed = b""
            while len(echoed) < 10:
                echoed += sock.recv(4096)
            assert echoed == b"ping-frame"
    finally:
        gateway.stop()


def test_sigterm_drains_in_flight_requests(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(orders[0]))
    results: list[int] = []

    def slow() -> None:
        results.append(httpx.get(gateway.url + "/slow?s=1", timeout=10).status_code)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    assert gateway.stop() == 0
    thread.join(10)
    assert results == [200]


def test_metrics_count_requests_per_route(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(orders[0]))
    try:
        for _ in range(3):
            httpx.get(gateway.url + "/x")
        text = gateway.metrics()
        assert 'tidegate_gateway_requests_total{route="all",service="orders",lane="",status="2xx"} 3' in text
        assert "tidegate_gateway_request_seconds_bucket" in text
        assert "tidegate_gateway_pool_idle_connections" in text
    finally:
        gateway.stop()


def test_bad_route_document_keeps_the_rest(tmp_path, orders):
    rules = route("good", "orders", "/good/") + route("bad", "orders", "no-slash")
    gateway = GatewayProcess(tmp_path, rules, *upstreams(orders[0]))
    try:
        assert httpx.get(gateway.url + "/good/x").status_code == 200
        assert "spec.match.path" in gateway.log.read_text()
    finally:
        gateway.stop()


def test_raw_keep_alive_and_pipelining(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(orders[0]))
    try:
        answer = raw(gateway.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200 OK") == 2
    finally:
        gateway.stop()


def test_a_draining_gateway_serves_the_next_request_on_an_idle_keep_alive_connection(tmp_path, orders):
    """A client that sends on its idle keep-alive connection while the gateway drains gets its answer
    (with `connection: close`), not a closed socket: the gateway leaves idle connections open for
    `--drain-idle` (5 s) rather than racing such a client with a close (0.5 s before: this failed)."""
    gateway = GatewayProcess(tmp_path, route("all", "orders"), *upstreams(orders[0]))
    request = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # the connection is now idle, kept alive
        gateway.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(f"http://127.0.0.1:{gateway.admin_port}/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "the gateway did not start draining"
            time.sleep(0.05)
        time.sleep(2.0)  # well past the old 0.5 s (and a sweep), well inside --drain-idle
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"connection: close" in answer.lower()
    assert gateway.process.wait(30) == 0
