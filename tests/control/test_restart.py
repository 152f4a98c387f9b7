"""A control plane restarted on the same data dir: state survives, watchers catch up."""

from __future__ import annotations

import os
import re
import stat

import httpx

from tests.control.running import TOKEN, ControlProcess
from tests.support.procs import wait_until
from tidegate.client.control import ControlClient
from tidegate.client.watch import Watcher
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.rulebook import RuleBook


def _settings(name: str, window: int) -> dict:
    return {
        "apiVersion": "tidegate.io/v1",
        "kind": "ServiceSettings",
        "metadata": {"name": name},
        "spec": {"service": name, "warmupWindowSeconds": window},
    }


def test_generated_role_tokens_are_private_never_printed_and_survive_restarts(tmp_path) -> None:
    data = tmp_path / "data"
    first = ControlProcess(data, tmp_path / "first.log", token=None)
    try:
        tokens = {role: (data / "tokens" / role).read_text().strip() for role in ("admin", "agent", "read")}
        assert len(set(tokens.values())) == 3
        assert stat.S_IMODE(os.stat(data / "tokens").st_mode) == 0o700
        for role, token in tokens.items():
            assert token.startswith("tg_") and len(token) >= 40
            assert token not in first.proc.output(), "a token printed ends up in service logs"
            assert str(data / "tokens" / role) in first.proc.output(), "the file's path is printed"
            assert stat.S_IMODE(os.stat(data / "tokens" / role).st_mode) == 0o600
    finally:
        first.stop()
    second = ControlProcess(data, tmp_path / "second.log", token=None)
    try:
        assert "(generated now)" not in second.proc.output()
        for token in tokens.values():
            assert httpx.get(f"{second.url}/v1/services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(f"{second.url}/v1/services", headers={"Authorization": "Bearer other-token-of-16-chars"}).status_code == 401
    finally:
        second.stop()


def test_rules_history_survive_and_a_connected_watcher_ends_with_exactly_the_rules_in_force(tmp_path) -> None:
    data = tmp_path / "data"
    plane = ControlProcess(data, tmp_path / "first.log")
    directory, rulebook = ServiceDirectory(), RuleBook()
    watcher = Watcher(plane.url, TOKEN, directory, rulebook, backoff_cap=0.5)
    try:
        with ControlClient(plane.url, TOKEN) as client:
            client.apply_rules([_settings("a", 10), _settings("b", 10)])
            client.apply_rules([_settings("a", 20)])
            client.register(Instance(id="", service="a", host="h", port=1))
            before = {r.key: r for r in client.rules()}
        watcher.start()
        assert watcher.wait_synced(20)
        wait_until(lambda: {r.key: r for r in rulebook.all()} == before, timeout=20, what="watcher to hold the rules")
        wait_until(lambda: directory.instances("a"), timeout=20, what="watcher to see the instance")
        first_epoch = plane_epoch(plane.url)
        assert watcher.epoch == directory.epoch == first_epoch
        plane.stop()
        wait_until(lambda: not watcher.connected, timeout=20, what="watcher to notice the restart")

        plane = ControlProcess(data, tmp_path / "second.log", port=plane.port)
        with ControlClient(plane.url, TOKEN) as client:
            assert {r.key: r for r in client.rules()} == before  # rules survive as they were
            history_a = client.history("default", "ServiceSettings", "a")
            assert [r.document["spec"]["warmupWindowSeconds"] for r in history_a] == [20, 10]
            client.apply_rules([_settings("b", 30), _settings("c", 5)])
            client.delete_rule("default", "ServiceSettings", "a")
            after = {r.key: r for r in client.rules()}
            head = client.health()["revision"]
        assert set(after) == {("default", "ServiceSettings", "b"), ("default", "ServiceSettings", "c")}
        assert after[("default", "ServiceSettings", "b")].revision > before[("default", "ServiceSettings", "b")].revision

        wait_until(lambda: watcher.revision == head, timeout=20, what="watcher to reach the head revision")
        assert {r.key: r for r in rulebook.all()} == after
        # Instances did not survive the restart. The watcher held this one over for a lease (it
        # might have been alive, its agent registering again); nobody registered it, so it left.
        assert directory.epoch == plane_epoch(plane.url) != first_epoch
        wait_until(lambda: directory.instances("a") == (), timeout=20, what="the held-over instance to leave")
        assert directory.knows("a")  # the service name did
    finally:
        watcher.stop()
        plane.stop()


def plane_epoch(url: str) -> str:
    return str(httpx.get(f"{url}/v1/health").json()["epoch"])


def test_the_printed_address_is_the_bound_one(tmp_path) -> None:
    plane = ControlProcess(tmp_path / "data", tmp_path / "log")
    try:
        assert re.search(rf"tidegate control listening on http://127\.0\.0\.1:{plane.port}\b", plane.proc.output())
    finally:
        plane.stop()
