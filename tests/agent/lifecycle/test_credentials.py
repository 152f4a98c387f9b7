"""The agent's side of the credential model, with real processes: an agent holding only the
agent token registers its instance with its own lease, keeps that lease across a control-plane
restart, cannot be displaced by another agent, and its admin endpoint takes writes only with
the instance's lease secret (from anywhere) or the agent's token (from loopback)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import APPS, TOKEN, TTL_S, ControlPlane, uvicorn
from tests.support.procs import TIDEGATE, Proc, free_port, wait_until
from tidegate.agent.lifecycle.admin import write_refusal


class Agent:
    """`tidegate run` of the test Starlette app with the control plane's agent token file."""

    def __init__(self, tmp: Path, plane: ControlPlane, service: str = "orders") -> None:
        self.port = free_port()
        self.state_dir = tmp / "state"
        self.token_file = Path(tmp / f"control-{plane.port}" / "tokens" / "agent")
        self.proc = Proc(
            [
                *TIDEGATE,
                "run",
                "--service",
                service,
                "--control",
                plane.url,
                "--token-file",
                str(self.token_file),
                "--",
                *uvicorn("starlette_app:app", "--port", str(self.port)),
            ],
            tmp / f"{service}.log",
            env={"TIDEGATE_HEARTBEAT_INTERVAL": "0.3", "TIDEGATE_STATE_DIR": str(self.state_dir), "TIDEGATE_TOKEN": ""},
            cwd=APPS,
        )
        self.admin_file = self.state_dir / f"{service}.admin.json"

    def admin(self) -> dict[str, Any]:
        wait_until(self.admin_file.exists, what="the admin file")
        return json.loads(self.admin_file.read_text())


@pytest.fixture
def agent(tmp_path: Path, control_plane: ControlPlane) -> Iterator[Agent]:
    started = Agent(tmp_path, control_plane)
    try:
        wait_until(lambda: control_plane.instances("orders"), what="orders to register")
        yield started
    finally:
        started.proc.stop()
        print(started.proc.log_path.read_text(errors="replace")[-3000:])


def test_an_agent_token_registers_with_a_lease_and_a_notice_key(agent: Agent, control_plane: ControlPlane) -> None:
    [instance] = control_plane.instances("orders")  # as admin: notice_key shown, lease_secret never
    record = agent.admin()
    assert len(instance["notice_key"]) >= 43 and "lease_secret" not in instance
    assert stat.S_IMODE(os.stat(agent.admin_file).st_mode) == 0o600
    assert record["admin"] == f"127.0.0.1:{instance['admin_port']}" and len(record["lease_secret"]) >= 43
    agent_token = agent.token_file.read_text().strip()
    with httpx.Client(base_url=control_plane.url, headers={"Authorization": f"Bearer {agent_token}"}, timeout=5) as http:
        beat = http.put(f"/v1/instances/{instance['id']}/heartbeat", headers={"X-Tidegate-Lease": record["lease_secret"]})
        assert beat.status_code == 200, "the admin file holds the lease the instance registered with"
    agent.proc.stop()
    assert not agent.admin_file.exists(), "removed when the server stops"


def test_another_agent_cannot_point_the_instance_elsewhere(agent: Agent, control_plane: ControlPlane) -> None:
    [instance] = control_plane.instances("orders")
    impostor = free_port()
    agent_token = agent.token_file.read_text().strip()
    with httpx.Client(base_url=control_plane.url, headers={"Authorization": f"Bearer {agent_token}"}, timeout=5) as attacker:
        forged = {**instance, "port": impostor, "lease_secret": secrets.token_urlsafe(32)}
        assert attacker.post("/v1/instances", json=forged).status_code == 409
        assert attacker.put(f"/v1/instances/{instance['id']}/state", json={"state": "DRAINING"}).status_code == 403
        assert attacker.delete(f"/v1/instances/{instance['id']}").status_code == 403
    time.sleep(1.0)  # a few of the real agent's heartbeats (0.3 s apart): they renew its own entry, not a forged one
    [after] = control_plane.instances("orders")
    assert (after["port"], after["state"]) == (agent.port, instance["state"])


