"""The admin endpoint's guards over real sockets: the Host check, lease-secret writes, signed
writes, and TLS (a throwaway CA, an untrusted one refused)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.tls import Certificates, make_certificates
from tidegate.agent.capability import AdminRoute
from tidegate.agent.lifecycle.admin import AdminServer

TOKEN = "agent-token-0123456789"
LEASE = "lease-secret-0123456789abcdef"


class View:
    def ready(self) -> bool:
        return True

    def state(self) -> dict[str, Any]:
        return {"state": "SERVING", "in_flight": 0}

    def metrics_text(self) -> bytes:
        return b"# HELP x y\n"


def _echo(body: Any, query: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"echo": body}


@pytest.fixture
def admin() -> Iterator[str]:
    server = AdminServer(
        View(),
        TOKEN,
        writes={"/echo": AdminRoute(_echo), "/signed": AdminRoute(_echo, signed=True)},
        lease_secrets=lambda: [LEASE],
        names=["orders-0.orders.shop.svc"],
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/state", "/metrics", "/ready", "/live"])
def test_a_host_name_it_does_not_serve_is_refused(path: str) -> None:
    """DNS rebinding: a browser page at evil.test, its name rebound to 127.0.0.1, reads nothing."""
    server = AdminServer(View(), TOKEN)
    server.start()
    try:
        refused = httpx.get(f"http://127.0.0.1:{server.port}{path}", headers={"Host": "evil.test:80"})
        assert refused.status_code == 421 and "evil.test" in refused.json()["error"]
    finally:
        server.stop()


def test_ip_literals_localhost_and_its_own_names_pass_the_host_check(admin: str) -> None:
    for host in ("127.0.0.1", "localhost:1234", "orders-0.orders.shop.svc", "[::1]:80"):
        assert httpx.get(f"{admin}/state", headers={"Host": host}).status_code == 200, host
    assert httpx.post(f"{admin}/echo", json=1, headers={"Host": "evil.test", "Authorization": f"Bearer {LEASE}"}).status_code == 421


def test_writes_take_the_lease_secret_or_the_token_from_loopback(admin: str) -> None:
    assert httpx.post(f"{admin}/echo", json=1, headers={"Authorization": f"Bearer {LEASE}"}).json() == {"echo": 1}
    assert httpx.post(f"{admin}/echo", json=2, headers={"Authorization": f"Bearer {TOKEN}"}).json() == {"echo": 2}
    refused = httpx.post(f"{admin}/echo", json=3, headers={"Authorization": "Bearer lease-secret-of-someone-else"})
    assert refused.status_code == 401 and "lease_secret" in refused.json()["error"]


def test_a_signed_write_asks_no_token(admin: str) -> None:
    """A drain notice authenticates itself by its signature (checked by the write): no bearer token."""
    assert httpx.post(f"{admin}/signed", json=4).json() == {"echo": 4}


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


def test_tls_admin_endpoint_serves_https_to_a_client_trusting_its_ca(certificates: Certificates) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert, certificates.key)
    server = AdminServer(View(), TOKEN, writes={"/echo": AdminRoute(_echo)}, lease_secrets=lambda: [LEASE], tls=context)
    server.start()
    url = f"https://127.0.0.1:{server.port}"
    try:
        trusted = ssl.create_default_context(cafile=str(certificates.ca))
        assert httpx.get(f"{url}/ready", verify=trusted).status_code == 200
        assert httpx.post(f"{url}/echo", json=5, headers={"Authorization": f"Bearer {LEASE}"}, verify=trusted).json() == {"echo": 5}
        untrusted = ssl.create_default_context(cafile=str(certificates.other_ca))
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/ready", verify=untrusted)
        with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port: no answer
            httpx.get(f"http://127.0.0.1:{server.port}/ready", timeout=3)
        assert httpx.get(f"{url}/ready", verify=trusted).status_code == 200, "a failed handshake does not stop the endpoint"
    finally:
        server.stop()
