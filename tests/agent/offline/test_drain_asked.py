"""A drain asked for through the control plane, carried to the agent over its own watch.

Two `orders` instances and a consumer under load, as in test_drain.py. An admin's
`PUT /v1/instances/{id}/state` (what the console's buttons and a rollout's promotion
do) asks orders-a's agent to go offline: it runs its lossless drain (a slow request
in it finishes, /ready 503, the process stays up) and the consumer loses no call;
orders-b, not asked, is untouched. SERVING asks it back online. No secret is sent to
any admin endpoint: the ask is in the instance record.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from tests.agent.conftest import TOKEN, ControlPlane
from tests.agent.offline.test_drain import _call, _routable_orders, _up
from tests.support.procs import wait_until

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _ask(plane: Any, instance_id: str, state: str) -> dict[str, Any]:
    answer = httpx.put(f"{plane.url}/v1/instances/{instance_id}/state", json={"state": state}, headers=ADMIN, timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _epoch(plane: Any) -> str:
    try:
        return str(httpx.get(f"{plane.url}/v1/health", timeout=5).json()["epoch"])
    except httpx.HTTPError:
        return ""


def _id_of(plane: Any, port: int) -> str:
    return str(next(i["id"] for i in plane.instances("orders") if i["port"] == port))


def test_a_drain_asked_through_the_control_plane_loses_no_call_and_online_brings_it_back(control_plane: Any, start: Any) -> None:
    a, a_port, c_port, _ = _up(control_plane, start, "uvicorn")
    a_id = _id_of(control_plane, a_port)
    stop = threading.Event()
    results: list[tuple[int, str]] = []

    def load() -> None:
        while not stop.is_set():
            try:
                answer = _call(c_port)
                results.append((answer["status_code"], str(answer.get("id"))))
            except (httpx.HTTPError, ValueError) as error:
                results.append((0, repr(error)))

    slow: dict[str, Any] = {}

    def slow_call() -> None:
        response = httpx.get(f"http://127.0.0.1:{a_port}/slow", params={"s": "2"}, timeout=30)
        slow.update(status=response.status_code, body=response.json())

    loaders = [threading.Thread(target=load) for _ in range(2)]
    for loader in loaders:
        loader.start()
    caller = threading.Thread(target=slow_call)
    caller.start()
    admin = a.admin_url()
    wait_until(lambda: httpx.get(f"{admin}/state", timeout=5).json()["in_flight"] >= 1, what="the slow request in flight")

    asked = _ask(control_plane, a_id, "DRAINING")
    assert asked["ask"]["want"] == "offline" and "lease_secret" not in asked, asked
    wait_until(lambda: "draining orders" in a.proc.output(), what="orders-a's agent to run its drain")
    wait_until(lambda: httpx.get(f"{admin}/ready", timeout=5).status_code == 503, what="orders-a's /ready to say 503")
    mark = len(results)
    wait_until(lambda: len(results) > mark + 20, what="calls after the drain began")
    caller.join(timeout=30)
    assert slow == {"status": 200, "body": {"id": "orders-a", "path": "/slow"}}, slow  # in flight: finished
    assert a.proc.alive(), a.fail_report()  # offline, not stopped
    assert httpx.get(f"http://127.0.0.1:{a_port}/who", timeout=5).status_code == 200

    _ask(control_plane, a_id, "SERVING")
    wait_until(lambda: "drain of orders undone" in a.proc.output(), what="orders-a's agent to come back online")
    wait_until(lambda: httpx.get(f"{admin}/ready", timeout=5).status_code == 200, what="orders-a's /ready to say 200")
    wait_until(lambda: any(r[1] == "orders-a" for r in results[-10:]), what="calls to reach orders-a again")
    stop.set()
    for loader in loaders:
        loader.join(timeout=30)
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    after = results[mark:]
    assert after and any(r[1] == "orders-b" for r in after)


def test_a_drain_asked_for_another_instance_does_not_touch_this_one(control_plane: Any, start: Any) -> None:
    a, a_port, c_port, _ = _up(control_plane, start, "uvicorn")
    b_port = next(p for p in _routable_orders(control_plane) if p != a_port)
    _ask(control_plane, _id_of(control_plane, b_port), "DRAINING")
    wait_until(lambda: _routable_orders(control_plane) == {a_port}, what="orders-b out of the registry's routable set")
    wait_until(lambda: all(_call(c_port)["id"] == "orders-a" for _ in range(5)), what="calls to go to orders-a only")
    # orders-a heard the change of orders-b's record over its watch, and did nothing with it.
    assert httpx.get(f"{a.admin_url()}/ready", timeout=5).status_code == 200
    assert "draining orders" not in a.proc.output() and "the control plane asks" not in a.proc.output(), a.fail_report()
    assert all(_call(c_port)["status_code"] == 200 for _ in range(10))


def test_a_control_plane_restart_neither_undoes_an_asked_drain_nor_repeats_it(control_plane: Any, start: Any, tmp_path: Path) -> None:
    a, a_port, c_port, _ = _up(control_plane, start, "uvicorn")
    admin = a.admin_url()
    _ask(control_plane, _id_of(control_plane, a_port), "DRAINING")
    wait_until(lambda: httpx.get(f"{admin}/ready", timeout=5).status_code == 503, what="orders-a's agent to drain")
    epoch = _epoch(control_plane)
    control_plane.proc.stop()
    again = ControlPlane(tmp_path, port=control_plane.port)  # a new epoch, an empty registry, no ask in it
    try:
        # Its log is the first one's, which said "listening on" already: wait for an answer.
        wait_until(lambda: _epoch(again) not in ("", epoch), what="the restarted control plane to answer")
        wait_until(lambda: len(again.instances("orders")) == 2, what="both orders instances to register again")
        record = next(i for i in again.instances("orders") if i["port"] == a_port)
        assert record["state"] == "DRAINING" and "ask" not in record, record  # registered as it is: still draining
        assert httpx.get(f"{admin}/ready", timeout=5).status_code == 503  # the new epoch did not bring it back
        assert a.proc.output().count("the control plane asks") == 1, a.fail_report()  # acted on once
        assert all(_call(c_port)["id"] == "orders-b" for _ in range(10))
    finally:
        again.proc.stop()
