"""The credential model against a running control plane: what each role may do, exactly.

A table of endpoint x caller x expected status covers every endpoint of
`tidegate.control.app`; then the takeover (an agent token cannot move another
service's instance, change its state or touch rules), who sees `notice_key`, and
that no answer ever carries a lease secret.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.running import ControlProcess
from tests.support.clock import FakeClock
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.storage import SqliteStorage
from tidegate.control.tokens import Role

SETTINGS = {
    "apiVersion": "tidegate.io/v1",
    "kind": "ServiceSettings",
    "metadata": {"name": "orders"},
    "spec": {"service": "orders", "warmupWindowSeconds": 5},
}
RULE = "/v1/rules/default/ServiceSettings/orders"
ROLLOUT = {"metadata": {"name": "orders-v2"}, "spec": {"service": "orders", "tag": "v2", "interval": "1h"}}

# Callers: no token, a wrong one, each role; for the instance endpoints the agent
# also without the instance's lease, and with another instance's lease.
NONE, WRONG, READ, AGENT, ADMIN = "none", "wrong", "read", "agent", "admin"
AGENT_NO_LEASE, AGENT_OTHER_LEASE = "agent, no lease", "agent, another instance's lease"
CALLERS = (NONE, WRONG, READ, AGENT, ADMIN)
LEASED = (*CALLERS, AGENT_NO_LEASE, AGENT_OTHER_LEASE)


def statuses(*expected: int, callers: tuple[str, ...] = CALLERS) -> dict[str, int]:
    return dict(zip(callers, expected))


OPEN = statuses(200, 200, 200, 200, 200)
READS = statuses(401, 401, 200, 200, 200)
ADMIN_ONLY = statuses(401, 401, 403, 403, 200)
OWN_INSTANCE = statuses(401, 401, 403, 200, 200, 403, 403, callers=LEASED)

#: (method, path, body, {caller: status}); `{id}` is an instance the agent registered with its lease.
TABLE: list[tuple[str, str, Any, dict[str, int]]] = [
    ("GET", "/v1/health", None, OPEN),
    ("GET", "/v1/openapi.json", None, OPEN),
    ("GET", "/v1/services", None, READS),
    ("GET", "/v1/services/orders/instances", None, READS),
    ("POST", "/v1/instances", "registration", statuses(401, 401, 403, 201, 201)),
    ("PUT", "/v1/instances/{id}/heartbeat", None, OWN_INSTANCE),
    ("PUT", "/v1/instances/{id}/state", {"state": "DRAINING"}, OWN_INSTANCE),
    ("DELETE", "/v1/instances/{id}", None, OWN_INSTANCE),
    ("GET", "/v1/rules", None, READS),
    ("POST", "/v1/rules", [SETTINGS], ADMIN_ONLY),
    ("DELETE", "/v1/rules", [SETTINGS], ADMIN_ONLY),
    ("GET", RULE, None, READS),
    ("DELETE", RULE, None, ADMIN_ONLY),
    ("GET", RULE + "/history", None, READS),
    ("POST", RULE + "/rollback", "first revision", ADMIN_ONLY),
    ("GET", "/v1/events", None, READS),
    ("POST", "/v1/events", {"type": "breaker", "resource": "x"}, statuses(401, 401, 403, 201, 201)),
    ("GET", "/v1/watch", None, READS),
    # metrics (issue 16): a push is for the pushing instance's own lease, as a heartbeat
    ("POST", "/v1/metrics", "metrics push", OWN_INSTANCE),
    ("GET", "/v1/metrics?service=orders", None, READS),
    ("GET", "/metrics", None, READS),
    # rollouts (issue 17): written with the admin token, read with the read token
    ("GET", "/v1/rollouts", None, READS),
    ("POST", "/v1/rollouts", ROLLOUT, statuses(401, 401, 403, 403, 201)),
    ("GET", "/v1/rollouts/orders", None, READS),
    ("POST", "/v1/rollouts/orders/abort", None, ADMIN_ONLY),
]


@dataclass
class Plane:
    url: str
    tokens: dict[str, str]
    data: Path

    def http(self, token: str | None = None, lease: str = "") -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if lease:
            headers["X-Tidegate-Lease"] = lease
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def register(self, service: str = "orders", port: int = 8001, lease: str = "", instance_id: str = "", tag: str = "") -> dict[str, Any]:
        """An instance registered as an agent would: the agent token, its own lease secret and notice key."""
        body = {
            "tag": tag,
            "id": instance_id or f"{service}-{uuid.uuid4().hex[:12]}",
            "service": service,
            "host": "127.0.0.1",
            "port": port,
            "lease_secret": lease or secrets.token_urlsafe(32),
            "notice_key": secrets.token_urlsafe(32),
        }
        with self.http(self.tokens[AGENT]) as http:
            answer = http.post("/v1/instances", json=body)
        assert answer.status_code == 201, answer.text
        return body


def role_tokens(data: Path) -> dict[str, str]:
    """Each role's token: the control plane's files (before the roles, the one token it had did everything)."""
    folder = data / "tokens"
    if folder.exists():
        return {role: (folder / role).read_text().strip() for role in (ADMIN, AGENT, READ)}
    token = (data / "token").read_text().strip()
    return dict.fromkeys((ADMIN, AGENT, READ), token)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("credentials")
    process = ControlProcess(tmp / "data", tmp / "control.log", token=None, ttl=30)
    try:
        yield Plane(process.url, role_tokens(tmp / "data"), tmp / "data")
    finally:
        process.stop()


def _request(plane: Plane, caller: str, method: str, path: str, body: Any) -> httpx.Response:
    """Set up what the request needs (an instance, the rule), then send it as `caller`."""
    with plane.http(plane.tokens[ADMIN]) as admin:
        assert admin.post("/v1/rules", json=[SETTINGS]).status_code == 200
        if body == "first revision":
            history = admin.get(RULE + "/history").json()
            body = {"revision": min(entry["revision"] for entry in history if entry["op"] == "put")}
        if path.startswith("/v1/rollouts"):  # a v2 instance to roll out to, and no rollout under way
            plane.register(port=8002, tag="v2")
            admin.post("/v1/rollouts/orders/abort")
            if method == "GET" or path != "/v1/rollouts":
                assert admin.post("/v1/rollouts", json=ROLLOUT).status_code == 201
    lease = secrets.token_urlsafe(32)
    instance = plane.register(lease=lease)
    other_lease = secrets.token_urlsafe(32)
    plane.register(lease=other_lease)
    if body == "metrics push":
        body = {"instance": instance["id"], "rows": [["in", "GET /x", 1, {}, 0, 1, 0.01, []]]}
    if body == "registration":
        body = {"service": "orders", "host": "127.0.0.1", "port": 9000 + secrets.randbelow(999), "lease_secret": secrets.token_urlsafe(32)}
    token = {NONE: None, WRONG: "not-a-token-of-this-plane"}.get(caller, plane.tokens.get(caller.split(",")[0]))
    sent_lease = {AGENT: lease, AGENT_OTHER_LEASE: other_lease}.get(caller, "")
    with plane.http(token, sent_lease) as http:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["content"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        url = path.replace("{id}", instance["id"])
        if path == "/v1/watch":
            with http.stream(method, url, **kwargs) as answer:
                if answer.status_code != 200:
                    answer.read()
                return answer
        return http.request(method, url, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "body", "caller", "expected"),
    [
        pytest.param(method, path, body, caller, status, id=f"{method} {path} as {caller}")
        for method, path, body, expected in TABLE
        for caller, status in expected.items()
    ],
)
def test_each_role_may_do_exactly_what_it_must(plane: Plane, method: str, path: str, body: Any, caller: str, expected: int) -> None:
    answer = _request(plane, caller, method, path, body)
    assert answer.status_code == expected, f"{method} {path} as {caller}: {answer.status_code} {answer.read()[:300]!r}"
    if expected in (401, 403):
        assert "token" in answer.json()["error"] or "lease" in answer.json()["error"].lower()


def test_the_table_covers_every_endpoint_of_the_app() -> None:
    from tidegate.control.app import create_app
    from tidegate.control.tokens import RoleTokens

    app = create_app(ControlPlane(_MemoryStorage()), RoleTokens("a" * 16, "b" * 16, "c" * 16))
    # The console's pages take a session cookie, not a bearer token: test_credentials_console.py tables them.
    served = {
        (method, route.path)  # type: ignore[attr-defined]
        for route in app.routes
        for method in (route.methods or ())  # type: ignore[attr-defined]
        if method != "HEAD" and not route.path.startswith("/console")  # type: ignore[attr-defined]
    }
    tabled = {(method, _template(path)) for method, path, _, _ in TABLE}
    assert served == tabled


def _template(path: str) -> str:
    path = path.split("?", 1)[0]
    path = path.replace("/v1/rules/default/ServiceSettings/orders", "/v1/rules/{namespace}/{kind}/{name}")
    path = path.replace("/v1/rollouts/orders/abort", "/v1/rollouts/{service}/{action}").replace(
        "/v1/rollouts/orders", "/v1/rollouts/{service}"
    )
    return path.replace("/v1/services/orders/", "/v1/services/{name:path}/").replace("{id}", "{id:path}")


def test_refusals_say_which_token_is_needed(plane: Plane) -> None:
    with plane.http(plane.tokens[AGENT]) as http:
        refused = http.post("/v1/rules", json=[SETTINGS])
    assert refused.status_code == 403
    assert "admin token" in refused.json()["error"] and "DATA/tokens/admin" in refused.json()["error"]
    with plane.http(plane.tokens[READ]) as http:
        refused = http.post("/v1/events", json={"type": "x"})
    assert refused.status_code == 403 and "agent token" in refused.json()["error"]
    with plane.http() as http:
        missing = http.get("/v1/services")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"


def test_an_agent_token_cannot_take_over_another_services_instance(plane: Plane) -> None:
    """The finding: with an agent's token one could re-register another service's instance id
    pointing elsewhere, change its state and delete rules."""
    victim = plane.register(service="payments", port=8101)
    with plane.http(plane.tokens[AGENT]) as attacker:
        forged = {**victim, "host": "127.0.0.1", "port": 6666, "lease_secret": secrets.token_urlsafe(32)}
        taken = attacker.post("/v1/instances", json=forged)
        assert taken.status_code == 409, taken.text
        assert "held by another lease" in taken.json()["error"]
        no_secret = attacker.post("/v1/instances", json={k: v for k, v in forged.items() if k != "lease_secret"})
        assert no_secret.status_code == 422 and no_secret.json()["field"] == "lease_secret"
        assert attacker.put(f"/v1/instances/{victim['id']}/state", json={"state": "DRAINING"}).status_code == 403
        assert attacker.delete(f"/v1/instances/{victim['id']}").status_code == 403
        guessed = attacker.put(f"/v1/instances/{victim['id']}/heartbeat", headers={"X-Tidegate-Lease": secrets.token_urlsafe(32)})
        assert guessed.status_code == 403
        with plane.http(plane.tokens[ADMIN]) as admin:
            assert admin.post("/v1/rules", json=[SETTINGS]).status_code == 200
        assert attacker.delete(RULE).status_code == 403
        [seen] = [i for i in attacker.get("/v1/services/payments/instances").json() if i["id"] == victim["id"]]
    assert (seen["port"], seen["state"]) == (8101, "SERVING")
    with plane.http(plane.tokens[AGENT], victim["lease_secret"]) as owner:  # the holder's own lease still works
        assert owner.post("/v1/instances", json=victim).status_code == 201
        assert owner.put(f"/v1/instances/{victim['id']}/heartbeat").status_code == 200
        assert owner.delete(f"/v1/instances/{victim['id']}").status_code == 200


def test_notice_keys_only_for_agent_and_admin_and_lease_secrets_for_no_one(plane: Plane) -> None:
    instance = plane.register(service="billing", port=8201)
    for caller in (READ, AGENT, ADMIN):
        with plane.http(plane.tokens[caller]) as http:
            [seen] = [i for i in http.get("/v1/services/billing/instances").json() if i["id"] == instance["id"]]
            snapshot, live = _watch_until_registered(http, lambda: plane.register(service="billing", port=8202))
        shows = caller != READ
        assert ("notice_key" in seen) is shows and (seen.get("notice_key") == instance["notice_key"]) is shows
        snapshot_record = next(i for i in snapshot["instances"] if i["id"] == instance["id"])
        assert ("notice_key" in snapshot_record) is shows
        assert ("notice_key" in live["instance"]) is shows
        for text in (json.dumps(seen), json.dumps(snapshot), json.dumps(live)):
            assert instance["lease_secret"] not in text and "lease_secret" not in text
    with plane.http(plane.tokens[AGENT]) as http:
        registered = http.post("/v1/instances", json={**instance, "port": 8201})
        state = http.put(
            f"/v1/instances/{instance['id']}/state", json={"state": "DRAINING"}, headers={"X-Tidegate-Lease": instance["lease_secret"]}
        )
    for answer in (registered, state):
        assert answer.status_code in (200, 201) and "lease_secret" not in answer.text


def test_only_an_admin_asks_an_instance_to_drain_and_the_ask_names_no_secret(plane: Plane) -> None:
    """An agent changing its own state (with its lease) asks nothing of anyone; an admin's state
    change is an ask its agent hears over the watch, naming the lease by a hash, never the secret.
    A registration cannot forge one, nor drop one the admin made."""
    instance = plane.register(service="ledger", port=8301)
    url = f"/v1/instances/{instance['id']}/state"
    with plane.http(plane.tokens[AGENT], instance["lease_secret"]) as own:
        told = own.put(url, json={"state": "DRAINING"})
        assert told.status_code == 200 and "ask" not in told.json(), told.text
        assert own.put(url, json={"state": "SERVING"}).status_code == 200
    with plane.http(plane.tokens[AGENT], secrets.token_urlsafe(32)) as other:
        assert other.put(url, json={"state": "DRAINING"}).status_code == 403
    with plane.http(plane.tokens[READ]) as reader:
        assert reader.put(url, json={"state": "DRAINING"}).status_code == 403
    with plane.http(plane.tokens[ADMIN]) as admin:
        asked = admin.put(url, json={"state": "DRAINING"})
    assert asked.status_code == 200, asked.text
    ask = asked.json()["ask"]
    assert ask["want"] == "offline" and ask["id"] and ask["lease"] == hashlib.sha256(instance["lease_secret"].encode()).hexdigest()[:16]
    assert instance["lease_secret"] not in asked.text and asked.json()["state"] == "DRAINING"
    with plane.http(plane.tokens[AGENT], instance["lease_secret"]) as own:
        forged = {**instance, "state": "SERVING", "ask": {"want": "online", "id": "forged", "lease": ask["lease"]}}
        again = own.post("/v1/instances", json=forged)
    assert again.status_code == 201 and again.json()["ask"] == ask, again.text  # kept, not replaced by the registration


def _watch_until_registered(http: httpx.Client, register: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The watch stream's snapshot, and the live instance event of a registration made once it is open.

    The snapshot is the shared one, which may be older than the registry (`tidegate.control.snapshots`):
    the changes replayed after it are applied to its instances, as a watcher does."""
    snapshot: dict[str, Any] = {}
    records: dict[str, Any] = {}
    registered: dict[str, Any] = {}
    with http.stream("GET", "/v1/watch") as stream:
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                snapshot = json.loads(line[6:])
                records = {record["id"]: record for record in snapshot["instances"]}
                registered = register()
            elif line.startswith("data: ") and event == "instance":
                change = json.loads(line[6:])
                if change["instance"]["id"] == registered["id"]:
                    return {**snapshot, "instances": list(records.values())}, change
                if change["op"] == "delete":
                    records.pop(change["instance"]["id"], None)
                else:
                    records[change["instance"]["id"]] = change["instance"]
    raise AssertionError("the watch stream ended")


