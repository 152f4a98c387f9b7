"""`tidegate status` and `tidegate rules`, run as real commands against a real control plane."""

from __future__ import annotations

import http.server
import subprocess
import threading

import pytest

from tests.control.running import SETTINGS, ControlProcess, tidegate_cli
from tests.support.procs import TIDEGATE, Proc, free_port, wait_until
from tidegate.client.control import ControlClient
from tidegate.core.instance import Instance


def _cli(url: str, *args: str, **options: str) -> subprocess.CompletedProcess[str]:
    return tidegate_cli(url, *args, columns="200", **options)


def test_status_shows_services_instances_tags_and_states(control: ControlProcess, client: ControlClient) -> None:
    client.register(Instance(id="", service="orders", host="127.0.0.1", port=8001, tag="gray", weight=40))
    client.register(Instance(id="", service="payments", host="127.0.0.1", port=8002))
    result = _cli(control.url, "status")
    assert result.returncode == 0, result.stderr
    for text in ("orders@127.0.0.1:8001", "gray", "SERVING", "40", "payments", "(base)"):
        assert text in result.stdout


def test_status_says_clearly_when_the_control_plane_is_unreachable() -> None:
    result = _cli(f"http://127.0.0.1:{free_port()}", "status")
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "tidegate control" in result.stderr


@pytest.mark.parametrize("health", [b"[]", b'{"no": "revision"}', b'"text"'])
def test_status_says_clearly_when_the_address_answers_another_api(health: bytes) -> None:
    """Not a traceback (a TypeError on `[]["revision"]` before): one line naming the address."""
    answers = {"/v1/services": b'[{"name": "orders"}, "not an object"]', "/v1/health": health}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = answers.get(self.path.split("?")[0], b"[]")
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = _cli(f"http://127.0.0.1:{server.server_address[1]}", "status")
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "not a tidegate control plane" in result.stderr, result.stderr


def test_status_with_a_wrong_token_fails_naming_it(control: ControlProcess) -> None:
    result = _cli(control.url, "status", token="wrong-but-long-enough")
    assert result.returncode == 1 and "token" in result.stderr


def test_rules_apply_list_history_rollback_delete(control: ControlProcess, tmp_path) -> None:
    rule_file = tmp_path / "orders.yaml"
    rule_file.write_text(SETTINGS.format(window=60))
    applied = _cli(control.url, "rules", "apply", "-f", str(rule_file))
    assert applied.returncode == 0, applied.stderr
    first_revision = int(applied.stdout.split("revision")[-1])
    assert _cli(control.url, "rules", "apply", "-f", "-", stdin=SETTINGS.format(window=30)).returncode == 0

    listed = _cli(control.url, "rules", "list", "--kind", "ServiceSettings")
    assert "orders" in listed.stdout and '"warmupWindowSeconds":30' in listed.stdout

    rolled = _cli(control.url, "rules", "rollback", "ServiceSettings", "orders", str(first_revision))
    assert rolled.returncode == 0, rolled.stderr
    history = _cli(control.url, "rules", "history", "ServiceSettings", "orders")
    assert history.stdout.count('"warmupWindowSeconds":60') == 2

    assert _cli(control.url, "rules", "delete", "ServiceSettings", "orders").returncode == 0
    assert "no rule in force" in _cli(control.url, "rules", "list").stdout


def test_rules_errors_name_the_field_and_exit_1(control: ControlProcess, tmp_path) -> None:
    bad = _cli(control.url, "rules", "apply", "-f", "-", stdin=SETTINGS.format(window="later"))
    assert bad.returncode == 1 and "spec.warmupWindowSeconds" in bad.stderr
    unparsable = _cli(control.url, "rules", "apply", "-f", "-", stdin="a: [\n")
    assert unparsable.returncode == 1 and "line" in unparsable.stderr
    missing_file = _cli(control.url, "rules", "apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing_file.returncode == 1 and "nope.yaml" in missing_file.stderr
    missing_rule = _cli(control.url, "rules", "rollback", "ServiceSettings", "ghost", "1")
    assert missing_rule.returncode == 1 and "ghost" in missing_rule.stderr


def test_status_finds_the_local_control_planes_token_in_the_default_data_dir(tmp_path) -> None:
    """A control plane started without --data or --token keeps a generated token
    where `tidegate status` looks for it when given none."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    port = free_port()
    plane = Proc([*TIDEGATE, "control", "--port", str(port)], tmp_path / "control.log", env={**env, "TIDEGATE_TOKEN": ""})
    try:
        wait_until(lambda: "listening on" in plane.output(), timeout=30, what="control plane start")
        assert (tmp_path / "xdg" / "tidegate" / "tokens" / "read").exists()
        result = subprocess.run(
            [*TIDEGATE, "status", "--control", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "no service registered yet" in result.stdout
    finally:
        plane.stop()
