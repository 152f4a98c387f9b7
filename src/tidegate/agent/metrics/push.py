"""Pushes this server's statistics to the control plane every few seconds (`POST /v1/metrics`).

Push, not pull: the control plane keeps the estate's numbers without ever calling an
agent. Only the process that owns the listening socket pushes (it registered the
instance), for the whole server: its own counters plus its workers' last snapshots
(`files.read_all`). A push carries, per resource, what changed since the last push
the control plane accepted (inbound requests by route template, governed resources,
outbound calls by service): passed, blocked by kind, errors, RT count and sum, the
latency histogram. A push that fails is not lost: the next one carries its counts.

Failure-silent and bounded, because the service must never notice the control plane:
one daemon thread, one short-timeout HTTP client, at most `MAX_ROWS` rows a push, a
failure logged once at debug level until a push succeeds again; it never raises.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tidegate.agent.capability import Capability, Listening
from tidegate.agent.metrics.files import read_all
from tidegate.agent.runtime import AgentRuntime
from tidegate.client.control import tls_verify

log = logging.getLogger("tidegate")

#: Seconds between pushes (TIDEGATE_METRICS_PUSH_S; 0 switches pushing off).
PUSH_INTERVAL_S = 5.0
PUSH_TIMEOUT_S = 2.0
#: Rows one push carries at most (the control plane's limit is higher).
MAX_ROWS = 1000
LEASE_HEADER = "X-Tidegate-Lease"

Key = tuple[str, str]  # (row kind, resource)
#: Cumulative per key: [passed, errors, rt_count, rt_sum, *histogram], and blocked by kind.
Totals = dict[Key, tuple[list[float], dict[str, float]]]


def totals(snapshots: Iterable[Mapping[str, Any]]) -> Totals:
    """The server's cumulative counts per (row kind, resource) from its processes' snapshots."""
    out: Totals = {}

    def entry(key: Key, width: int) -> tuple[list[float], dict[str, float]]:
        found = out.get(key)
        if found is None:
            found = out[key] = ([0.0] * width, {})
        return found

    for snap in snapshots:
        for route, method, status, count, seconds, *buckets in snap.get("inbound", ()):
            values, blocked = entry(("in", f"{method} {route}"), 4 + len(buckets))
            if int(status) == 429:  # refused by a rule (flow, hot-spot, system): not passed
                blocked["throttled"] = blocked.get("throttled", 0.0) + count
                continue
            values[0] += count
            values[1] += count if int(status) >= 500 else 0
            values[2] += count
            values[3] += seconds
            for index, bucket in enumerate(buckets):
                values[4 + index] += bucket
        for service, ok, count, seconds, *buckets in snap.get("outbound", ()):
            values, _ = entry(("out", f"-> {service}"), 4 + len(buckets))
            values[0] += count
            values[1] += 0 if ok else count
            values[2] += count
            values[3] += seconds
            for index, bucket in enumerate(buckets):
                values[4 + index] += bucket
        for resource, passed, n_blocked, errors, seconds in snap.get("resources", ()):
            values, blocked = entry(("res", str(resource)), 4)
            values[0] += passed
            values[1] += errors
            values[2] += passed
            values[3] += seconds
            if n_blocked:
                blocked["rule"] = blocked.get("rule", 0.0) + n_blocked
    return out


def rows(current: Totals, sent: Totals) -> list[list[Any]]:
    """Rows of what changed from `sent` to `current` (a count that went back is sent whole)."""
    out: list[list[Any]] = []
    for key, (values, blocked) in current.items():
        before, before_blocked = sent.get(key, ((), {}))
        delta = [value - (before[i] if i < len(before) else 0.0) for i, value in enumerate(values)]
        if any(d < 0 for d in delta):
            delta = list(values)
        kinds = {kind: count - before_blocked.get(kind, 0.0) for kind, count in blocked.items()}
        kinds = {kind: count for kind, count in kinds.items() if count > 0}
        if not any(delta) and not kinds:
            continue
        histogram = [round(c) for c in delta[4:]] if len(delta) > 4 else []
        out.append([key[0], key[1], round(delta[0]), kinds, round(delta[1]), round(delta[2]), delta[3], histogram])
        if len(out) >= MAX_ROWS:
            break
    return out


class MetricsPush(Capability):
    """The pushing thread of a server's owner process."""

    def __init__(self, runtime: AgentRuntime, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._runtime = runtime
        self._snapshot = snapshot
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shared_dir: Path | None = None
        self._instance_id = ""
        self._sent: Totals = {}
        self._failing = False
        self._client: httpx.Client | None = None
        self.interval = _interval()

    def on_listening(self, owner: Listening) -> None:
        if self.interval <= 0 or not owner.instances or self._thread is not None:
            return
        self._shared_dir = owner.shared_dir
        self._instance_id = owner.instances[0].id
        config = self._runtime.config
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self._client = httpx.Client(base_url=config.control, headers=headers, timeout=PUSH_TIMEOUT_S, verify=tls_verify(config.ca or None))
        self._thread = threading.Thread(target=self._run, name="tidegate-metrics-push", daemon=True)
        self._thread.start()

    def on_stopping(self) -> None:
        """A last push of what the server counted, then the thread ends."""
        if self._thread is None:
            return
        self._stop.set()
        self.push_once()

    def after_fork_in_child(self) -> None:
        self._thread = None  # the parent's thread; a child is no owner and pushes nothing
        self._client = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push_once()

    def push_once(self) -> bool:
        """One push; True when the control plane took it. Never raises."""
        try:
            snapshots = [self._snapshot()]
            if self._shared_dir is not None:
                snapshots += read_all(self._shared_dir, skip_pid=os.getpid())
            current = totals(snapshots)
            changed = rows(current, self._sent)
            if not changed or self._client is None:
                return True
            lifecycle = self._runtime.lifecycle
            lease = lifecycle.lease_secret(self._instance_id) if lifecycle is not None else ""
            answer = self._client.post(
                "/v1/metrics",
                json={"instance": self._instance_id, "interval": self.interval, "rows": changed},
                headers={LEASE_HEADER: lease} if lease else None,
            )
            if answer.status_code != 200:
                raise RuntimeError(f"answered {answer.status_code}: {answer.text[:200]}")
            self._sent = current
            if self._failing:
                log.debug("tidegate: metrics push works again")
            self._failing = False
            return True
        except Exception as error:  # the control plane's trouble is never the service's
            if not self._failing:
                log.debug("tidegate: metrics push failed (%s); the next push carries these counts", error)
            self._failing = True
            return False


def _interval() -> float:
    try:
        return float(os.environ.get("TIDEGATE_METRICS_PUSH_S", PUSH_INTERVAL_S))
    except ValueError:
        return PUSH_INTERVAL_S