def test_a_read_callers_snapshot_has_no_notice_keys_and_the_shared_one_keeps_them(tmp_path: Path) -> None:
    """The snapshot is encoded once for every watcher (`tidegate.control.snapshots`): a read caller
    gets a copy without notice keys (made once, shared by the read callers after it), agent and
    admin callers the shared snapshot with them, in any order."""
    process = ControlProcess(tmp_path / "data", tmp_path / "control.log", token=None, ttl=30)
    try:
        fresh = Plane(process.url, role_tokens(tmp_path / "data"), tmp_path / "data")
        registered = {body["id"]: body for body in (fresh.register(service="billing", port=8300 + n) for n in range(3))}
        for caller in (READ, AGENT, READ, ADMIN, READ):
            with fresh.http(fresh.tokens[caller]) as http:
                records = {record["id"]: record for record in _snapshot(http)["instances"]}
            assert set(records) == set(registered), caller
            for instance_id, body in registered.items():
                if caller == READ:
                    assert "notice_key" not in records[instance_id]
                else:
                    assert records[instance_id]["notice_key"] == body["notice_key"], caller
    finally:
        process.stop()


def _snapshot(http: httpx.Client) -> dict[str, Any]:
    """The first snapshot frame of a watch stream."""
    with http.stream("GET", "/v1/watch") as stream:
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                return json.loads(line[6:])  # type: ignore[no-any-return]
    raise AssertionError("the watch stream ended")


