"""The control plane's HTTP API, against a real `tidegate control` process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.control.running import SETTINGS, TOKEN, ControlProcess
from tests.support.procs import wait_until
from tidegate.client.control import ControlClient
from tidegate.core.instance import Instance, InstanceState
from tidegate.errors import ControlPlaneError

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join('*' + chr(97 + i) for _ in range(10))}]\n" for i in range(8)
)

WRITES = [
    ("POST", "/v1/instances", {"json": {"service": "a", "host": "h", "port": 1}}),
    ("PUT", "/v1/instances/a@h:1/heartbeat", {}),
    ("PUT", "/v1/instances/a@h:1/state", {"json": {"state": "DRAINING"}}),
    ("DELETE", "/v1/instances/a@h:1", {}),
    ("POST", "/v1/rules", {"content": SETTINGS.format(window=5)}),
    ("DELETE", "/v1/rules/default/ServiceSettings/orders", {}),
    ("POST", "/v1/rules/default/ServiceSettings/orders/rollback", {"json": {"revision": 1}}),
    ("POST", "/v1/events", {"json": {"type": "breaker"}}),
]
READS = [
    "/v1/services",
    "/v1/services/a/instances",
    "/v1/rules",
    "/v1/rules/default/ServiceSettings/orders",
    "/v1/rules/default/ServiceSettings/orders/history",
    "/v1/events",
    "/v1/watch",
]


@pytest.fixture(scope="module")
def refusing(tmp_path_factory) -> Iterator[ControlProcess]:
    """One control plane for the tests that only send requests it must refuse."""
    tmp = tmp_path_factory.mktemp("refusing")
    plane = ControlProcess(tmp / "data", tmp / "control.log")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic dGVzdA==", f"Bearer {TOKEN}x"])
def test_every_write_and_read_needs_the_right_token(refusing: ControlProcess, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    with httpx.Client(base_url=refusing.url, headers=headers, timeout=10) as http:
        for method, path, kwargs in WRITES:
            response = http.request(method, path, **kwargs)
            assert response.status_code == 401, (method, path, response.text)
            assert "token" in response.json()["error"]
        for path in READS:
            assert http.get(path).status_code == 401, path
        health = http.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
    with httpx.Client(base_url=refusing.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
        assert all(http.get(path).status_code in (200, 404) for path in READS if path != "/v1/watch")
        assert http.get("/v1/services").json() == []  # none of the refused writes went through


def test_open_reads_let_reads_through_but_not_writes(tmp_path) -> None:
    plane = ControlProcess(tmp_path / "data", tmp_path / "log", extra=["--open-reads"])
    try:
        with httpx.Client(base_url=plane.url, timeout=10) as http:
            assert http.get("/v1/services").status_code == 200
            assert http.get("/v1/rules").status_code == 200
            assert http.post("/v1/instances", json={"service": "a", "host": "h", "port": 1}).status_code == 401
    finally:
        plane.stop()


def test_register_heartbeat_state_deregister(client: ControlClient) -> None:
    stored = client.register(Instance(id="", service="orders", host="127.0.0.1", port=8001, tag="gray", admin_port=9001, started_at=5.0))
    assert stored.id == "orders@127.0.0.1:8001" and stored.registered_at > 0
    assert client.heartbeat(stored.id) is True
    client.set_state(stored.id, InstanceState.DRAINING)
    [seen] = client.instances("orders")
    assert seen.state == InstanceState.DRAINING and seen.admin_port == 9001 and seen.tag == "gray"
    with pytest.raises(ControlPlaneError) as refused:
        client.set_state(stored.id, InstanceState.STARTING)
    assert refused.value.status == 409
    client.deregister(stored.id)
    client.deregister(stored.id)  # already gone: not an error
    assert client.heartbeat(stored.id) is False
    assert client.services() == [{"name": "orders", "instances": 0, "tags": []}]


def test_re_registering_the_same_id_replaces_it(client: ControlClient) -> None:
    client.register(Instance(id="x", service="orders", host="h", port=1, weight=10))
    client.register(Instance(id="x", service="orders", host="h", port=1, weight=50))
    [only] = client.instances("orders")
    assert only.weight == 50


def test_an_instance_whose_heartbeats_stop_disappears_after_the_ttl(client: ControlClient) -> None:
    quiet = client.register(Instance(id="", service="orders", host="h", port=1))
    alive = client.register(Instance(id="", service="orders", host="h", port=2))

    def only_alive_left() -> bool:
        assert client.heartbeat(alive.id), "the heartbeating instance must keep its lease"
        return [i.id for i in client.instances("orders")] == [alive.id]

    wait_until(only_alive_left, timeout=20, interval=0.3, what="the silent instance to expire")
    assert client.heartbeat(quiet.id) is False


@pytest.mark.parametrize(
    "method, path, kwargs, status, needle",
    [
        ("POST", "/v1/instances", {"content": b"{not json"}, 400, "not valid JSON"),
        ("POST", "/v1/instances", {"content": b""}, 400, "empty"),
        ("POST", "/v1/instances", {"json": [1, 2]}, 422, "object"),
        ("POST", "/v1/instances", {"json": {"service": "a", "host": "h"}}, 422, "port"),
        ("POST", "/v1/instances", {"json": {"service": "a", "host": "h", "port": "x"}}, 422, "port"),
        ("PUT", "/v1/instances/nope/state", {"json": {"state": "DRAINING"}}, 404, "nope"),
        ("POST", "/v1/rules", {"content": b"a: [\n"}, 400, "line"),
        ("POST", "/v1/rules", {"content": b"[1, 2", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
        ("POST", "/v1/rules", {"content": b"\xff\xfe"}, 400, "UTF-8"),
        ("POST", "/v1/rules", {"content": b"- 1\n- 2\n"}, 400, "mapping"),
        ("POST", "/v1/rules/default/ServiceSettings/orders/rollback", {"json": {"revision": "one"}}, 422, "revision"),
        ("POST", "/v1/events", {"json": {"no": "type"}}, 422, "type"),
        ("GET", "/v1/watch?since=abc", {}, 400, "since"),
        ("POST", "/v1/instances", {"content": b'{"service":"a","host":"h","port":1,"started_at":NaN}'}, 400, "NaN"),
        ("POST", "/v1/events", {"content": b'{"type":"x","value":Infinity}'}, 400, "Infinity"),
        ("POST", "/v1/events", {"json": {"type": "x", "blob": "x" * 20000}}, 422, "bytes"),
        ("POST", "/v1/rules", {"content": SETTINGS.format(window=".inf")}, 422, "finite"),
        ("POST", "/v1/rules", {"content": ALIAS_BOMB}, 400, "aliases"),
        ("GET", "/v1/nowhere", {}, 404, "/v1/nowhere"),
    ],
)
def test_malformed_requests_are_refused_with_a_clear_message(refusing: ControlProcess, method, path, kwargs, status, needle) -> None:
    with httpx.Client(base_url=refusing.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
        response = http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        body = response.json()
        assert needle in body["error"] or needle == body.get("field"), body
        for still_fine in ("/v1/health", "/v1/events", "/v1/rules", "/v1/services"):
            assert http.get(still_fine).status_code == 200, still_fine
    assert refusing.proc.alive()


def test_an_invalid_rule_is_refused_and_the_previous_revision_stays(client: ControlClient) -> None:
    [v1] = client.apply_rules(SETTINGS.format(window=60))
    with pytest.raises(ControlPlaneError) as refused:
        client.apply_rules(SETTINGS.format(window="soon"))
    assert refused.value.status == 422
    assert "spec.warmupWindowSeconds" in str(refused.value)
    with pytest.raises(ControlPlaneError) as unknown:
        client.apply_rules({"apiVersion": "v1", "kind": "NoSuchKind", "metadata": {"name": "x"}})
    assert "kind" in str(unknown.value)
    assert client.rules() == [v1]
    assert [r.revision for r in client.history("default", "ServiceSettings", "orders")] == [v1.revision]


def test_rule_history_rollback_and_delete(client: ControlClient, control: ControlProcess) -> None:
    [v1] = client.apply_rules(SETTINGS.format(window=60))
    [v2] = client.apply_rules(SETTINGS.format(window=30))
    [same] = client.apply_rules(SETTINGS.format(window=30))
    assert same.revision == v2.revision  # identical document: not written again
    rolled = client.rollback("default", "ServiceSettings", "orders", v1.revision)
    assert rolled.revision > v2.revision and rolled.document == v1.document
    client.delete_rule("default", "ServiceSettings", "orders")
    history = client.history("default", "ServiceSettings", "orders")
    assert [r.revision for r in history][1:] == [rolled.revision, v2.revision, v1.revision]
    assert history[0].document == {}  # the deletion
    assert client.rules() == []
    with pytest.raises(ControlPlaneError) as missing:
        client.delete_rule("default", "ServiceSettings", "orders")
    assert missing.value.status == 404


def test_json_rule_bodies_and_kind_filter(client: ControlClient) -> None:
    doc = {
        "apiVersion": "tidegate.io/v1",
        "kind": "ServiceSettings",
        "metadata": {"name": "pay", "namespace": "shop"},
        "spec": {"service": "pay"},
    }
    [written] = client.apply_rules([doc])
    assert written.key == ("shop", "ServiceSettings", "pay")
    assert client.rules(namespace="shop", kind="ServiceSettings") == [written]
    assert client.rules(kind="Other") == []


def test_events_posted_by_agents_are_listed(client: ControlClient, control: ControlProcess) -> None:
    client.post_event({"type": "breaker", "resource": "GET /orders/{id}", "state": "OPEN"})
    with httpx.Client(base_url=control.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        [event] = http.get("/v1/events").json()
    assert event["state"] == "OPEN" and event["revision"] >= 1


def test_openapi_is_served(control: ControlProcess) -> None:
    spec = httpx.get(f"{control.url}/v1/openapi.json").json()
    assert "/v1/watch" in spec["paths"] and spec["openapi"].startswith("3.")
    assert "X-Tidegate-Head" in spec["paths"]["/v1/watch"]["get"]["responses"]["200"]["headers"]


def test_a_watch_answer_names_the_head_revision_it_opened_at(control: ControlProcess, client: ControlClient) -> None:
    client.apply_rules(SETTINGS.format(window=30))
    head = client.health()["revision"]
    assert head > 0
    with httpx.stream("GET", f"{control.url}/v1/watch", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as watch:
        assert watch.status_code == 200 and watch.headers["X-Tidegate-Head"] == str(head)


def test_registering_the_returned_instance_again_keeps_its_registration_time(client: ControlClient) -> None:
    first = client.register(Instance(id="", service="orders", host="h", port=1))
    client.deregister(first.id)  # as if the control plane had lost it
    again = client.register(first)
    assert again.registered_at == first.registered_at
