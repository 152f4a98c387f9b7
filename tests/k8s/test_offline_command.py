"""`python -m tidegate offline`, the injected preStop, against a real agent: it finds the admin
endpoint and the lease secret in the agent's state file, drains, exits 0 once drained; without
an agent to reach it exits 1 saying why. And `Listening.admin_address`: which admin address a
consumer names to its providers (the pod's, once the admin endpoint binds it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent.conftest import ControlPlane
from tests.agent.lifecycle.test_credentials import Agent
from tests.support.procs import BIN, PYTHON, TIDEGATE, wait_until
from tidegate.agent.capability import Listening
from tidegate.agent.command import BOOTSTRAP_DIR


@pytest.fixture
def agent(tmp_path: Path, control_plane: ControlPlane) -> Iterator[Agent]:
    started = Agent(tmp_path, control_plane)
    try:
        wait_until(lambda: control_plane.instances("orders"), what="orders to register")
        yield started
    finally:
        started.proc.stop()


def offline(env: dict[str, str], *args: str, command: tuple[str, ...] = tuple(TIDEGATE)) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    return subprocess.run([*command, "offline", *args], env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_offline_drains_the_local_instance_through_its_state_file(agent: Agent, control_plane: ControlPlane) -> None:
    record = agent.admin()
    done = offline({"TIDEGATE_STATE_DIR": str(agent.state_dir), "TIDEGATE_SERVICE": "orders", "TIDEGATE_DRAIN_TIMEOUT": "5"})
    assert done.returncode == 0, done.stderr
    assert "drained" in done.stdout and '"phase": "DRAINED"' in done.stdout
    ready = httpx.get(f"{record['url']}/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["state"] == "DRAINING"
    wait_until(lambda: all(i["state"] == "DRAINING" for i in control_plane.instances("orders")), what="the registry to show the drain")


def test_offline_without_a_reachable_agent_exits_1_saying_why(tmp_path: Path) -> None:
    nothing = offline({"TIDEGATE_STATE_DIR": str(tmp_path), "TIDEGATE_SERVICE": "orders"})
    assert nothing.returncode == 1
    assert "no fixed TIDEGATE_ADMIN_PORT" in nothing.stderr and "orders.admin.json" in nothing.stderr
    (tmp_path / "orders.admin.json").write_text('{"url": "http://127.0.0.1:9", "lease_secret": "x"}')
    gone = offline({"TIDEGATE_STATE_DIR": str(tmp_path), "TIDEGATE_SERVICE": "orders"})
    assert gone.returncode == 1 and "cannot reach the agent's admin endpoint at http://127.0.0.1:9" in gone.stderr
    unnamed = offline({"TIDEGATE_STATE_DIR": str(tmp_path)})
    assert unnamed.returncode == 1 and "TIDEGATE_SERVICE" in unnamed.stderr


def test_offline_with_a_wrong_secret_says_the_agent_refused(agent: Agent, tmp_path: Path) -> None:
    record = agent.admin()
    other = tmp_path / "other"
    other.mkdir()
    (other / "orders.admin.json").write_text(f'{{"url": "{record["url"]}", "lease_secret": "not-the-lease-secret"}}')
    refused = offline({"TIDEGATE_STATE_DIR": str(other), "TIDEGATE_SERVICE": "orders"})
    assert refused.returncode == 1 and "refused the drain (401)" in refused.stderr


@pytest.mark.parametrize("command", [tuple(TIDEGATE), (str(BIN / "tidegate"),)], ids=["python -m tidegate", "tidegate script"])
def test_the_tidegate_command_never_boots_the_agent_its_environment_switches_on(tmp_path: Path, command: tuple[str, ...]) -> None:
    # An injected pod's env (the bootstrap first on PYTHONPATH, TIDEGATE_AGENT=1) reaches whatever runs
    # there, the preStop's `python -m tidegate offline` too. A setting only the agent reads is bad here,
    # so an agent that boots says so (a good one boots silently).
    env = {
        "TIDEGATE_AGENT": "1",
        "PYTHONPATH": BOOTSTRAP_DIR,
        "TIDEGATE_SERVICE": "orders",
        "TIDEGATE_STATE_DIR": str(tmp_path),
        "TIDEGATE_HEARTBEAT_INTERVAL": "soon",
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    app = subprocess.run([PYTHON, "-c", "pass"], env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert "agent not started: TIDEGATE_HEARTBEAT_INTERVAL" in app.stderr, "any other program boots it"
    done = offline(env, command=command)
    assert done.returncode == 1 and "tidegate offline: no " in done.stderr, done.stderr
    assert "agent not started" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("admin_host", "advertised", "named"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1:9901"),  # one machine: loopback reaches
        ("127.0.0.1", "10.0.0.5", ""),  # providers elsewhere cannot reach a loopback endpoint
        ("10.0.0.5", "10.0.0.5", "10.0.0.5:9901"),  # the pod's address (TIDEGATE_ADMIN_HOST from status.podIP)
        ("0.0.0.0", "10.0.0.5", "10.0.0.5:9901"),  # every interface: the advertised host
        ("fd00::5", "fd00::5", "[fd00::5]:9901"),
        # loopback as the one definition (`tidegate.core.trust.is_loopback`) has it: an IPv4-mapped
        # loopback address is loopback, a host name that merely starts with "127." is not
        ("127.0.0.1", "::ffff:127.0.0.1", "127.0.0.1:9901"),
        ("127.0.0.1", "127.example.com", ""),
    ],
)
def test_the_admin_address_a_consumer_names(admin_host: str, advertised: str, named: str) -> None:
    from tidegate.core.instance import Instance

    instance = Instance(id="orders-1", service="orders", host=advertised, port=8000)
    assert Listening((instance,), 9901, None, admin_host).admin_address == named
    assert Listening((instance,), None, None, admin_host).admin_address == ""


def test_the_prestop_imports_neither_httpx_nor_the_agent(tmp_path: Path) -> None:
    # `python -m tidegate offline` runs in the pod at each deletion, often on a small CPU limit:
    # it needs urllib and the state file, not the public API's agent and rule modules behind
    # `tidegate/__init__` nor the CLI's httpx (both load on first use).
    done = offline(
        {"TIDEGATE_STATE_DIR": str(tmp_path), "TIDEGATE_SERVICE": "orders"}, command=(PYTHON, "-X", "importtime", "-m", "tidegate")
    )
    assert done.returncode == 1 and "tidegate offline: no " in done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "tidegate.agent.config" in imported, "the measure works: what offline needs is listed"
    assert not imported & {"httpx", "tidegate.agent.stability", "tidegate.rules", "tidegate.guard", "tidegate.connect"}
