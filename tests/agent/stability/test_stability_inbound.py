"""Inbound stability end to end: real control plane, a FastAPI app under `tidegate run`, rules pushed live."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.agent.conftest import ControlPlane
from tests.agent.stability.stability_apps.support import control, overload, rate_limit, start_app, statuses, until_status, windows
from tests.support.procs import wait_until
from tidegate.errors import ControlPlaneError

ITEMS = "GET /items/{item_id}"


def test_qps_rule_on_an_inbound_route_holds_under_overload(control_plane: ControlPlane, start: Callable[..., Any]) -> None:
    program, base = start_app(start, control_plane, "shop", "shop", "shop")
    threshold = 5
    with control(control_plane) as plane, httpx.Client(timeout=10) as client:
        plane.apply_rules(rate_limit("items-qps", ITEMS, threshold))
        until_status(client, f"{base}/items/1", 429, "the QPS rule to take effect")
        found, duration = overload(client, f"{base}/items/2", 2.5)
        passed, blocked = found.count(200), found.count(429)
        assert passed + blocked == len(found), set(found)
        assert threshold <= passed <= threshold * windows(duration), (passed, len(found), duration)
        assert blocked >= len(found) - threshold * windows(duration)

        refused = wait_until(lambda: (r := client.get(f"{base}/items/3")).status_code == 429 and r, what="a refusal")
        body = refused.json()  # type: ignore[union-attr]
        assert body["resource"] == ITEMS and body["rule"].startswith("items-qps/")
        assert int(refused.headers["retry-after"]) >= 1  # type: ignore[union-attr]
        # Another route is not limited.
        assert client.get(f"{base}/users/u1/orders").status_code == 200

        admin = program.admin_url()
        metrics = client.get(f"{admin}/metrics").text
        blocked_metric = re.search(r'tidegate_resource_blocked_total\{resource="GET /items/\{item_id\}"\} (\d+)', metrics)
        assert blocked_metric and int(float(blocked_metric.group(1))) >= blocked, metrics[-2000:]


def test_hotspot_rule_limits_one_user_and_not_the_others(control_plane: ControlPlane, start: Callable[..., Any]) -> None:
    _, base = start_app(start, control_plane, "shop", "shop", "shop")
    document = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "HotspotRule",
        "metadata": {"name": "hot-users"},
        "spec": {
            "selector": {"app": "shop"},
            "resource": "GET /users/{user}/orders",
            "parameter": {"source": "path", "name": "user"},
            "threshold": 3,
            "duration": "1s",
        },
    }
    with control(control_plane) as plane, httpx.Client(timeout=10) as client:
        plane.apply_rules(document)
        until_status(client, f"{base}/users/hot/orders", 429, "the hot-spot rule to take effect")
        hot: list[int] = []
        others: list[int] = []
        started = time.monotonic()
        for round_ in range(40):
            hot.append(client.get(f"{base}/users/hot/orders").status_code)
            others.append(client.get(f"{base}/users/user-{round_ % 20}/orders").status_code)
        duration = time.monotonic() - started
        assert set(others) == {200}, others
        assert hot.count(429) > 0
        assert hot.count(200) <= 3 * windows(duration), (hot.count(200), duration)


def test_pushed_rule_takes_effect_without_restart_and_rollback_restores_it(control_plane: ControlPlane, start: Callable[..., Any]) -> None:
    program, base = start_app(start, control_plane, "shop", "shop", "shop")
    pid = program.proc.pid
    with control(control_plane) as plane, httpx.Client(timeout=10) as client:
        assert client.get(f"{base}/items/1").status_code == 200  # no rule yet
        (strict,) = plane.apply_rules(rate_limit("items-limit", ITEMS, 1))
        until_status(client, f"{base}/items/1", 429, "the strict rule to take effect")

        plane.apply_rules(rate_limit("items-limit", ITEMS, 100_000))
        wait_until(lambda: set(statuses(client, f"{base}/items/1", 20)[0]) == {200}, what="the relaxed revision to take effect")

        plane.rollback(strict.namespace, strict.kind, strict.name, strict.revision)
        until_status(client, f"{base}/items/1", 429, "the rollback to restore the strict rule")
        assert program.proc.alive() and program.proc.pid == pid


def test_invalid_rule_is_refused_and_the_old_one_stays(control_plane: ControlPlane, start: Callable[..., Any]) -> None:
    _, base = start_app(start, control_plane, "shop", "shop", "shop")
    with control(control_plane) as plane, httpx.Client(timeout=10) as client:
        plane.apply_rules(rate_limit("items-limit", ITEMS, 1))
        until_status(client, f"{base}/items/1", 429, "the rule to take effect")

        bad = rate_limit("items-limit", ITEMS, 1)
        bad["spec"]["strategies"][0]["spec"]["threshold"] = "lots"
        with pytest.raises(ControlPlaneError) as refused:
            plane.apply_rules(bad)
        assert "threshold" in str(refused.value)

        # A document that cannot compile with the others (a reference to a strategy that does
        # not exist): the control plane refuses it, naming the reference, and nothing changes.
        dangling = rate_limit("items-limit", ITEMS, 1)
        dangling["spec"]["strategies"] = [{"name": "no-such-strategy"}]
        with pytest.raises(ControlPlaneError) as unresolved:
            plane.apply_rules(dangling)
        assert "no-such-strategy" in str(unresolved.value)
        found, duration = statuses(client, f"{base}/items/1", 20)
        assert found.count(200) <= windows(duration), found  # the one-per-second rule is still in force


def test_adaptive_protection_sheds_inbound_load_past_its_trigger(control_plane: ControlPlane, start: Callable[..., Any]) -> None:
    _, base = start_app(start, control_plane, "shop", "shop", "shop")
    document = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AdaptiveProtection",
        "metadata": {"name": "protect-shop"},
        "spec": {"selector": {"app": "shop"}, "maxConcurrency": 2},
    }

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(client.get(f"{base}/slow") for _ in range(20))))

    with control(control_plane) as plane:
        plane.apply_rules(document)
        # Nothing has completed yet when 20 slow calls arrive together, so the measured capacity is 0:
        # past the trigger (more than 2 in flight) every further call is shed.
        answers = wait_until(
            lambda: (found := asyncio.run(burst())) and any(r.status_code == 503 for r in found) and found,
            what="adaptive protection to shed load",
        )
    statuses_seen = {r.status_code for r in answers}  # type: ignore[union-attr]
    assert statuses_seen == {200, 503}, statuses_seen
    shed = next(r for r in answers if r.status_code == 503)  # type: ignore[union-attr]
    assert shed.json()["rule"] == "protect-shop" and "in flight" in shed.json()["reason"]
    assert "retry-after" not in shed.headers
