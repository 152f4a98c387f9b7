"""TLS over real sockets with a throwaway CA: the control plane serves HTTPS with --cert/--key;
its clients (ControlClient, the watch, the CLI, an agent under `tidegate run`) verify it with
the CA they are given and refuse a certificate no trusted CA signed; an agent's admin endpoint
serves HTTPS with TIDEGATE_ADMIN_CERT/KEY."""

from __future__ import annotations

import logging
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess
from tests.support.procs import BIN, TIDEGATE, Proc, free_port, wait_until
from tests.support.tls import Certificates, make_certificates
from tidegate.client.control import ControlClient
from tidegate.client.watch import Watcher, tls_failure
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.rulebook import RuleBook
from tidegate.errors import ControlPlaneError

APPS = Path(__file__).resolve().parents[1] / "agent" / "apps"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_plane(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Iterator[ControlProcess]:
    tmp = tmp_path_factory.mktemp("tls-plane")
    plane = ControlProcess(tmp / "data", tmp / "control.log", extra=["--cert", str(certificates.cert), "--key", str(certificates.key)])
    try:
        yield plane
    finally:
        plane.stop()


def test_the_control_plane_serves_https_and_a_client_verifies_it(tls_plane: ControlProcess, certificates: Certificates) -> None:
    assert tls_plane.url.startswith("https://127.0.0.1:")
    with ControlClient(tls_plane.url, TOKEN, ca=str(certificates.ca)) as client:
        stored = client.register(Instance(id="", service="orders", host="127.0.0.1", port=8001))
        assert [i.id for i in client.instances("orders")] == [stored.id]
    directory = ServiceDirectory()
    watcher = Watcher(tls_plane.url, TOKEN, directory, RuleBook(), ca=str(certificates.ca))
    watcher.start()
    try:
        assert watcher.wait_synced(20)
        assert [i.id for i in directory.instances("orders")] == [stored.id]
    finally:
        watcher.stop()


@pytest.mark.parametrize("ca", ["other", "system"])
def test_a_certificate_no_trusted_ca_signed_is_refused(tls_plane: ControlProcess, certificates: Certificates, ca: str) -> None:
    with ControlClient(tls_plane.url, TOKEN, ca=str(certificates.other_ca) if ca == "other" else "") as client:
        with pytest.raises(ControlPlaneError) as refused:
            client.services()
    assert refused.value.status is None and "CERTIFICATE_VERIFY_FAILED" in str(refused.value)


def test_a_watcher_that_cannot_verify_the_certificate_says_so_and_backs_off(
    tls_plane: ControlProcess, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    """Not taken for a control plane that is restarting (those retries are quick and quiet)."""
    caplog.set_level(logging.DEBUG, logger="tidegate.watch")
    watcher = Watcher(tls_plane.url, TOKEN, ServiceDirectory(), RuleBook(), ca=str(certificates.other_ca))
    watcher.start()
    try:
        wait_until(
            lambda: any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records),
            what="the watcher to say it cannot verify the certificate",
        )
        assert not watcher.wait_synced(0.5)
    finally:
        watcher.stop()
    wrapped = httpx.ConnectError("handshake failed")
    wrapped.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert tls_failure(wrapped) and not tls_failure(httpx.ConnectError("[Errno 111] Connection refused"))


def test_the_ca_comes_from_tidegate_ca_by_default(
    tls_plane: ControlProcess, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_CA", str(certificates.ca))
    with ControlClient(tls_plane.url, TOKEN) as client:
        assert client.health()["status"] == "ok"
    monkeypatch.setenv("TIDEGATE_CA", "/nonexistent/ca.pem")
    with pytest.raises(ControlPlaneError, match="TIDEGATE_CA"):
        ControlClient(tls_plane.url, TOKEN)


def test_the_cli_verifies_with_ca(tls_plane: ControlProcess, certificates: Certificates) -> None:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": "/nonexistent", "TIDEGATE_TOKEN": TOKEN}
    trusted = subprocess.run(
        [*TIDEGATE, "status", "--control", tls_plane.url, "--ca", str(certificates.ca)], capture_output=True, text=True, env=env, timeout=60
    )
    assert trusted.returncode == 0, trusted.stderr
    untrusted = subprocess.run([*TIDEGATE, "status", "--control", tls_plane.url], capture_output=True, text=True, env=env, timeout=60)
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def _agent(tmp_path: Path, plane: ControlProcess, service: str, env: dict[str, str]) -> Proc:
    port = free_port()
    return Proc(
        [
            *TIDEGATE,
            "run",
            "--service",
            service,
            "--control",
            plane.url,
            "--token",
            TOKEN,
            "--",
            str(BIN / "uvicorn"),
            "starlette_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        tmp_path / f"{service}.log",
        env={"TIDEGATE_HEARTBEAT_INTERVAL": "0.3", "TIDEGATE_STATE_DIR": str(tmp_path / "state"), "TIDEGATE_LOSSLESS": "off", **env},
        cwd=APPS,
    )


def test_an_agent_registers_over_tls_and_serves_its_admin_endpoint_over_tls(
    tmp_path: Path, tls_plane: ControlProcess, certificates: Certificates
) -> None:
    agent = _agent(
        tmp_path,
        tls_plane,
        "tls-orders",
        {"TIDEGATE_CA": str(certificates.ca), "TIDEGATE_ADMIN_CERT": str(certificates.cert), "TIDEGATE_ADMIN_KEY": str(certificates.key)},
    )
    try:
        with ControlClient(tls_plane.url, TOKEN, ca=str(certificates.ca)) as client:
            [instance] = wait_until(lambda: client.instances("tls-orders"), what="the agent to register over TLS")  # type: ignore[misc]
        found = wait_until(lambda: re.search(r"admin endpoint on (https://127\.0\.0\.1:\d+)", agent.output()), what="the admin endpoint")
        admin = found.group(1)  # type: ignore[union-attr]
        assert admin.endswith(f":{instance.admin_port}")
        trusted = ssl.create_default_context(cafile=str(certificates.ca))
        assert httpx.get(f"{admin}/ready", verify=trusted, timeout=5).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{admin}/ready", verify=ssl.create_default_context(cafile=str(certificates.other_ca)), timeout=5)
    finally:
        agent.stop()


def test_an_agent_refuses_a_control_plane_it_cannot_verify(tmp_path: Path, tls_plane: ControlProcess, certificates: Certificates) -> None:
    agent = _agent(tmp_path, tls_plane, "untrusting", {"TIDEGATE_CA": str(certificates.other_ca)})
    try:
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in agent.output(), what="the agent to refuse the certificate")
        with ControlClient(tls_plane.url, TOKEN, ca=str(certificates.ca)) as client:
            assert client.instances("untrusting") == []
        assert "Traceback" not in agent.output()
    finally:
        agent.stop()


def test_bad_admin_tls_settings_stop_run_naming_the_variable(tmp_path: Path, certificates: Certificates) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    for extra, named in (
        ({"TIDEGATE_ADMIN_CERT": str(certificates.cert)}, "TIDEGATE_ADMIN_KEY"),
        ({"TIDEGATE_ADMIN_CERT": str(certificates.ca), "TIDEGATE_ADMIN_KEY": str(certificates.key)}, "TIDEGATE_ADMIN_CERT"),
        ({"TIDEGATE_CA": str(tmp_path / "missing.pem")}, "TIDEGATE_CA"),
    ):
        result = subprocess.run(
            [*TIDEGATE, "run", "--service", "a", "--", "true"], capture_output=True, text=True, timeout=60, env={**clean, **extra}
        )
        assert result.returncode == 2 and named in result.stderr, result.stderr
