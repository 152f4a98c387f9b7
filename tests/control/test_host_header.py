"""The control plane answers only the Host names it serves (issue 11, finding 10: DNS rebinding)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.control.running import TOKEN, ControlProcess

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_rebound_name_is_refused_with_421_and_loopback_names_answered(control: ControlProcess) -> None:
    port = control.port
    with httpx.Client(base_url=control.url, timeout=10) as http:
        # A page on evil.example whose name now resolves to 127.0.0.1: the browser sends its own name.
        for path in ("/v1/services", "/v1/rules", "/v1/health"):
            refused = http.get(path, headers={**AUTH, "Host": f"evil.example:{port}"})
            assert refused.status_code == 421, (path, refused.text)
            assert "--allowed-host" in refused.json()["error"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert http.get("/v1/services", headers={**AUTH, "Host": host}).status_code == 200, host
        assert (
            http.post("/v1/instances", json={"service": "a", "host": "h", "port": 1}, headers={**AUTH, "Host": "evil.example"}).status_code
            == 421
        )
        assert http.get("/v1/services", headers=AUTH).json() == []


def test_allowed_host_names_a_proxy_or_dns_name(tmp_path: Path) -> None:
    plane = ControlProcess(
        tmp_path / "data", tmp_path / "log", extra=["--allowed-host", "tidegate-control", "--allowed-host", "*.example.com", "--open-reads"]
    )
    try:
        with httpx.Client(base_url=plane.url, timeout=10) as http:
            assert http.get("/v1/services", headers={"Host": "tidegate-control:7070"}).status_code == 200
            assert http.get("/v1/services", headers={"Host": "control.shop.example.com"}).status_code == 200
            assert http.get("/v1/services", headers={"Host": "other-name:7070"}).status_code == 421
    finally:
        plane.stop()
