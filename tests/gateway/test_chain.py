"""Through the gateway into a 3-hop chain on real processes: lanes colored at the edge, the route's canary, a drain behind it.

The control plane, every hop under `tidegate run`, and the gateway fed by the watch (the demo scene's
pieces, `tidegate.demo.gateway`). Figures of the bar itself (10,000 requests) are bench/gateway_lanes.py's.
"""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from tidegate.demo import gateway as scene
from tidegate.demo.cluster import Cluster


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("chain"))
    try:
        cluster.start_control()
        scene.start_chain(cluster)
        cluster.client.apply_rules([scene.route(), scene.LANE])
        _, url = scene.start_gateway(cluster)
        scene.wait_for_rules(cluster, url)
        yield cluster, url
    finally:
        cluster.stop_all()


def test_lanes_colored_at_the_gateway_ride_every_hop_and_the_canary_takes_its_weight(chain):
    _, url = chain
    served, failures = asyncio.run(scene.send(url, 1600))
    assert not failures
    assert scene.leaks(served) == 0, served
    assert served[(scene.CLASSES[0], scene.GRAY_PATH)] == 400  # header
    assert served[(scene.CLASSES[1], scene.GRAY_PATH)] == 400  # cookie
    to_canary, plain = scene.canary_share(served)
    assert plain == 800
    # Binomial(800, 0.10): mean 80, sd 8.5; five sd either side (a false failure once in ~3.5 million runs).
    sd = math.sqrt(plain * 0.1 * 0.9)
    assert abs(to_canary - plain * 0.1) <= 5 * sd, (to_canary, plain)


def test_a_client_cannot_put_itself_on_the_gray_lane_with_baggage(chain):
    _, url = chain
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
        for i in range(40):
            body = client.get(f"/order/b{i}", headers={"baggage": "tidegate.lane=gray"}).json()
            assert " -> ".join(body["served"]) in (scene.BASE_PATH, scene.CANARY_PATH)


def test_a_rolling_restart_of_the_entry_service_behind_the_gateway_fails_nothing(chain):
    cluster, url = chain
    sent, failures = asyncio.run(scene.load_during(url, 100.0, lambda: scene.roll_cart(cluster, 3)))
    assert sent > 100
    # Nothing the gateway answered failed; a hop's own call downstream (cart -> pricing, the agent's
    # keep-alive race with uvicorn's 5 s idle close) is the chain's, counted apart.
    assert not [reason for reason in failures if not reason.startswith(scene.HOP)], failures
