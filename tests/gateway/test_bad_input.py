"""Bad input on real sockets: each gets the right status or a clean close, nothing crashes, others unaffected, memory bounded."""

from __future__ import annotations

import resource
import socket
import time

import httpx
import pytest

from tests.gateway.harness import GatewayProcess, Upstream, raw, route, upstreams


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    upstream = Upstream("orders-a")
    tmp = tmp_path_factory.mktemp("bad")
    rules = route("all", "orders") + route("quick", "orders", "/quick/", stripPrefix="/quick", timeouts={"response": "300ms"})
    gateway = GatewayProcess(tmp, rules, *upstreams(upstream), "--header-timeout", "1", "--max-body", "1000000")
    yield gateway, upstream
    try:
        assert gateway.alive(), gateway.log.read_text()
        assert gateway.stop() == 0
    finally:
        upstream.stop()


def healthy(gateway: GatewayProcess) -> None:
    """Another client's request is unaffected."""
    assert gateway.alive()
    assert httpx.get(gateway.url + "/x", timeout=5).status_code == 200


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad\x01Name: v\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_request_lines_and_headers_are_400(setup, request_bytes):
    gateway, _ = setup
    assert status_of(raw(gateway.port, request_bytes)) == 400
    healthy(gateway)


def test_oversized_headers_are_431_and_long_targets_414(setup):
    gateway, _ = setup
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert status_of(raw(gateway.port, big)) == 431
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n"
    assert status_of(raw(gateway.port, many)) == 431
    assert status_of(raw(gateway.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")) == 414
    healthy(gateway)


def test_bodies_over_the_limit_are_413(setup):
    gateway, _ = setup
    declared = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
    assert status_of(raw(gateway.port, declared)) == 413
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"10000\r\n" + b"a" * 65536 + b"\r\n") * 20
    answer = raw(gateway.port, chunked)
    assert status_of(answer) in (413, 0)  # 413, or a clean close once the upstream's answer had begun
    healthy(gateway)


def test_slowloris_gets_408(setup):
    gateway, _ = setup
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        started = time.monotonic()
        answer = b""
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > 3:
                break
        sock.settimeout(5)
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert status_of(answer) == 408
    healthy(gateway)


def test_client_disconnecting_mid_body(setup):
    gateway, upstream = setup
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000)
    healthy(gateway)


def test_upstream_reset_mid_response_closes_the_client(setup):
    gateway, _ = setup
    answer = raw(gateway.port, b"GET /reset-mid HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(answer.partition(b"\r\n\r\n")[2]) < 100000  # truncated, and the connection closed (raw returned)
    healthy(gateway)


def test_upstream_reset_before_response_is_502(setup):
    gateway, _ = setup
    assert status_of(raw(gateway.port, b"POST /reset-before HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")) == 502
    healthy(gateway)


def test_a_post_whose_pooled_upstream_connection_closes_unanswered_is_not_sent_twice(setup):
    """The connection is pooled (a GET first), so the close reads as a pooled connection closed
    unanswered: a GET would go again, a POST must not (the upstream may have read it)."""
    gateway, upstream = setup
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(gateway.url + "/quick/warm").status_code == 200
        before = sum(1 for seen in upstream.seen if seen["target"] == "/reset-before")
        assert client.post(gateway.url + "/reset-before", content=b"hi").status_code == 502
    assert sum(1 for seen in upstream.seen if seen["target"] == "/reset-before") == before + 1
    healthy(gateway)


def test_slow_upstream_is_504(setup):
    gateway, _ = setup
    assert httpx.get(gateway.url + "/quick/slow?s=2", timeout=10).status_code == 504
    healthy(gateway)


def test_ten_thousand_idle_connections(setup):
    gateway, _ = setup
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 10_000
    if soft < wanted + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted + 1000), hard))
    before = gateway.rss_kib()
    sockets = []
    try:
        for _ in range(wanted):
            sockets.append(socket.create_connection(("127.0.0.1", gateway.port), timeout=10))
        healthy(gateway)
        grown = gateway.rss_kib() - before
        assert grown < 150_000, f"{grown} KiB for {wanted} idle connections"
    finally:
        for sock in sockets:
            sock.close()
    healthy(gateway)