# -- leases, exactly (the plane without HTTP, on a fake clock) -------------------------------


class _MemoryStorage(SqliteStorage):
    def __init__(self) -> None:
        import tempfile

        super().__init__(Path(tempfile.mkdtemp(prefix="tidegate-test-")))


def _body(secret: str, port: int = 1) -> dict[str, Any]:
    return {"id": "orders-1", "service": "orders", "host": "h", "port": port, "lease_secret": secret}


def test_a_lease_is_held_until_it_ends_then_free(clock: FakeClock) -> None:
    plane = ControlPlane(_MemoryStorage(), instance_ttl=15.0, clock=clock)
    holder, other = "h" * 43, "o" * 43
    plane.register(_body(holder), Role.AGENT)
    plane.register(_body(holder, port=2), Role.AGENT)  # the same secret registers again (a restart, a lost lease)
    with pytest.raises(RequestError) as refused:
        plane.register(_body(other, port=3), Role.AGENT)
    assert refused.value.status == 409
    clock.advance(15.0)
    with pytest.raises(RequestError):  # alive up to and including its deadline
        plane.register(_body(other, port=3), Role.AGENT)
    clock.advance(0.1)
    assert plane.register(_body(other, port=3), Role.AGENT).port == 3  # expired (not yet reaped): free
    plane.heartbeat("orders-1", Role.AGENT, other)
    with pytest.raises(RequestError) as stale:
        plane.heartbeat("orders-1", Role.AGENT, holder)
    assert stale.value.status == 403
    plane.deregister("orders-1", Role.AGENT, other)
    assert plane.register(_body(holder), Role.AGENT).port == 1  # deregistered: free again


