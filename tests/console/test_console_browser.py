"""The console in a real browser (Playwright driving Debian's chromium) against a real
control plane with real agents under load. Each test saves a screenshot to the
artifact directory (TIDEGATE_ARTIFACTS, default ./artifacts/console)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import TOKEN, Agented, ControlPlane, uvicorn
from tests.support.procs import free_port, wait_until

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
APPS = str(Path(__file__).resolve().parents[1] / "agent" / "offline" / "drain_apps")
GOVERNED = str(Path(__file__).resolve().parent / "apps")
ARTIFACTS = Path(os.environ.get("TIDEGATE_ARTIFACTS") or Path(__file__).resolve().parents[2] / "artifacts" / "console")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"TIDEGATE_METRICS_PUSH_S": "0.5", "TIDEGATE_WARMUP_WINDOW": "0"}

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    control = ControlPlane(tmp_path)
    try:
        yield control
    finally:
        control.proc.stop()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    programs: list[Agented] = []

    def start(
        name: str, service: str, app: str, url: str, tag: str = "", env: dict[str, str] | None = None, apps: str = APPS
    ) -> tuple[Agented, int]:
        port = free_port()
        command = uvicorn(app, "--app-dir", apps, "--port", str(port))
        program = Agented(tmp_path, name, service, command, url, tag=tag, env={"INSTANCE_ID": name, **FAST, **(env or {})})
        programs.append(program)
        return program, port

    try:
        yield start
    finally:
        for program in programs:
            program.proc.stop()


def _token(plane: ControlPlane, role: str) -> str:
    return (Path(plane.proc.args[plane.proc.args.index("--data") + 1]) / "tokens" / role).read_text().strip()


def _page(browser: Any, plane: ControlPlane, token: str = TOKEN) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.csp_errors = errors
    page.goto(f"{plane.url}/console")
    page.fill("input[name=token]", token)
    page.click("form.login button")
    page.wait_for_url(f"{plane.url}/console")
    return page


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _state(page: Any, port: int) -> str | None:
    row = page.locator(f'tr[data-address="127.0.0.1:{port}"]')
    return row.get_attribute("data-state", timeout=1000) if row.count() else None


class Load:
    """Calls the consumer's /call in a thread; every status is kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: list[int] = []
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                answer = client.get(f"http://127.0.0.1:{self.port}/call", params={"path": "/who"})
                self.statuses.append(answer.status_code)
                if answer.status_code == 200:
                    self.ids.append(answer.json().get("id"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_login_cookie_csp_and_a_read_token_is_read_only(browser: Any, plane: ControlPlane) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{plane.url}/console")
    assert page.url.endswith("/console/login")
    page.fill("input[name=token]", "not-a-token-at-all")
    page.click("form.login button")
    assert "no role's token" in page.locator("#login-error").inner_text()

    read = _page(browser, plane, _token(plane, "read"))
    assert read.locator("#role").inner_text() == "read"
    cookie = next(c for c in read.context.cookies() if c["name"] == "tidegate_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    answer = read.request.get(f"{plane.url}/console")
    assert (
        "script-src 'self'" in answer.headers["content-security-policy"]
        and "unsafe-inline" not in answer.headers["content-security-policy"]
    )
    read.goto(f"{plane.url}/console/rules/edit")
    assert read.locator("#apply").count() == 0  # no write controls
    # a write with the read session's CSRF token is still refused: the role
    csrf = read.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
    refused = read.request.post(f"{plane.url}/console/rules/apply", headers={"X-CSRF-Token": csrf}, form={"text": "x"})
    assert refused.status == 403 and "read-only" in refused.text()
    admin = _page(browser, plane)
    no_csrf = admin.request.post(f"{plane.url}/console/rules/apply", form={"text": "x"})
    assert no_csrf.status == 403 and "CSRF" in no_csrf.text()
    _shot(read, "login-read-only")
    assert read.csp_errors == [] and admin.csp_errors == []


def test_the_instance_list_updates_live_on_warm_up_and_drain(browser: Any, plane: ControlPlane, started: Any) -> None:
    a, a_port = started("orders-a", "orders", "provider:app", plane.url)
    wait_until(lambda: plane.instances("orders"), what="orders-a registered")
    page = _page(browser, plane)
    page.evaluate("window.notReloaded = true")
    _, b_port = started("orders-b", "orders", "provider:app", plane.url, env={"TIDEGATE_WARMUP_WINDOW": "8"})
    wait_until(lambda: _state(page, b_port) == "WARMING", timeout=30, what="orders-b WARMING in the list")
    assert page.locator(f'tr[data-address="127.0.0.1:{b_port}"] progress').count() == 1
    wait_until(lambda: _state(page, b_port) == "SERVING", timeout=30, what="orders-b SERVING after its warm-up")
    httpx.post(f"{a.admin_url()}/offline", params={"wait": "false"}, headers=AUTH, timeout=10)
    wait_until(lambda: _state(page, a_port) in ("DRAINING", None), timeout=30, what="orders-a draining in the list")
    assert page.evaluate("window.notReloaded") is True  # updated in place, from the watch stream
    _shot(page, "instances-live")


def test_the_offline_button_drains_with_no_failed_request(browser: Any, plane: ControlPlane, started: Any) -> None:
    a, a_port = started("orders-a", "orders", "provider:app", plane.url)
    started("orders-b", "orders", "provider:app", plane.url)
    _, consumer = started("checkout", "checkout", "consumer:app", plane.url)
    wait_until(lambda: len(plane.instances("orders")) == 2 and plane.instances("checkout"), what="two orders and a consumer")
    load = Load(consumer)
    try:
        wait_until(lambda: {"orders-a", "orders-b"} <= set(load.ids), timeout=30, what="load reaching both instances")
        page = _page(browser, plane)
        page.locator(f'tr[data-address="127.0.0.1:{a_port}"] button.offline').click()
        wait_until(lambda: "asked of its agent" in page.locator("#outcome").inner_text(timeout=1000), timeout=30, what="the offline answer")
        wait_until(lambda: _state(page, a_port) in ("DRAINING", None), timeout=30, what="orders-a draining")
        # Asked through the registry: orders-a's agent heard it over its watch and ran its own drain.
        wait_until(lambda: "draining orders" in a.proc.output(), timeout=30, what="orders-a's agent to drain")
        served = len(load.statuses)
        wait_until(lambda: len(load.statuses) > served + 50, timeout=60, what="load after the drain")
        _shot(page, "offline-button")
    finally:
        load.stop()
    assert load.statuses and set(load.statuses) == {200}, f"{load.statuses.count(502)} failed of {len(load.statuses)}"
    assert load.ids[-20:] == ["orders-b"] * 20


RULES = """apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: RateLimitStrategy
metadata: {{name: orders-rate}}
spec:
  metricType: RequestAmount
  limitMode: Local
  threshold: {threshold}
  statDurationSeconds: 1
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: FaultToleranceRule
metadata: {{name: orders-limit}}
spec:
  selector: {{app: orders}}
  targets: [{{targetResourceName: "GET /who"}}]
  strategies: [{{name: orders-rate}}]
"""


def _statuses(port: int, count: int = 30) -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [client.get(f"http://127.0.0.1:{port}/who").status_code for _ in range(count)]


def _revision(plane: ControlPlane) -> int:
    return int(httpx.get(f"{plane.url}/v1/health", timeout=5).json()["revision"])


def _type(page: Any, text: str) -> None:
    page.fill("#rule-text", text)
    page.locator("#rule-text").dispatch_event("input")


def test_rules_an_error_names_the_field_a_valid_rule_is_in_force_and_rollback_restores(
    browser: Any, plane: ControlPlane, started: Any
) -> None:
    _, port = started("orders-a", "orders", "governed:app", plane.url, apps=GOVERNED)
    wait_until(lambda: plane.instances("orders"), what="orders registered")
    assert set(_statuses(port)) == {200}
    page = _page(browser, plane)
    page.goto(f"{plane.url}/console/rules/edit")
    before = _revision(plane)
    _type(page, RULES.format(threshold="lots"))
    wait_until(lambda: "spec.threshold" in page.locator("#problems").inner_text(timeout=1000), what="the field's message")
    assert page.locator("#errors .field").first.inner_text() == "spec.threshold"
    page.click("#apply")
    page.wait_for_selector("#outcome")
    assert "nothing was applied" in page.locator("#outcome").inner_text()
    assert _revision(plane) == before and set(_statuses(port)) == {200}  # nothing changed
    _shot(page, "rule-error")

    _type(page, RULES.format(threshold=2))
    wait_until(lambda: page.locator("#valid").count() == 1, what="the edited rule valid")
    assert "+  threshold: 2" in page.locator("#diff").inner_text()
    page.click("#apply")
    wait_until(lambda: "applied" in page.locator("#outcome").inner_text(timeout=1000), what="the rule applied")
    wait_until(lambda: 429 in _statuses(port), timeout=30, what="the agent to refuse past 2 a second")
    strategy = httpx.get(f"{plane.url}/v1/rules/default/RateLimitStrategy/orders-rate", headers=AUTH, timeout=5).json()
    first = strategy["revision"]

    page.goto(f"{plane.url}/console/rules/edit?namespace=default&kind=RateLimitStrategy&name=orders-rate")
    _type(page, RULES.split("---")[0].format(threshold=100000))
    wait_until(lambda: "threshold: 100000" in page.locator("#problems").inner_text(timeout=1000), what="the second edit valid")
    page.click("#apply")
    wait_until(lambda: "applied" in page.locator("#outcome").inner_text(timeout=1000), what="the second revision applied")
    wait_until(lambda: set(_statuses(port)) == {200}, timeout=30, what="the raised limit in force")
    page.reload()
    page.locator(f'tr[data-revision="{first}"] button.rollback').click()
    wait_until(lambda: "rolled back" in page.locator("#outcome").inner_text(timeout=1000), what="the rollback")
    restored = httpx.get(f"{plane.url}/v1/rules/default/RateLimitStrategy/orders-rate", headers=AUTH, timeout=5).json()
    assert restored["document"]["spec"]["threshold"] == 2
    wait_until(lambda: 429 in _statuses(port), timeout=30, what="the restored limit in force at the agent")
    _shot(page, "rule-rollback")


def test_the_lanes_view_shows_the_gray_instances_traffic_and_charts_draw(browser: Any, plane: ControlPlane, started: Any) -> None:
    _, base = started("orders-base", "orders", "provider:app", plane.url)
    _, gray = started("orders-gray", "orders", "provider:app", plane.url, tag="gray")
    wait_until(lambda: len(plane.instances("orders")) == 2, what="base and gray orders")
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                client.get(f"http://127.0.0.1:{gray}/who")
                client.get(f"http://127.0.0.1:{base}/who")
                time.sleep(0.01)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        page = _page(browser, plane)
        page.goto(f"{plane.url}/console/lanes")

        def gray_qps() -> float:
            page.reload()
            cell = page.locator('tr[data-service="orders"] td[data-tag="gray"] .qps')
            return float(cell.inner_text(timeout=2000).split()[0]) if cell.count() else 0.0

        wait_until(lambda: gray_qps() > 0, timeout=60, interval=1, what="gray traffic in the lanes view")
        gray_id = next(i["id"] for i in plane.instances("orders") if i["tag"] == "gray")
        assert gray_id in page.locator('tr[data-service="orders"] td[data-tag="gray"]').inner_text()
        _shot(page, "lanes")
        page.goto(f"{plane.url}/console/services/orders")
        page.wait_for_selector('figure.chart[data-metric="qps"][data-ready="1"] canvas', timeout=30000)
        assert "GET /who" in page.locator("table.resources").inner_text()
        _shot(page, "service-charts")
        assert page.csp_errors == []
    finally:
        stop.set()
        thread.join(timeout=10)


XSS = "<script>alert(1)</script>"


def test_strings_from_services_and_events_render_as_text(browser: Any, plane: ControlPlane) -> None:
    refused = httpx.post(
        f"{plane.url}/v1/instances", json={"id": "x1", "service": XSS, "host": "127.0.0.1", "port": 9}, headers=AUTH, timeout=5
    )
    assert refused.status_code == 422  # the registry's grammar keeps such a name out in the first place
    posted = httpx.post(f"{plane.url}/v1/events", json={"type": XSS, "service": '<img src=x onerror="alert(2)">'}, headers=AUTH, timeout=5)
    assert posted.status_code == 201
    page = _page(browser, plane)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{plane.url}/console/events")
    assert XSS in page.locator("table.events").inner_text()
    assert page.locator("table.events script").count() == 0 and page.locator("table.events img").count() == 0
    page.goto(f"{plane.url}/console/events?type={httpx.QueryParams({'t': XSS})['t']}")
    assert XSS in page.locator("table.events").inner_text()
    time.sleep(0.5)
    assert dialogs == []
    _shot(page, "xss-as-text")
