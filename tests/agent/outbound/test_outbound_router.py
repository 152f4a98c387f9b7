"""OutboundRouter and the instrumentors' version gate, without the network."""

from __future__ import annotations

import random
import sys
from collections import Counter

import pytest

from tests.agent.outbound_apps.clients import make_runtime
from tidegate.agent.instrumentation import install_all
from tidegate.agent.instrumentation.base import installed_version_meets
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.core.balancer import RoundRobinBalancer
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance, InstanceState
from tidegate.errors import NoInstanceError


def orders(k: int, **fields: object) -> Instance:
    return Instance(id=f"o{k}", service="orders", host="10.0.0.1", port=9000 + k, **fields)  # type: ignore[arg-type]


def test_unknown_hosts_get_no_route() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1)])
    router = OutboundRouter(directory, rng=random.Random(1))
    for host in ("127.0.0.1", "localhost", "example.com", "", "order"):
        assert router.route(host, 80) is None


def test_a_service_name_routes_to_an_instance_port_ignored() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1)])
    router = OutboundRouter(directory, rng=random.Random(1))
    for port in (None, 80, 8000):
        route = router.route("orders", port)
        assert route is not None
        assert (route.service, route.host, route.port) == ("orders", "10.0.0.1", 9001)
        route.done(True)


def test_known_service_without_instance_raises_naming_it() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [], ["orders"])
    router = OutboundRouter(directory, rng=random.Random(1))
    with pytest.raises(NoInstanceError, match="'orders'"):
        router.route("orders", None)
    with pytest.raises(NoInstanceError, match="lane 'gray'"):
        router.route("orders", None, lane="gray")


def test_directory_changes_rebuild_the_balancer() -> None:
    directory = ServiceDirectory()
    router = OutboundRouter(directory, rng=random.Random(1))
    assert router.route("orders", None) is None  # not known yet
    directory.put(1, orders(1))
    directory.put(2, orders(2))
    seen = Counter(router.route("orders", None).instance.id for _ in range(200))  # type: ignore[union-attr]
    assert set(seen) == {"o1", "o2"}
    directory.mark("o1", InstanceState.DRAINING)  # a drain notice: out of balancing at once
    assert {router.route("orders", None).instance.id for _ in range(50)} == {"o2"}  # type: ignore[union-attr]
    directory.remove(3, "orders", "o2")
    with pytest.raises(NoInstanceError):
        router.route("orders", None)
    directory.replace(4, [])
    assert router.route("orders", None) is None  # no longer known at all


def test_a_service_known_before_the_router_was_built_routes() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1), orders(2)])
    router = OutboundRouter(directory, rng=random.Random(1))
    assert router.route("orders", None) is not None


def test_exclude_sends_a_retry_elsewhere() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1), orders(2), orders(3)])
    router = OutboundRouter(directory, rng=random.Random(4))
    assert {router.route("orders", None, exclude={"o1", "o3"}).instance.id for _ in range(20)} == {"o2"}  # type: ignore[union-attr]
    with pytest.raises(NoInstanceError):
        router.route("orders", None, exclude={"o1", "o2", "o3"})


def test_in_flight_is_held_until_done_and_survives_a_rebuild() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1)])
    router = OutboundRouter(directory, rng=random.Random(1))
    first = router.route("orders", None)
    second = router.route("orders", None)
    assert router.in_flight("orders") == {"o1": 2}
    directory.put(2, orders(2))  # rebuild while calls are out
    assert first is not None and second is not None
    first.done(True)
    first.done(True)  # a second done is a no-op
    assert router.in_flight("orders") == {"o1": 1}
    second.done(False)
    assert router.in_flight("orders") == {}


def test_p2c_router_steers_away_from_a_busy_instance() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1), orders(2)])
    router = OutboundRouter(directory, rng=random.Random(1))
    held = [router.route("orders", None) for _ in range(10)]
    assert router.in_flight("orders") == {"o1": 5, "o2": 5}  # least in flight keeps them level
    for route in held:
        if route is not None and route.instance.id == "o2":
            route.done(True)
    for _ in range(20):
        route = router.route("orders", None)
        assert route is not None and route.instance.id == "o2"
        route.done(True)


def test_balancer_factory_and_weight_of_are_pluggable() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1), orders(2)])
    factor = {"o1": 1.0, "o2": 1.0}
    router = OutboundRouter(
        directory,
        balancer_factory=RoundRobinBalancer,
        rng=lambda: 0.0,
        weighting=lambda instances: lambda i: 100 * factor[i.id],
    )
    assert [router.route("orders", None).instance.id for _ in range(4)] == ["o1", "o2", "o1", "o2"]  # type: ignore[union-attr]
    factor["o2"] = 1 / 3
    router.reweigh()
    assert Counter(router.route("orders", None).instance.id for _ in range(40)) == {"o1": 30, "o2": 10}  # type: ignore[union-attr]


def test_after_fork_the_child_starts_with_nothing_in_flight() -> None:
    directory = ServiceDirectory()
    directory.replace(1, [orders(1)])
    router = OutboundRouter(directory, rng=random.Random(1))
    assert router.route("orders", None) is not None
    assert router.in_flight("orders") == {"o1": 1}
    router.after_fork_in_child()
    assert router.in_flight("orders") == {}
    route = router.route("orders", None)
    assert route is not None and route.instance.id == "o1"


def test_version_gate() -> None:
    assert installed_version_meets("httpx >= 0.23")
    assert not installed_version_meets("httpx >= 999")
    assert not installed_version_meets("no-such-distribution-tidegate >= 1")


def test_version_gate_without_packaging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "packaging.requirements", None)  # as if packaging were not installed
    assert installed_version_meets("requests >= 2.25")
    assert not installed_version_meets("requests >= 99.0")
    with pytest.raises(ValueError, match="name >= version"):
        installed_version_meets("requests ~= 2.0")


def test_install_all_applies_the_three_http_clients() -> None:
    runtime = make_runtime()
    applied = install_all(runtime, ("httpx", "requests", "aiohttp"))
    try:
        assert sorted(i.library for i in applied) == ["aiohttp", "httpx", "requests"]
    finally:
        for instrumentor in applied:
            instrumentor.uninstrument()