def test_an_admin_may_replace_a_registration_and_the_holder_keeps_its_lease(clock: FakeClock) -> None:
    plane = ControlPlane(_MemoryStorage(), clock=clock)
    plane.register(_body("h" * 43), Role.AGENT)
    replaced = plane.register({"id": "orders-1", "service": "orders", "host": "h", "port": 9, "weight": 10})
    assert (replaced.port, replaced.weight) == (9, 10)
    plane.heartbeat("orders-1", Role.AGENT, "h" * 43)
    plane.set_state("orders-1", {"state": "DRAINING"})  # an admin needs no lease


@pytest.mark.parametrize("secret", [123, "short", "x" * 257, "has space" * 4, "ünïcode" * 4])
def test_a_bad_lease_secret_or_notice_key_is_refused_naming_the_field(clock: FakeClock, secret: object) -> None:
    plane = ControlPlane(_MemoryStorage(), clock=clock)
    for field in ("lease_secret", "notice_key"):
        body = {**_body("h" * 43), field: secret}
        with pytest.raises(RequestError) as refused:
            plane.register(body, Role.AGENT)
        assert (refused.value.status, refused.value.field) == (422, field)


def test_the_openapi_document_names_the_role_of_each_operation() -> None:
    from tidegate.control.openapi import SPEC

    for method, path, _, expected in TABLE:
        operation = SPEC["paths"][_template(path).replace("{id:path}", "{id}").replace("{name:path}", "{name}")][method.lower()]
        if expected[NONE] < 400:
            assert operation["security"] == [], path
        else:
            assert operation["x-tidegate-role"] == next(c for c in (READ, AGENT, ADMIN) if expected[c] < 400), (method, path)
