"""Bad rule input never makes the control plane answer 5xx: each refusal is 4xx naming the problem."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess
from tidegate.rules import limits

AUTH = {"Authorization": f"Bearer {TOKEN}"}
YAML = {"Content-Type": "application/yaml"}
JSON = {"Content-Type": "application/json"}


def strategy(kind: str, spec: str, name: str = "s") -> str:
    return f"apiVersion: fault-tolerance.opensergo.io/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}"


IN_FORCE = strategy("ConcurrencyLimitStrategy", "  maxConcurrency: 8\n", name="kept")
BREAKER = "  strategy: ErrorRequestRatio\n  triggerRatio: 50%\n  recoveryTimeout: 5s\n  statDuration: {}\n"
LANE = "apiVersion: traffic.opensergo.io/v1alpha1\nkind: TrafficLane\nmetadata: {{name: l}}\nspec:\n  lane: {{name: gray}}\n  rules:\n    - http: {{headers: {{x: {{regex: '{}'}}}}}}\n"
DEEP_YAML = "a:\n" + "".join("  " * i + "- \n" for i in range(1, 300))
SETTINGS_JSON = (
    '{"apiVersion": "tidegate.io/v1", "kind": "ServiceSettings", "metadata": {"name": "a"}, "spec": {"service": "a", "service": "b"}}'
)
BIG_DOCUMENT = {
    "apiVersion": "tidegate.io/v1",
    "kind": "ServiceSettings",
    "metadata": {"name": "big", "annotations": {f"k{i}": "x" * 8000 for i in range(40)}},
    "spec": {"service": "big"},
}


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Iterator[ControlProcess]:
    tmp = tmp_path_factory.mktemp("rule-input")
    process = ControlProcess(tmp / "data", tmp / "control.log")
    try:
        with httpx.Client(base_url=process.url, headers=AUTH, timeout=30) as http:
            assert http.post("/v1/rules", content=IN_FORCE, headers=YAML).status_code == 200
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        ("[" * 100_000 + "]" * 100_000, JSON, 400, "deep"),
        ("{" * 50_000, JSON, 400, "JSON"),
        ("[" * 5000 + "]" * 5000, YAML, 400, "deep"),
        (DEEP_YAML, YAML, 400, "deep"),
        (strategy("RateLimitStrategy", f"  threshold: {10**400}\n"), YAML, 422, "spec.threshold"),
        (strategy("RateLimitStrategy", "  threshold: 1.0e+400\n"), YAML, 422, "finite"),
        (
            '{"apiVersion": "fault-tolerance.opensergo.io/v1alpha1", "kind": "RateLimitStrategy", "metadata": {"name": "s"}, "spec": {"threshold": 1e400}}',
            JSON,
            422,
            "finite",
        ),
        (strategy("CircuitBreakerStrategy", BREAKER.format("1e308")), YAML, 422, "spec.statDuration"),
        (strategy("CircuitBreakerStrategy", BREAKER.format("1.0e308")), YAML, 422, "spec.statDuration"),
        (strategy("ThrottlingStrategy", "  minIntervalOfRequests: 1.0e-320\n  queueTimeout: 1s\n"), YAML, 422, "minIntervalOfRequests"),
        (strategy("ThrottlingStrategy", "  minIntervalOfRequests: 99999999999999999999d\n"), YAML, 422, "minIntervalOfRequests"),
        (strategy("RateLimitStrategy", "  threshold: 10\n  threshold: 20\n"), YAML, 400, "twice"),
        (SETTINGS_JSON, JSON, 400, "twice"),
        (LANE.format("a{99999999999}"), YAML, 422, "regex"),
        (LANE.format("(a)\\1"), YAML, 422, "backreference"),
        ("a: &a [*a]\n", YAML, 400, "contains it"),
        (
            "apiVersion: v1\nkind: ServiceSettings\nmetadata: {name: d}\nspec: {service: d}\n2020-01-01: x\n",
            YAML,
            422,
            "keys must be strings",
        ),
        ("apiVersion: v1\nkind: ServiceSettings\nmetadata: {name: d}\nspec: {service: d}\n1: x\n", YAML, 422, "keys must be strings"),
        (json.dumps(BIG_DOCUMENT), JSON, 422, "bytes"),
        (json.dumps({**BIG_DOCUMENT, "metadata": {"name": "x" * 300}}), JSON, 422, "metadata.name"),
        (json.dumps({**BIG_DOCUMENT, "metadata": {"name": "s", "annotations": {"k": "x" * 9000}}}), JSON, 422, "characters"),
        ("[" + ",".join(["{}"] * (limits.MAX_DOCUMENTS_PER_REQUEST + 1)) + "]", JSON, 400, "documents"),
        ('{"a": ' + "1" * 5000 + "}", JSON, 400, "digits"),
    ],
)
def test_bad_rule_input_is_refused_with_4xx_naming_it(plane: ControlProcess, body: str, headers: dict, status: int, needle: str) -> None:
    with httpx.Client(base_url=plane.url, headers=AUTH, timeout=60) as http:
        response = http.post("/v1/rules", content=body.encode(), headers=headers)
        assert response.status_code == status, response.text[:500]
        answer = response.json()
        assert needle in answer["error"] or needle in (answer.get("field") or ""), answer
        assert [rule["name"] for rule in http.get("/v1/rules").json()] == ["kept"]
    assert plane.proc.alive()
    assert "Traceback" not in plane.proc.output()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_gets_413_without_a_traceback(plane: ControlProcess, chunked: bool) -> None:
    body = (IN_FORCE + "\n# " + "x" * (limits.MAX_BODY_BYTES + 1) + "\n").encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    with httpx.Client(base_url=plane.url, headers=AUTH, timeout=60) as http:
        response = http.post("/v1/rules", content=chunks() if chunked else body, headers=YAML)
        assert response.status_code == 413, response.text[:300]
        assert str(limits.MAX_BODY_BYTES) in response.json()["error"]
        assert http.get("/v1/health").status_code == 200
    assert plane.proc.alive()
    assert "Traceback" not in plane.proc.output()
