"""The control plane's metric endpoints: agents push (`POST /v1/metrics`), charts read
(`GET /v1/metrics`), Prometheus scrapes one place (`GET /metrics`).

Push, not pull: the plane never calls an agent for numbers. A push names its instance;
its service and tag are the registry's (an agent cannot count into another service), and
below admin the push carries the instance's lease secret, as a heartbeat does. The store
is pure (`metrics_store`); the wall clock comes in here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from math import isfinite
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidegate.control.auth import lease_of
from tidegate.control.metrics_store import BLOCKED, ERRORS, PASSED, RT_COUNT, RT_SUM, MetricsError, MetricsStore
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.tokens import Role

Handler = Callable[[Request], Any]
Guard = Callable[[Handler], Handler]
#: Points a chart gets when it names no step.
DEFAULT_POINTS = 300


def metrics_routes(
    plane: ControlPlane,
    store: MetricsStore,
    read: Guard,
    agent: Guard,
    body: Callable[[Request], Any],
    clock: Callable[[], float] = time.time,
) -> list[Route]:
    """The three routes; `read` and `agent` wrap a handler with the role it needs, `body` reads a JSON body."""

    async def push(request: Request) -> Response:
        data = await body(request)
        if not isinstance(data, dict) or not isinstance(data.get("instance"), str):
            raise RequestError(422, "a push is an object naming its 'instance' (the id it registered)", field="instance")
        instance_id = data["instance"]
        instance = plane.instance(instance_id)
        if instance is None:
            raise RequestError(404, f"instance {instance_id!r} is not registered: register it, then push", field="instance")
        if request.state.role < Role.ADMIN and not plane.leases.held_by(instance_id, lease_of(request)):
            raise RequestError(403, f"a push for {instance_id!r} needs its lease secret in X-Tidegate-Lease", field="instance")
        try:
            stored = store.ingest(data, instance.service, instance.tag, clock())
        except MetricsError as error:
            raise RequestError(422, str(error), field=error.field) from None
        return JSONResponse({"stored": stored, "dropped": store.dropped})

    async def query(request: Request) -> Response:
        params = request.query_params
        service = params.get("service")
        if not service:
            raise RequestError(400, "name the service: ?service=NAME", field="service")
        now = clock()
        end = _number(params, "to", now)
        start = _number(params, "from", end - 300)
        step = _number(params, "step", max(1.0, (end - start) / DEFAULT_POINTS))
        # `tag` absent: every tag summed; `tag=` (empty): the base (untagged) instances
        tag = params.get("tag")
        try:
            answer = store.query(service, params.get("resource") or None, tag, start, end, step, now)
        except MetricsError as error:
            raise RequestError(400, str(error), field=error.field) from None
        return JSONResponse(answer)

    async def prometheus(request: Request) -> Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_PlaneCollector(plane, store))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/v1/metrics", agent(push), methods=["POST"]),
        Route("/v1/metrics", read(query), methods=["GET"]),
        Route("/metrics", read(prometheus), methods=["GET"]),
    ]


def _number(params: Any, name: str, default: float) -> float:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise RequestError(400, f"must be a number (seconds since the epoch, or seconds for step), got {text!r}", field=name) from None
    if not isfinite(value):
        raise RequestError(400, f"must be a finite number, got {text!r}", field=name)
    return value


class _PlaneCollector(Collector):
    """The plane's own state and the totals of every series the agents pushed."""

    def __init__(self, plane: ControlPlane, store: MetricsStore) -> None:
        self.plane = plane
        self.store = store

    def collect(self) -> Any:
        self.store.flush()
        instances = GaugeMetricFamily("tidegate_control_instances", "Registered instances", labels=["service", "tag", "state"])
        counts: dict[tuple[str, str, str], int] = {}
        for instance in self.plane.instances():
            key = (instance.service, instance.tag, str(instance.state.value))
            counts[key] = counts.get(key, 0) + 1
        for labels, count in sorted(counts.items()):
            instances.add_metric(list(labels), count)
        yield instances
        watchers = GaugeMetricFamily("tidegate_control_watchers", "Open watch streams")
        watchers.add_metric([], len(self.plane.fanout))
        yield watchers
        revision = GaugeMetricFamily("tidegate_control_revision", "The global revision")
        revision.add_metric([], self.plane.revision)
        yield revision
        series = GaugeMetricFamily("tidegate_control_metric_series", "Metric series the control plane keeps")
        series.add_metric([], len(self.store.series))
        yield series
        dropped = CounterMetricFamily("tidegate_control_metric_rows_dropped", "Pushed rows dropped at the series cap")
        dropped.add_metric([], self.store.dropped)
        yield dropped
        pushes = CounterMetricFamily("tidegate_control_metric_pushes", "Metric pushes accepted")
        pushes.add_metric([], self.store.pushes)
        yield pushes

        label_names = ["service", "tag", "resource"]
        passed = CounterMetricFamily("tidegate_service_passed", "Calls answered, pushed by agents", labels=label_names)
        blocked = CounterMetricFamily("tidegate_service_blocked", "Calls a rule refused, pushed by agents", labels=label_names)
        errors = CounterMetricFamily("tidegate_service_errors", "Calls that failed, pushed by agents", labels=label_names)
        rt_sum = CounterMetricFamily("tidegate_service_rt_seconds_sum", "RT summed, pushed by agents", labels=label_names)
        rt_count = CounterMetricFamily("tidegate_service_rt_seconds_count", "RT observations, pushed by agents", labels=label_names)
        for (service, tag, resource), stored in sorted(self.store.series.items()):
            names = [service, tag, resource]
            totals = stored.totals
            passed.add_metric(names, totals[PASSED])
            blocked.add_metric(names, totals[BLOCKED])
            errors.add_metric(names, totals[ERRORS])
            rt_sum.add_metric(names, totals[RT_SUM])
            rt_count.add_metric(names, totals[RT_COUNT])
        yield from (passed, blocked, errors, rt_sum, rt_count)
