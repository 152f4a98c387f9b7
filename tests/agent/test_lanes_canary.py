"""A CanaryRule through real processes: pricing sends a sticky 10% of its base traffic to stock v2.

The sticky key (`x-user-id`) is read from the request entering pricing and
kept in its context, so the same user always reaches the same stock version;
the request stays base (no lane is added downstream).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.agent.conftest import TOKEN, uvicorn
from tests.support.procs import free_port, http_ok, wait_until
from tidegate.client.control import ControlClient
from tidegate.core.coloring import sticky_bucket

CANARY = {
    "apiVersion": "traffic.opensergo.io/v1alpha1",
    "kind": "CanaryRule",
    "metadata": {"name": "stock-v2"},
    "spec": {"service": "stock", "tag": "v2", "percent": 10, "stickyKey": {"header": "x-user-id"}},
}


def test_a_canary_sends_the_same_users_to_the_tagged_version_every_time(control_plane: Any, start: Any) -> None:
    ports = {}
    for name, service, tag, next_hop in (("stock", "stock", "", ""), ("stock-v2", "stock", "v2", ""), ("pricing", "pricing", "", "stock")):
        ports[name] = free_port()
        start(
            name,
            service,
            uvicorn("tidegate.demo.services.shop:app", "--port", str(ports[name]), "--no-access-log"),
            control_plane.url,
            tag=tag,
            env={"SHOP_NEXT": next_hop},
        )
    for name, port in ports.items():
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), what=f"{name} to serve")
    pricing = f"http://127.0.0.1:{ports['pricing']}"
    wait_until(lambda: len(control_plane.instances("stock")) == 2, what="both stock versions to register")

    def served(client: httpx.Client, user: str) -> str:
        body = client.get(f"{pricing}/order/1", headers={"x-user-id": user}).json()
        return str(body["served"][-1])

    users = [f"user-{n}" for n in range(300)]
    expected = {u: "stock:v2" if sticky_bucket(u, "stock") < 1000 else "stock:base" for u in users}
    with httpx.Client(timeout=10) as client:
        # before the rule: base traffic never reaches v2
        assert {served(client, u) for u in users[:50]} == {"stock:base"}
        with ControlClient(control_plane.url, TOKEN) as plane:
            plane.apply_rules(CANARY)
        wait_until(
            lambda: served(client, next(u for u in users if expected[u] == "stock:v2")) == "stock:v2",
            what="the canary rule to reach pricing",
        )
        for _ in range(2):  # the same users, the same answers
            assert {u: served(client, u) for u in users} == expected
        assert 10 < sum(1 for v in expected.values() if v == "stock:v2") < 60
        # without the key, each call draws: both versions are reached, base far more often
        anonymous = [str(client.get(f"{pricing}/order/1").json()["served"][-1]) for _ in range(200)]
        assert set(anonymous) == {"stock:base", "stock:v2"}
