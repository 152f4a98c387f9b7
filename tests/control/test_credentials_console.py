"""The console's part of the credential model, against a running control plane: endpoint x session x status.

The console takes a role's token once (`POST /console/login`) and then a session cookie; every
write also needs the session's CSRF token. `tests/control/test_credentials.py` tables the API; this
tables every `/console` route the same way, so a read- or agent-role session can look but never
change rules or instances, and no write goes through without the CSRF token.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.control.running import ControlProcess
from tests.control.test_credentials import ADMIN, AGENT, READ, SETTINGS, role_tokens
from tests.support.procs import free_port

NONE, ADMIN_NO_CSRF = "no session", "admin, no CSRF token"
SESSIONS = (NONE, READ, AGENT, ADMIN, ADMIN_NO_CSRF)
RULE_YAML = json.dumps(SETTINGS)  # JSON is YAML


def statuses(*expected: int) -> dict[str, int]:
    return dict(zip(SESSIONS, expected))


PUBLIC = statuses(200, 200, 200, 200, 200)
PAGE = statuses(303, 200, 200, 200, 200)  # no session: to the login page
ADMIN_WRITE = statuses(401, 403, 403, 200, 403)
ANY_SESSION_WRITE = statuses(401, 200, 200, 200, 403)

#: (method, path, form, {session: status}); `{id}` is a registered instance with an admin port.
TABLE: list[tuple[str, str, dict[str, str] | None, dict[str, int]]] = [
    ("GET", "/console/static/console.js", None, PUBLIC),
    ("GET", "/console/login", None, PUBLIC),
    ("GET", "/console", None, PAGE),
    ("GET", "/console/fragments/instances", None, PAGE),
    ("GET", "/console/services/orders", None, PAGE),
    ("GET", "/console/api/metrics?service=orders", None, PAGE),
    ("GET", "/console/watch", None, PAGE),
    ("GET", "/console/rules", None, PAGE),
    ("GET", "/console/rules/edit", None, PAGE),
    ("GET", "/console/lanes", None, PAGE),
    ("GET", "/console/events", None, PAGE),
    ("POST", "/console/instances/{id}/online", {}, ADMIN_WRITE),
    ("POST", "/console/rules/validate", {"text": RULE_YAML}, ANY_SESSION_WRITE),
    ("POST", "/console/rules/apply", {"text": RULE_YAML}, ADMIN_WRITE),
    ("POST", "/console/rules/rollback", "first revision", ADMIN_WRITE),  # type: ignore[list-item]
]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("console-credentials")
    process = ControlProcess(tmp / "data", tmp / "control.log", token=None, ttl=30)
    try:
        yield process.url, role_tokens(tmp / "data")
    finally:
        process.stop()


def _session(url: str, token: str | None) -> tuple[httpx.Client, str]:
    """A client holding a console session of `token`'s role (none: no session), and its CSRF token."""
    http = httpx.Client(base_url=url, timeout=10, follow_redirects=False)
    if token is None:
        return http, ""
    logged_in = http.post("/console/login", data={"token": token})
    assert logged_in.status_code == 303, logged_in.text
    page = http.get("/console")
    found = re.search(r'hx-headers="([^"]*)"', page.text)
    assert found, page.text[:300]
    return http, str(json.loads(html.unescape(found.group(1)))["X-CSRF-Token"])


def _setup(url: str, tokens: dict[str, str]) -> tuple[str, int]:
    """The rule in force, and an instance with an admin port (nothing listens there): its id, and
    the rule's first revision."""
    admin = {"Authorization": f"Bearer {tokens[ADMIN]}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.post("/v1/rules", json=[SETTINGS], headers=admin).status_code == 200
        history = http.get("/v1/rules/default/ServiceSettings/orders/history", headers=admin).json()
        body = {
            "id": f"orders-{secrets.token_hex(6)}",
            "service": "orders",
            "host": "127.0.0.1",
            "port": free_port(),
            "admin_port": free_port(),
            "lease_secret": secrets.token_urlsafe(32),
        }
        registered = http.post("/v1/instances", json=body, headers={"Authorization": f"Bearer {tokens[AGENT]}"})
        assert registered.status_code == 201, registered.text
    return body["id"], min(entry["revision"] for entry in history if entry["op"] == "put")


@pytest.mark.parametrize(
    ("method", "path", "form", "session", "expected"),
    [
        pytest.param(method, path, form, session, status, id=f"{method} {path} as {session}")
        for method, path, form, expected in TABLE
        for session, status in expected.items()
    ],
)
def test_each_console_session_may_do_exactly_what_its_role_must(
    plane: tuple[str, dict[str, str]], method: str, path: str, form: Any, session: str, expected: int
) -> None:
    url, tokens = plane
    instance_id, first_revision = _setup(url, tokens)
    if form == "first revision":
        form = {"namespace": "default", "kind": "ServiceSettings", "name": "orders", "revision": str(first_revision)}
    role = ADMIN if session == ADMIN_NO_CSRF else session
    http, csrf = _session(url, tokens.get(role))
    try:
        headers = {"X-CSRF-Token": csrf} if csrf and session != ADMIN_NO_CSRF else {}
        target = path.replace("{id}", instance_id)
        if path == "/console/watch":
            with http.stream(method, target, headers=headers) as answer:
                status = answer.status_code
        else:
            answer = http.request(method, target, data=form, headers=headers)
            status = answer.status_code
    finally:
        http.close()
    assert status == expected, f"{method} {path} as {session}: {status}"


def test_the_table_covers_every_console_route() -> None:
    from tests.control.test_credentials import _MemoryStorage
    from tidegate.control.app import create_app
    from tidegate.control.plane import ControlPlane
    from tidegate.control.tokens import RoleTokens

    app = create_app(ControlPlane(_MemoryStorage()), RoleTokens("a" * 16, "b" * 16, "c" * 16))
    served = {
        (method, route.path)  # type: ignore[attr-defined]
        for route in app.routes
        for method in (route.methods or ())  # type: ignore[attr-defined]
        if method != "HEAD" and route.path.startswith("/console")  # type: ignore[attr-defined]
    }
    tabled = {(method, _template(path)) for method, path, _, _ in TABLE} | {("POST", "/console/login"), ("POST", "/console/logout")}
    assert served == tabled


def _template(path: str) -> str:
    path = path.split("?", 1)[0]
    path = path.replace("/console/static/console.js", "/console/static/{name}").replace(
        "/console/services/orders", "/console/services/{name}"
    )
    return path.replace("/console/instances/{id}/online", "/console/instances/{id}/{action:str}")


def test_a_token_of_no_role_gets_no_session_and_logout_ends_one(plane: tuple[str, dict[str, str]]) -> None:
    url, tokens = plane
    with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as http:
        refused = http.post("/console/login", data={"token": "not-a-token-of-this-plane"})
        assert refused.status_code == 401 and "tidegate_console" not in refused.headers.get("set-cookie", "")
        assert http.get("/console").status_code == 303
    http, csrf = _session(url, tokens[READ])
    try:
        cookie = http.cookies["tidegate_console"]
        assert http.post("/console/logout", data={"csrf": csrf}).status_code == 303
    finally:
        http.close()
    with httpx.Client(base_url=url, timeout=10, follow_redirects=False, cookies={"tidegate_console": cookie}) as replayed:
        assert replayed.get("/console").status_code == 303  # the ended session is gone, not just its cookie
