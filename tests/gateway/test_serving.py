"""How the gateway serves, on real sockets: TLS termination (`--cert/--key`) and `--workers 2`."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.gateway.harness import GatewayProcess, Upstream, raw, route, upstreams
from tests.support.tls import make_certificates


@pytest.fixture
def orders():
    member = Upstream("o1")
    try:
        yield member
    finally:
        member.stop()


def test_tls_termination_serves_a_verifying_client_and_refuses_nothing_else_badly(tmp_path, orders):
    certs = make_certificates(tmp_path / "tls")
    gateway = GatewayProcess(tmp_path, route("orders", "orders"), *upstreams(orders), "--cert", str(certs.cert), "--key", str(certs.key))
    try:
        trusting = ssl.create_default_context(cafile=str(certs.ca))
        with httpx.Client(verify=trusting, trust_env=False, timeout=10) as client:
            answer = client.get(f"https://127.0.0.1:{gateway.port}/echo")
            assert answer.status_code == 200 and answer.headers["x-instance"] == "o1"
            assert "('x-forwarded-proto', 'https')" in answer.text, answer.text  # the upstream hears the scheme
            assert client.get(f"https://localhost:{gateway.port}/x").text == "o1"  # keep-alive over TLS
        # A client that trusts another CA refuses the certificate; plain HTTP on the TLS port is closed, not answered.
        with pytest.raises(httpx.ConnectError), httpx.Client(verify=ssl.create_default_context(cafile=str(certs.other_ca))) as other:
            other.get(f"https://127.0.0.1:{gateway.port}/x")
        assert not raw(gateway.port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").startswith(b"HTTP/1.1 200")
        with httpx.Client(verify=trusting, trust_env=False, timeout=10) as client:
            assert client.get(f"https://127.0.0.1:{gateway.port}/x").text == "o1"
        assert gateway.alive()
    finally:
        assert gateway.stop() == 0


def test_two_workers_share_the_port_and_both_answer(tmp_path, orders):
    gateway = GatewayProcess(tmp_path, route("orders", "orders"), *upstreams(orders), "--workers", "2")
    try:
        admins = [gateway.admin_port, gateway.admin_port + 1]  # worker i's admin port is --admin-port + i
        pids = {httpx.get(f"http://127.0.0.1:{port}/live", timeout=5).json()["pid"] for port in admins}
        assert len(pids) == 2 and gateway.process.pid not in pids, pids
        # Fresh connections spread by the kernel (SO_REUSEPORT hashes each one's ports): with 200 of
        # them, one worker taking all is a 2**-199 chance.
        for _ in range(200):
            with httpx.Client(trust_env=False, timeout=10) as client:
                assert client.get(f"{gateway.url}/x").text == "o1"
        served = []
        for port in admins:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            served.append(
                sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("tidegate_gateway_requests_total{"))
            )
        assert sum(served) == 200 and min(served) > 0, served
    finally:
        assert gateway.stop() == 0
