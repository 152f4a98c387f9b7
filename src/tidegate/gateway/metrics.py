"""The gateway's counters and their Prometheus text, written by hand: the hot path only adds to lists.

Per (route, service, lane, status class): requests, failures (no complete
answer), and a latency histogram; upstream connect failures per address; pool
sizes and open client connections as gauges, read when scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from tidegate.gateway.access_log import AccessLog, Answered

#: Histogram bucket bounds, seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class GatewayMetrics:
    def __init__(self) -> None:
        # key -> [count, failures, seconds sum, bucket counts...]
        self.series: dict[tuple[str, str, str, str], list[float]] = {}
        self.connect_failures: dict[str, int] = {}
        self.refused: dict[int, int] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.pool_sizes: Callable[[], dict[str, int]] = dict
        #: The access log (None: off), written here so an answered request is counted and logged at one place.
        self.access_log: AccessLog | None = None

    def observe(self, exchange: Answered, now: float, failed: bool = False) -> None:
        route = exchange.route
        status = exchange.status
        key = (
            route.name if route is not None else "",
            route.service if route is not None else "",
            exchange.lane,
            _CLASSES[status // 100] if 0 <= status < 600 else "5xx",
        )
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (3 + len(BUCKETS) + 1)
        seconds = now - exchange.started
        row[0] += 1
        if failed:
            row[1] += 1
        row[2] += seconds
        row[3 + bisect.bisect_left(BUCKETS, seconds)] += 1
        if self.access_log is not None:
            self.access_log.write(exchange, seconds)

    def count_connect_failure(self, address: tuple[str, int]) -> None:
        key = f"{address[0]}:{address[1]}"
        self.connect_failures[key] = self.connect_failures.get(key, 0) + 1

    def count_refused(self, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1

    def render(self) -> str:
        lines = [
            "# HELP tidegate_gateway_requests_total Requests answered, by route, service, lane and status class.",
            "# TYPE tidegate_gateway_requests_total counter",
        ]
        for (route, service, lane, klass), row in sorted(self.series.items()):
            lines.append(f"tidegate_gateway_requests_total{{{_labels(route, service, lane, klass)}}} {int(row[0])}")
        lines += [
            "# HELP tidegate_gateway_failures_total Requests without a complete answer.",
            "# TYPE tidegate_gateway_failures_total counter",
        ]
        for (route, service, lane, klass), row in sorted(self.series.items()):
            lines.append(f"tidegate_gateway_failures_total{{{_labels(route, service, lane, klass)}}} {int(row[1])}")
        lines += [
            "# HELP tidegate_gateway_request_seconds Time from request head to response end.",
            "# TYPE tidegate_gateway_request_seconds histogram",
        ]
        for (route, service, lane, klass), row in sorted(self.series.items()):
            labels = _labels(route, service, lane, klass)
            cumulative = 0.0
            for bound, count in zip(BUCKETS, row[3:]):
                cumulative += count
                lines.append(f'tidegate_gateway_request_seconds_bucket{{{labels},le="{bound}"}} {int(cumulative)}')
            lines.append(f'tidegate_gateway_request_seconds_bucket{{{labels},le="+Inf"}} {int(row[0])}')
            lines.append(f"tidegate_gateway_request_seconds_sum{{{labels}}} {row[2]:.6f}")
            lines.append(f"tidegate_gateway_request_seconds_count{{{labels}}} {int(row[0])}")
        lines += [
            "# HELP tidegate_gateway_upstream_connect_failures_total Failed connects per instance address.",
            "# TYPE tidegate_gateway_upstream_connect_failures_total counter",
        ]
        for address, count in sorted(self.connect_failures.items()):
            lines.append(f'tidegate_gateway_upstream_connect_failures_total{{address="{_escape(address)}"}} {count}')
        lines += [
            "# HELP tidegate_gateway_refused_total Requests refused for malformed or oversized input, by status.",
            "# TYPE tidegate_gateway_refused_total counter",
        ]
        for status, count in sorted(self.refused.items()):
            lines.append(f'tidegate_gateway_refused_total{{status="{status}"}} {count}')
        lines += [
            "# HELP tidegate_gateway_pool_idle_connections Idle keep-alive connections per instance address.",
            "# TYPE tidegate_gateway_pool_idle_connections gauge",
        ]
        for address, size in sorted(self.pool_sizes().items()):
            lines.append(f'tidegate_gateway_pool_idle_connections{{address="{_escape(address)}"}} {size}')
        for name, read in sorted(self.gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {read()}"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(route: str, service: str, lane: str, klass: str) -> str:
    return f'route="{_escape(route)}",service="{_escape(service)}",lane="{_escape(lane)}",status="{klass}"'
