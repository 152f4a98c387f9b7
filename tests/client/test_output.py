"""What the CLI's listings print: literal text only, whole identifiers, and JSON for scripts
(issue 11 finding 8, issue 10 item 14). Real commands, real control planes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from tests.control.running import SETTINGS, TOKEN, ControlProcess, tidegate_cli
from tidegate.client.control import ControlClient
from tidegate.core.instance import Instance

# -- a control plane that answers whatever was stored before names were checked ------------

HOSTILE_SERVICE = "[red]x[/red]\x1b[2J\x1b]0;pwned\x07"
HOSTILE_INSTANCE = {
    "id": "[bold]id[/bold]\x1b[31m",
    "service": HOSTILE_SERVICE,
    "host": "h\x1b[0m\u202e",
    "port": 1,
    "tag": "[blink]t[/blink]",
    "state": "SERVING",
    "registered_at": 0,
}
HOSTILE_RULE = {
    "namespace": "default",
    "kind": "ServiceSettings",
    "name": "[red]r[/red]",
    "revision": 3,
    "document": {"spec": {"service": "\x1b[5mblink", "note": "[link=http://evil.example]click[/link]"}},
}


class _Hostile(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = unquote(self.path.split("?")[0])
        answers: dict[str, Any] = {
            "/v1/health": {"status": "ok", "revision": 7},
            "/v1/services": [{"name": HOSTILE_SERVICE, "instances": 1, "tags": ["[blink]t[/blink]"]}],
            f"/v1/services/{HOSTILE_SERVICE}/instances": [HOSTILE_INSTANCE],
            "/v1/rules": [HOSTILE_RULE],
            "/v1/rules/default/ServiceSettings/orders/history": [{**HOSTILE_RULE, "op": "put"}],
        }
        body = json.dumps(answers.get(path, {"error": f"no {path}"})).encode()
        self.send_response(200 if path in answers else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.parametrize("columns", [None, "200"])
def test_markup_prints_literally_and_control_characters_never_reach_the_terminal(hostile: str, columns: str | None) -> None:
    status = tidegate_cli(hostile, "status", columns=columns)
    listed = tidegate_cli(hostile, "rules", "list", columns=columns)
    history = tidegate_cli(hostile, "rules", "history", "ServiceSettings", "orders", columns=columns)
    for result in (status, listed, history):
        assert result.returncode == 0, result.stderr
        assert not any(c in result.stdout for c in "\x1b\x07\u202e"), repr(result.stdout)
    assert "[red]x[/red]" in status.stdout and "[bold]id[/bold][31m" in status.stdout and "[blink]t[/blink]" in status.stdout
    assert "[red]r[/red]" in listed.stdout and "[link=http://evil.example]click[/link]" in listed.stdout
    assert "[5mblink" in history.stdout


def test_json_output_escapes_control_characters(hostile: str) -> None:
    result = tidegate_cli(hostile, "status", "--output", "json")
    assert result.returncode == 0 and "\x1b" not in result.stdout
    [service] = json.loads(result.stdout)["services"]
    assert service["name"] == HOSTILE_SERVICE and service["instances"][0]["id"] == HOSTILE_INSTANCE["id"]


# -- scripting against a real control plane -------------------------------------------------


def test_every_listing_has_json_output(control: ControlProcess, client: ControlClient) -> None:
    client.register(Instance(id="", service="orders", host="127.0.0.1", port=8001, tag="gray", weight=40))
    client.register(Instance(id="", service="payments", host="127.0.0.1", port=8002))
    [v1] = client.apply_rules(SETTINGS.format(window=60))
    client.delete_rule("default", "ServiceSettings", "orders")
    [v3] = client.apply_rules(SETTINGS.format(window=30))

    status = json.loads(tidegate_cli(control.url, "status", "--output", "json").stdout)
    assert status["control"] == control.url and status["revision"] >= v3.revision
    by_name = {s["name"]: s for s in status["services"]}
    [orders] = by_name["orders"]["instances"]
    assert orders["id"] == "orders@127.0.0.1:8001" and orders["tag"] == "gray" and orders["weight"] == 40 and orders["state"] == "SERVING"
    assert by_name["payments"]["tags"] == [""]

    [rule] = json.loads(tidegate_cli(control.url, "rules", "list", "-o", "json").stdout)
    assert rule["name"] == "orders" and rule["revision"] == v3.revision and rule["document"]["spec"]["warmupWindowSeconds"] == 30

    history = json.loads(tidegate_cli(control.url, "rules", "history", "ServiceSettings", "orders", "--output", "json").stdout)
    assert [(h["revision"], h["op"]) for h in history] == [(v3.revision, "put"), (v3.revision - 1, "delete"), (v1.revision, "put")]

    client.delete_rule("default", "ServiceSettings", "orders")
    assert json.loads(tidegate_cli(control.url, "rules", "list", "--output", "json").stdout) == []


def test_identifiers_are_never_cut_when_stdout_is_not_a_terminal(control: ControlProcess, client: ControlClient) -> None:
    long_id = "orders-" + "0123456789abcdef" * 12
    long_host = ".".join(["orders-instance-with-a-long-name"] * 4) + ".svc.cluster.local"
    client.register(Instance(id=long_id, service="orders", host=long_host, port=8001))
    client.apply_rules(
        SETTINGS.format(window=60).replace(
            "service: orders", "service: orders\n  prewarmServices: " + ",".join(f"svc{i}" for i in range(40))
        )
    )

    status = tidegate_cli(control.url, "status")  # no COLUMNS: rich would fit 80 columns
    assert status.returncode == 0, status.stderr
    assert long_id in status.stdout and f"{long_host}:8001" in status.stdout and "…" not in status.stdout
    listed = tidegate_cli(control.url, "rules", "list")
    spec = next(line for line in listed.stdout.splitlines() if "prewarmServices" in line)
    assert "svc39" in spec and "…" not in listed.stdout
    history = tidegate_cli(control.url, "rules", "history", "ServiceSettings", "orders")
    assert "svc39" in history.stdout and "…" not in history.stdout


def test_a_name_stored_before_names_were_checked_does_not_break_status(tmp_path) -> None:
    from tidegate.control.storage import SqliteStorage

    old = SqliteStorage(tmp_path / "data")
    for name in ("a/b", "../../etc/passwd", "..", "x?y#z"):
        old.add_service(name)
    old.close()
    plane = ControlProcess(tmp_path / "data", tmp_path / "control.log")
    try:
        with ControlClient(plane.url, TOKEN) as client:
            client.register(Instance(id="", service="orders", host="127.0.0.1", port=8001))
        status = tidegate_cli(plane.url, "status")
        assert status.returncode == 0, status.stderr
        for text in ("orders@127.0.0.1:8001", "a/b", "../../etc/passwd", "x?y#z"):
            assert text in status.stdout
        assert json.loads(tidegate_cli(plane.url, "status", "-o", "json").stdout)["services"][-1]["name"] == "x?y#z"
    finally:
        plane.stop()
