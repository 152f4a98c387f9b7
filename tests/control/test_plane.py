"""ControlPlane operations over real SQLite storage, with fake clocks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.clock import FakeClock
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.storage import SqliteStorage
from tidegate.errors import RuleError


def _settings(name: str, window: float = 60.0, namespace: str | None = None) -> dict:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "tidegate.io/v1",
        "kind": "ServiceSettings",
        "metadata": metadata,
        "spec": {"service": name, "warmupWindowSeconds": window},
    }


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock):
    storage = SqliteStorage(tmp_path)
    yield ControlPlane(storage, instance_ttl=15.0, clock=clock, wall_clock=lambda: 1_700_000_000.0)
    storage.close()


def test_register_defaults_the_id_and_stamps_registration(plane: ControlPlane) -> None:
    instance = plane.register({"service": "orders", "host": "127.0.0.1", "port": 8001, "tag": "gray"})
    assert instance.id == "orders@127.0.0.1:8001"
    assert instance.registered_at == 1_700_000_000.0
    assert plane.services() == [{"name": "orders", "instances": 1, "tags": ["gray"]}]


def test_reaper_removes_exactly_the_instances_whose_heartbeats_stopped(plane: ControlPlane, clock: FakeClock) -> None:
    plane.register({"service": "orders", "host": "h", "port": 1})
    plane.register({"service": "orders", "host": "h", "port": 2})
    clock.advance(10)
    plane.heartbeat("orders@h:2")
    clock.advance(5)  # port 1 is exactly at its deadline: still alive
    assert plane.reap() == []
    clock.advance(0.5)
    assert plane.reap() == ["orders@h:1"]
    assert [i.id for i in plane.instances("orders")] == ["orders@h:2"]
    with pytest.raises(RequestError) as refused:
        plane.heartbeat("orders@h:1")
    assert refused.value.status == 404
    # the service name outlives its instances
    clock.advance(100)
    plane.reap()
    assert plane.services() == [{"name": "orders", "instances": 0, "tags": []}]


def test_every_change_takes_the_next_revision_and_is_logged(plane: ControlPlane) -> None:
    start = plane.revision
    plane.register({"service": "a", "host": "h", "port": 1})
    plane.set_state("a@h:1", {"state": "DRAINING"})
    plane.set_state("a@h:1", {"state": "DRAINING"})  # same state: no change
    plane.apply_rules([_settings("a")])
    plane.deregister("a@h:1")
    plane.delete_rule(("default", "ServiceSettings", "a"))
    assert plane.revision == start + 5
    assert [(c.event, c.data["op"]) for c in plane.log.since(start) or []] == [
        ("instance", "put"),
        ("instance", "put"),
        ("rule", "put"),
        ("instance", "delete"),
        ("rule", "delete"),
    ]


def test_state_changes_follow_the_lifecycle(plane: ControlPlane) -> None:
    plane.register({"service": "a", "host": "h", "port": 1, "state": "SERVING"})
    with pytest.raises(RequestError) as refused:
        plane.set_state("a@h:1", {"state": "STARTING"})
    assert refused.value.status == 409
    with pytest.raises(RequestError) as bad:
        plane.set_state("a@h:1", {"state": "ASLEEP"})
    assert bad.value.status == 422 and bad.value.field == "state"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"host": "h", "port": 1}, "service"),
        ({"service": "a", "port": 1}, "host"),
        ({"service": "a", "host": "h"}, "port"),
        ({"service": "a", "host": "h", "port": "80"}, "port"),
        ({"service": "a", "host": "h", "port": 70000}, "port"),
        ({"service": "a", "host": "h", "port": True}, "port"),
        ({"service": "a", "host": "h", "port": 1, "weight": -1}, "weight"),
        ({"service": "a", "host": "h", "port": 1, "state": "NOPE"}, "state"),
        ({"service": "a", "host": "h", "port": 1, "metadata": {"k": 1}}, "metadata"),
        ({"service": "a", "host": "h", "port": 1, "started_at": "yesterday"}, "started_at"),
        ({"service": "", "host": "h", "port": 1}, "service"),
    ],
)
def test_a_bad_registration_names_its_field_and_changes_nothing(plane: ControlPlane, body: dict, field: str) -> None:
    before = plane.revision
    with pytest.raises(RequestError) as refused:
        plane.register(body)
    assert refused.value.field == field and refused.value.status == 422
    assert plane.revision == before and plane.instances() == []


def test_rules_are_all_or_nothing(plane: ControlPlane) -> None:
    plane.apply_rules([_settings("a", 60)])
    bad = {
        "apiVersion": "tidegate.io/v1",
        "kind": "ServiceSettings",
        "metadata": {"name": "b"},
        "spec": {"service": "b", "warmupWindowSeconds": -3},
    }
    with pytest.raises(RuleError) as refused:
        plane.apply_rules([_settings("a", 90), bad])
    assert refused.value.field == "spec.warmupWindowSeconds"
    [rule] = plane.rules()
    assert rule.document["spec"]["warmupWindowSeconds"] == 60


def test_an_identical_document_is_not_written_again(plane: ControlPlane) -> None:
    [first] = plane.apply_rules([_settings("a")])
    [again] = plane.apply_rules([_settings("a")])
    assert again["revision"] == first["revision"] and again["unchanged"] is True
    assert len(plane.history(("default", "ServiceSettings", "a"))) == 1


def test_rollback_writes_the_old_document_as_a_new_revision(plane: ControlPlane) -> None:
    [v1] = plane.apply_rules([_settings("a", 60)])
    plane.apply_rules([_settings("a", 30)])
    key = ("default", "ServiceSettings", "a")
    rolled = plane.rollback(key, {"revision": v1["revision"]})
    assert rolled["document"]["spec"]["warmupWindowSeconds"] == 60
    assert rolled["revision"] > v1["revision"]
    assert [e.rule.revision for e in plane.history(key)] == sorted((e.rule.revision for e in plane.history(key)), reverse=True)
    with pytest.raises(RequestError) as missing:
        plane.rollback(key, {"revision": 999})
    assert missing.value.status == 404
    deleted = plane.delete_rule(key)
    with pytest.raises(RequestError) as to_delete:
        plane.rollback(key, {"revision": deleted.revision})
    assert to_delete.value.status == 409


def test_namespaces_keep_rules_apart(plane: ControlPlane) -> None:
    # One name in two namespaces (for two services: one ServiceSettings per service, whatever its namespace).
    plane.apply_rules([_settings("a"), {**_settings("a", namespace="shop"), "spec": {"service": "a-shop"}}])
    assert {r.namespace for r in plane.rules()} == {"default", "shop"}
    assert [r.namespace for r in plane.rules(namespace="shop")] == ["shop"]


def test_watch_replays_from_the_log_or_sends_a_snapshot(plane: ControlPlane) -> None:
    plane.register({"service": "a", "host": "h", "port": 1})
    mid = plane.revision
    plane.apply_rules([_settings("a")])
    resumed = asyncio.run(plane.watch(mid))
    assert resumed.snapshot is None and [c.event for c in resumed.replay] == ["rule"]
    fresh = asyncio.run(plane.watch(None))
    assert fresh.snapshot is not None and fresh.replay == []
    assert fresh.snapshot.revision == plane.revision
    event, _, data = fresh.snapshot.frame.decode().partition("\ndata: ")
    assert event == f"event: snapshot\nid: {plane.revision}"
    snapshot = json.loads(data)
    assert snapshot["revision"] == plane.revision
    assert [i["id"] for i in snapshot["instances"]] == ["a@h:1"]
    assert [r["name"] for r in snapshot["rules"]] == ["a"]


def test_a_restart_keeps_rules_and_revisions_and_forces_snapshots(tmp_path: Path, clock: FakeClock) -> None:
    storage = SqliteStorage(tmp_path)
    first = ControlPlane(storage, clock=clock)
    first.register({"service": "a", "host": "h", "port": 1})
    first.apply_rules([_settings("a")])
    last = first.revision
    storage.close()

    storage = SqliteStorage(tmp_path)
    second = ControlPlane(storage, clock=clock)
    assert second.revision > last
    assert second.instances() == []  # ephemeral
    assert [r.name for r in second.rules()] == ["a"]
    assert second.services() == [{"name": "a", "instances": 0, "tags": []}]
    encoded = asyncio.run(second.watch(last)).snapshot
    assert encoded is not None
    snapshot = json.loads(encoded.frame.decode().split("data: ", 1)[1])
    assert first.epoch != second.epoch  # a new registry: agents register again when they see it
    assert snapshot["epoch"] == second.epoch and snapshot["instance_ttl"] == second.leases.ttl
    storage.close()


def test_agent_events_are_kept_newest_first(plane: ControlPlane) -> None:
    plane.post_event({"type": "breaker", "resource": "GET /a", "state": "OPEN"})
    plane.post_event({"type": "breaker", "resource": "GET /a", "state": "CLOSED"})
    assert [e["state"] for e in plane.recent_events()] == ["CLOSED", "OPEN"]
    with pytest.raises(RequestError) as refused:
        plane.post_event({"resource": "x"})
    assert refused.value.field == "type"


def test_a_re_registration_may_keep_its_first_registration_time_but_not_claim_the_future(plane: ControlPlane) -> None:
    kept = plane.register({"service": "a", "host": "h", "port": 1, "registered_at": 1_600_000_000.0})
    assert kept.registered_at == 1_600_000_000.0
    future = plane.register({"service": "a", "host": "h", "port": 1, "registered_at": 1_800_000_000.0})
    assert future.registered_at == 1_700_000_000.0
    with pytest.raises(RequestError) as refused:
        plane.register({"service": "a", "host": "h", "port": 1, "registered_at": "then"})
    assert refused.value.field == "registered_at"


def test_a_claimed_registration_time_before_the_process_started_is_not_kept(plane: ControlPlane) -> None:
    started = 1_650_000_000.0
    body = {"service": "a", "host": "h", "port": 1, "started_at": started}
    # the first registration after the start (a few seconds of prewarm), claimed again after a restart: kept
    assert plane.register({**body, "registered_at": started + 5}).registered_at == started + 5
    # another host's clock may be a little behind this one's: within MAX_CLOCK_SKEW_S it is kept
    assert plane.register({**body, "registered_at": started - 60}).registered_at == started - 60
    # registered a day before its process started: not sane, stamped now like a new instance
    assert plane.register({**body, "registered_at": started - 86_400}).registered_at == 1_700_000_000.0


def test_generated_tokens_never_look_like_an_option() -> None:
    from tidegate.control.storage import new_token

    assert all(new_token().startswith("tg_") for _ in range(200))
