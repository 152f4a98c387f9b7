"""Hypothesis strategies for rule fuzzing: valid documents of every kind, mutated at random, and raw text."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

FT = "fault-tolerance.opensergo.io/v1alpha1"

VALID: list[dict[str, Any]] = [
    {"apiVersion": FT, "kind": "RateLimitStrategy", "metadata": {"name": "rl"}, "spec": {"threshold": 10, "statDurationSeconds": 1}},
    {
        "apiVersion": FT,
        "kind": "ThrottlingStrategy",
        "metadata": {"name": "th"},
        "spec": {"minIntervalOfRequests": "20ms", "queueTimeout": "1s"},
    },
    {"apiVersion": FT, "kind": "ConcurrencyLimitStrategy", "metadata": {"name": "cl"}, "spec": {"maxConcurrency": 8}},
    {
        "apiVersion": FT,
        "kind": "CircuitBreakerStrategy",
        "metadata": {"name": "cb"},
        "spec": {
            "strategy": "SlowRequestRatio",
            "triggerRatio": "50%",
            "statDuration": "10s",
            "recoveryTimeout": "5s",
            "slowConditions": {"maxAllowedRt": "200ms"},
        },
    },
    {
        "apiVersion": FT,
        "kind": "FaultToleranceRule",
        "metadata": {"name": "ft", "labels": {"app": "orders"}},
        "spec": {
            "targets": [{"targetResourceName": "GET /orders/{id}"}],
            "strategies": [{"name": "rl"}, {"kind": "ConcurrencyLimitStrategy", "spec": {"maxConcurrency": 2}}],
        },
    },
    {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AdaptiveProtection",
        "metadata": {"name": "ap"},
        "spec": {"maxLoopLag": "50ms", "maxCpuUsage": "80%"},
    },
    {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "HotspotRule",
        "metadata": {"name": "hs"},
        "spec": {
            "resource": "GET /items/{id}",
            "parameter": {"source": "path", "name": "id"},
            "threshold": 20,
            "exceptions": [{"value": "x", "threshold": 1}],
        },
    },
    {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": "tl"},
        "spec": {
            "lane": {"name": "gray"},
            "rules": [{"http": {"headers": {"x-user": {"regex": "1[0-9]{4}"}}}}, {"percent": 5, "stickyKey": {"header": "x-user"}}],
        },
    },
    {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": "os"},
        "spec": {
            "rules": {
                "traffic": {"http": {"uri": {"exact": "/index"}}},
                "workload": {"selector": {"tag": "gray"}},
                "lane": {"name": "Gray"},
            }
        },
    },
    {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "CanaryRule",
        "metadata": {"name": "cr"},
        "spec": {"service": "orders", "tag": "v2", "percent": 10},
    },
    {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "ServiceSettings",
        "metadata": {"name": "ss"},
        "spec": {"service": "orders", "warmupWindowSeconds": 30, "warmupRequests": "GET /x x2"},
    },
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**400, -1, 0, 1e-320, 1e308, 2**63, 0.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        ["1s", "500ms", "2min", "1d", "99999999999999999d", "(a+)+", "a{99999999999}", r"(a)\1", "GET:/foo", "/foo", "50%", "x" * 9000]
    ),
)
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A valid document, with up to three values replaced, keys dropped or added at random."""
    document: Any = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        replacement = draw(values)
        if not path:
            document = replacement
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(path[-1], None)
            parent[draw(st.text(max_size=10))] = replacement
        else:
            parent[path[-1]] = replacement
    return document


def dump(value: Any) -> str:
    return json.dumps(value, default=str)


raw_texts = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        ["[" * 3000, "{" * 3000, "a:\n" + "  - \n" * 50, "a: &a [*a]", "a: 1\na: 2", "--- !!python/object:os.system\n", "*x", "? [a]\n: b"]
    ),
    st.binary(max_size=100).map(lambda data: data.decode("latin-1")),
)
