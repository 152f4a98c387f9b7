"""Request statistics of one process (inbound per route template, outbound per service, governed resources).

The hot path is short: a request's start is one append to a deque (its
in-flight count, lock-free: deque appends and pops are atomic) and its end one
uncontended lock around a few additions in a dict; no prometheus_client object
is touched per request. `snapshot()` gives a JSON-able
copy: worker processes write theirs to files (see `files.py`) and the process
that owns the listening socket merges them into the Prometheus text its admin
endpoint serves (`server_text`), through a private `CollectorRegistry`.

`AgentMetrics` is both the runtime's `metrics` (what requests count into) and
the metrics capability (its hooks start a worker's writer, remember the
owner's shared directory, and start a forked child from zero). This package
imports only the runtime, the capability base and prometheus_client.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from tidegate.agent.capability import Capability, Listening, Serving
from tidegate.agent.metrics.files import SnapshotWriter, read_all

#: Latency bucket upper bounds in seconds (Prometheus' defaults).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# One series: [count, sum of seconds, count per bucket (the last one is +Inf)].
Series = list


#: Methods counted by name; any other (a client can send any token) is counted as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
#: Inbound series (route, method, status) one process keeps; requests past it are counted under
#: FOLDED_ROUTE, and `tidegate_metrics_folded` says how many, so no client can grow /metrics without bound.
MAX_INBOUND_SERIES = 1000
FOLDED_ROUTE = "(folded)"


def _new_series() -> Series:
    return [0, 0.0] + [0] * (len(BUCKETS) + 1)


def _observe(series: Series, seconds: float) -> None:
    series[0] += 1
    series[1] += seconds
    series[2 + bisect_left(BUCKETS, seconds)] += 1


class AgentMetrics(Capability):
    """Counters, latency histograms and the in-flight count of this process."""

    def __init__(self) -> None:
        self._shared_dir: Path | None = None  # the owner's: where its workers write their snapshots
        self._writer: SnapshotWriter | None = None
        self._lock = threading.Lock()
        self._inbound: dict[tuple[str, str, int], Series] = {}
        self._outbound: dict[tuple[str, bool], Series] = {}
        # Governed resources (stability): [passed, blocked, errors, RT seconds summed].
        self._resources: dict[str, list[float]] = {}
        self.folded = 0  # inbound requests counted under FOLDED_ROUTE (the series cap was reached)
        # One item per inbound request started and not finished: appending and popping are
        # atomic, so the count needs no lock (it is read, never summed, by other threads).
        self._active: deque[None] = deque()
        self.generation = 0  # bumped on every change of the counters (a writer also compares `in_flight`)

    @property
    def in_flight(self) -> int:
        """Inbound requests this process has started and not finished."""
        return len(self._active)

    def request_started(self) -> None:
        self._active.append(None)

    def observe_inbound(self, route: str, method: str, status: int, seconds: float, *, finished: bool = False) -> None:
        """Count one inbound request by route template; `finished=True` also ends its in-flight count."""
        key = (route, method if method in METHODS else "OTHER", status)
        bucket = 2 + bisect_left(BUCKETS, seconds)
        with self._lock:
            series = self._inbound.get(key)
            if series is None:
                if len(self._inbound) >= MAX_INBOUND_SERIES:
                    self.folded += 1
                    key = (FOLDED_ROUTE, key[1], key[2])
                    series = self._inbound.get(key)
                if series is None:
                    series = self._inbound[key] = _new_series()
            series[0] += 1
            series[1] += seconds
            series[bucket] += 1
            self.generation += 1
        if finished and self._active:
            self._active.pop()

    def observe_outbound(self, service: str, ok: bool, seconds: float) -> None:
        """Count one outbound call to `service` (ok: answered without a transport error or 5xx)."""
        key = (service, ok)
        with self._lock:
            series = self._outbound.get(key)
            if series is None:
                series = self._outbound[key] = _new_series()
            _observe(series, seconds)
            self.generation += 1

    def observe_resource(self, resource: str, error: bool, seconds: float) -> None:
        """Count one admitted call to a governed resource when it ends."""
        with self._lock:
            row = self._resources.get(resource)
            if row is None:
                row = self._resources[resource] = [0, 0, 0, 0.0]
            row[0] += 1
            row[2] += error
            row[3] += seconds
            self.generation += 1

    def count_block(self, resource: str) -> None:
        """Count one call to a governed resource that a rule refused."""
        with self._lock:
            row = self._resources.get(resource)
            if row is None:
                row = self._resources[resource] = [0, 0, 0, 0.0]
            row[1] += 1
            self.generation += 1

    def reset_after_fork(self) -> None:
        """In a forked child: its own statistics from zero, and a lock no vanished thread holds."""
        self._lock = threading.Lock()
        self._inbound = {}
        self._outbound = {}
        self._resources = {}
        self.folded = 0
        self._active = deque()
        self.generation += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": os.getpid(),
                "in_flight": len(self._active),
                "folded": self.folded,
                "inbound": [[*key, *series] for key, series in self._inbound.items()],
                "outbound": [[*key, *series] for key, series in self._outbound.items()],
                "resources": [[resource, *row] for resource, row in self._resources.items()],
            }

    # -- the whole server, for the admin endpoint --------------------------------------------

    def server_text(self) -> bytes:
        """Prometheus text of this process plus, in the socket's owner, every worker's last snapshot."""
        return render(self._server_snapshots())

    def server_in_flight(self) -> int:
        return total_in_flight(self._server_snapshots())

    def _server_snapshots(self) -> list[dict[str, Any]]:
        own = [self.snapshot()]
        if self._shared_dir is None:
            return own
        return own + read_all(self._shared_dir, skip_pid=os.getpid())

    # -- capability hooks ---------------------------------------------------------------------

    def on_listening(self, owner: Listening) -> None:
        self._shared_dir = owner.shared_dir

    def on_serving(self, serving: Serving) -> None:
        """A worker keeps its snapshot current in the owner's shared directory."""
        if serving.shared_dir is not None and not serving.owner and self._writer is None:
            self._writer = SnapshotWriter(self, serving.shared_dir)
            self._writer.start()

    def after_fork_in_child(self) -> None:
        self.reset_after_fork()
        self._shared_dir = None  # a child is no owner
        self._writer = None  # its parent's thread does not exist here


