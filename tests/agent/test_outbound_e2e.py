"""End to end: a consumer under `tidegate run` calls `orders` by name, and reaches every instance.

Real processes throughout: a control plane, three `orders` instances and one
consumer, each a uvicorn server under `tidegate run`. The consumer learns the
instances from the control plane's watch stream and its agent routes
`http://orders/...` through httpx (sync and async), requests and aiohttp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.agent.conftest import uvicorn
from tests.support.procs import free_port, http_ok, wait_until

OUTBOUND_APPS = str(Path(__file__).resolve().parent / "outbound_apps")
LIBRARIES = ("httpx", "httpx-async", "requests", "aiohttp")


def _fanout(port: int, library: str, n: int = 30) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{port}/fanout", params={"library": library, "n": n}, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def test_a_consumer_under_tidegate_run_reaches_every_instance_by_name(control_plane: Any, start: Any) -> None:
    ids = ["orders-a", "orders-b", "orders-c"]
    for instance_id in ids:
        port = free_port()
        start(
            instance_id,
            "orders",
            uvicorn("--app-dir", OUTBOUND_APPS, "instance_app:app", "--port", str(port)),
            control_plane.url,
            env={"INSTANCE_ID": instance_id},
        )
    wait_until(lambda: len(control_plane.instances("orders")) == 3, what="three orders instances to register")

    consumer_port = free_port()
    consumer = start(
        "consumer", "frontend", uvicorn("--app-dir", OUTBOUND_APPS, "fanout_app:app", "--port", str(consumer_port)), control_plane.url
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{consumer_port}/health"), what="the consumer to serve")

    for library in LIBRARIES:
        # The consumer's directory fills from the watch stream; poll until every instance answered.
        reached: set[str] = set()

        def every_instance_reached() -> bool:
            result = _fanout(consumer_port, library)
            reached.update(result["ids"])
            return reached == set(ids)

        try:
            wait_until(every_instance_reached, what=f"{library} calls to reach every instance")
        except TimeoutError:
            print(consumer.fail_report())
            raise
        result = _fanout(consumer_port, library, n=60)
        assert result["errors"] == [], (library, result)
        assert set(result["ids"]) == set(ids), (library, result)