def test_the_lease_survives_a_control_plane_restart(tmp_path: Path, agent: Agent, control_plane: ControlPlane) -> None:
    [before] = control_plane.instances("orders")
    lease = agent.admin()["lease_secret"]
    control_plane.proc.stop()
    restarted = ControlPlane(tmp_path, port=control_plane.port)  # same data dir, so the same tokens
    try:
        wait_until(lambda: restarted.instances("orders"), timeout=TTL_S * 10, what="orders to register again")
        [after] = restarted.instances("orders")
        assert after["id"] == before["id"] and after["notice_key"] == before["notice_key"]
        agent_token = agent.token_file.read_text().strip()
        with httpx.Client(base_url=restarted.url, headers={"Authorization": f"Bearer {agent_token}"}, timeout=5) as http:
            stolen = http.post("/v1/instances", json={**after, "port": free_port(), "lease_secret": secrets.token_urlsafe(32)})
            assert stolen.status_code == 409, "re-registered with its own lease, which still holds the id"
            assert http.put(f"/v1/instances/{after['id']}/heartbeat", headers={"X-Tidegate-Lease": lease}).status_code == 200
    finally:
        restarted.proc.stop()


ADMIN_WRITES = [
    # caller -> expected status of POST /log-level
    ("no token", None, 401),
    ("a wrong token", "Bearer not-this-agents-token", 401),
    ("the control plane's admin token (not the agent's)", f"Bearer {TOKEN}", 401),
    ("the agent's token, from loopback", "agent token", 200),
    ("the instance's lease secret", "lease", 200),
]


@pytest.mark.parametrize(("caller", "authorization", "expected"), ADMIN_WRITES, ids=[row[0] for row in ADMIN_WRITES])
def test_admin_endpoint_writes_by_caller(agent: Agent, caller: str, authorization: str | None, expected: int) -> None:
    record = agent.admin()
    if authorization == "agent token":
        authorization = f"Bearer {agent.token_file.read_text().strip()}"
    elif authorization == "lease":
        authorization = f"Bearer {record['lease_secret']}"
    headers = {"Authorization": authorization} if authorization else {}
    url = f"http://{record['admin']}"
    level = httpx.post(f"{url}/log-level", json={"level": "DEBUG"}, headers=headers, timeout=5)
    assert level.status_code == expected, level.text
    online = httpx.post(f"{url}/online", headers=headers, timeout=5)  # nothing to undo: 409 once let through
    assert online.status_code == (409 if expected == 200 else expected), online.text
    assert httpx.get(f"{url}/ready", timeout=5).status_code == 200, "reads stay open"


def test_admin_endpoint_refuses_a_rebound_host_name(agent: Agent) -> None:
    """DNS rebinding: a page at evil.test resolving to 127.0.0.1 must not read /state or /metrics."""
    url = f"http://{agent.admin()['admin']}"
    for path in ("/state", "/metrics", "/ready"):
        refused = httpx.get(f"{url}{path}", headers={"Host": "evil.test"}, timeout=5)
        assert refused.status_code == 421, path
        assert "evil.test" in refused.json()["error"]
    assert httpx.get(f"{url}/state", headers={"Host": "localhost"}, timeout=5).status_code == 200
    lease = agent.admin()["lease_secret"]
    write = httpx.post(f"{url}/log-level", json={"level": "INFO"}, headers={"Host": "evil.test", "Authorization": f"Bearer {lease}"})
    assert write.status_code == 421


def test_admin_write_decisions_by_peer() -> None:
    """Who may write, including a peer that is not loopback (which a test on one machine cannot be)."""
    token, leases = "agent-token-0123456789", ["lease-aaaaaaaaaaaaaaaa", "lease-bbbbbbbbbbbbbbbb"]
    assert write_refusal("Bearer lease-bbbbbbbbbbbbbbbb", "10.0.0.9", token, leases) is None  # a lease: from anywhere
    assert write_refusal(f"Bearer {token}", "127.0.0.1", token, leases) is None
    assert write_refusal(f"Bearer {token}", "::1", token, leases) is None
    assert write_refusal(f"Bearer {token}", "::ffff:127.0.0.1", token, leases) is None
    remote = write_refusal(f"Bearer {token}", "10.0.0.9", token, leases)
    assert remote is not None and remote[0] == 403 and "loopback" in remote[1]
    assert write_refusal("Bearer lease-cccccccccccccccc", "127.0.0.1", token, leases) == write_refusal(None, "127.0.0.1", token, leases)
    assert write_refusal(None, "127.0.0.1", token, leases)[0] == 401  # type: ignore[index]
    assert write_refusal("Bearer anything", "127.0.0.1", "", [])[0] == 403  # type: ignore[index]


@pytest.fixture(autouse=True)
def _quiet_httpx() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