def render(snapshots: Iterable[Mapping[str, Any]]) -> bytes:
    """Prometheus text for the sum of `snapshots` (one per process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(list(snapshots)))
    return generate_latest(registry)


def total_in_flight(snapshots: Iterable[Mapping[str, Any]]) -> int:
    return sum(int(s.get("in_flight", 0)) for s in snapshots)


class _SnapshotCollector(Collector):
    def __init__(self, snapshots: list[Mapping[str, Any]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Any]:
        inbound: dict[tuple[str, str, int], Series] = {}
        outbound: dict[tuple[str, bool], Series] = {}
        for snap in self._snapshots:
            for row in snap.get("inbound", ()):
                _add(inbound, (str(row[0]), str(row[1]), int(row[2])), row[3:])
            for row in snap.get("outbound", ()):
                _add(outbound, (str(row[0]), bool(row[1])), row[2:])

        requests = CounterMetricFamily(
            "tidegate_inbound_requests", "Inbound requests by route template", labels=["route", "method", "status"]
        )
        errors = CounterMetricFamily("tidegate_inbound_errors", "Inbound requests answered 5xx", labels=["route", "method"])
        latency = HistogramMetricFamily("tidegate_inbound_latency_seconds", "Inbound request latency", labels=["route", "method"])
        by_route: dict[tuple[str, str], Series] = {}
        error_counts: dict[tuple[str, str], int] = {}
        for (route, method, status), series in sorted(inbound.items()):
            requests.add_metric([route, method, str(status)], series[0])
            _add(by_route, (route, method), series)
            if status >= 500:
                error_counts[(route, method)] = error_counts.get((route, method), 0) + series[0]
        for labels, count in error_counts.items():
            errors.add_metric(list(labels), count)
        for labels, series in by_route.items():
            latency.add_metric(list(labels), _buckets(series), series[1])
        yield requests
        yield errors
        yield latency

        out_requests = CounterMetricFamily("tidegate_outbound_requests", "Outbound calls by service", labels=["service", "outcome"])
        out_errors = CounterMetricFamily("tidegate_outbound_errors", "Outbound calls that failed", labels=["service"])
        out_latency = HistogramMetricFamily("tidegate_outbound_latency_seconds", "Outbound call latency", labels=["service"])
        by_service: dict[tuple[str], Series] = {}
        for (service, ok), series in sorted(outbound.items()):
            out_requests.add_metric([service, "ok" if ok else "error"], series[0])
            if not ok:
                out_errors.add_metric([service], series[0])
            _add(by_service, (service,), series)
        for (service,), series in by_service.items():
            out_latency.add_metric([service], _buckets(series), series[1])
        yield out_requests
        yield out_errors
        yield out_latency

        yield from _resource_families(self._snapshots)

        folded = CounterMetricFamily(
            "tidegate_metrics_folded", f"Inbound requests counted under route {FOLDED_ROUTE!r}: the per-process series cap was reached"
        )
        folded.add_metric([], sum(int(s.get("folded", 0)) for s in self._snapshots))
        yield folded

        in_flight = GaugeMetricFamily("tidegate_inbound_in_flight", "Inbound requests being served now")
        in_flight.add_metric([], total_in_flight(self._snapshots))
        yield in_flight


def _resource_families(snapshots: Iterable[Mapping[str, Any]]) -> Iterator[Any]:
    """Per governed resource: passed, blocked and failed calls, and RT of admitted calls."""
    totals: dict[str, list[float]] = {}
    for snap in snapshots:
        for row in snap.get("resources", ()):
            target = totals.setdefault(str(row[0]), [0, 0, 0, 0.0])
            for index, value in enumerate(row[1:5]):
                target[index] += value
    passed = CounterMetricFamily("tidegate_resource_passed", "Calls a stability rule let through, by resource", labels=["resource"])
    blocked = CounterMetricFamily("tidegate_resource_blocked", "Calls a stability rule refused, by resource", labels=["resource"])
    failed = CounterMetricFamily("tidegate_resource_errors", "Admitted calls that failed, by resource", labels=["resource"])
    rt = SummaryMetricFamily("tidegate_resource_rt_seconds", "RT of admitted calls, by resource", labels=["resource"])
    for resource, (n_pass, n_block, n_error, rt_sum) in sorted(totals.items()):
        passed.add_metric([resource], n_pass)
        blocked.add_metric([resource], n_block)
        failed.add_metric([resource], n_error)
        rt.add_metric([resource], count_value=int(n_pass), sum_value=rt_sum)
    yield passed
    yield blocked
    yield failed
    yield rt


def _add(into: dict[Any, Series], key: Any, series: Iterable[Any]) -> None:
    target = into.get(key)
    if target is None:
        target = into[key] = _new_series()
    for index, value in enumerate(series):
        target[index] += value


def _buckets(series: Series) -> list[tuple[str, float]]:
    cumulative = 0
    out = []
    for bound, count in zip((*BUCKETS, float("inf")), series[2:]):
        cumulative += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return out
