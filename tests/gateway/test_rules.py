"""GatewayRoute documents: validated like every kind (errors name the field), compiled into the route table."""

from __future__ import annotations

import pytest

from tidegate.errors import RuleError
from tidegate.gateway.routes import RouteTable
from tidegate.rules.document import validate


def doc(name: str = "r", **spec: object) -> dict:
    return {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "GatewayRoute",
        "metadata": {"name": name},
        "spec": {"service": "orders", **spec},
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"service": ""}, "spec.service"),
        ({"match": {"path": {"prefix": "api"}}}, "spec.match.path"),
        ({"match": {"path": {"regex": "(a)\\1"}}}, "spec.match.path.regex"),
        ({"match": {"methods": ["FETCH"]}}, "spec.match.methods"),
        ({"stripPrefix": "api/"}, "spec.stripPrefix"),
        ({"timeouts": {"connect": "soon"}}, "spec.timeouts.connect"),
        ({"retries": {"attempts": 9}}, "spec.retries.attempts"),
        ({"canary": {"tag": "v 2"}}, "spec.canary.tag"),
        ({"canary": {"tag": "v2", "weight": 101}}, "spec.canary.weight"),
        ({"trustLane": {"header": "x-t", "token": "short"}}, "spec.trustLane.token"),
        ({"colour": 1}, "spec.colour"),
    ],
)
def test_invalid_routes_name_the_field(spec, field):
    with pytest.raises(RuleError) as refused:
        validate(doc(**spec))
    assert refused.value.field == field


def test_regex_paths_run_on_the_linear_engine():
    route = validate(doc(match={"path": {"regex": "/(a+)+b"}}))
    table = RouteTable([route])
    assert table.match("any", b"GET", "/" + "a" * 5000, dict) is None  # no catastrophic backtracking
    assert table.match("any", b"GET", "/aab", dict) is not None


def test_order_hosts_methods_headers_and_rewrite():
    routes = [
        validate(doc("all")),
        validate(doc("api", match={"path": {"prefix": "/api/"}}, stripPrefix="/api", rewritePrefix="/v1/")),
        validate(doc("exact", match={"path": {"exact": "/api/health"}})),
        validate(doc("shop", hosts=["shop.example.com:443"], match={"path": {"prefix": "/"}, "methods": ["POST"]})),
        validate(doc("gray", priority=-1, match={"path": {"prefix": "/"}, "headers": {"x-env": "gray"}})),
    ]
    table = RouteTable(routes)
    headers: dict[str, str] = {}
    match = lambda host, method, path: table.match(host, method, path, lambda: headers).name  # noqa: E731
    assert match("x", b"GET", "/api/health") == "exact"
    assert match("x", b"GET", "/api/items") == "api"
    assert match("x", b"GET", "/other") == "all"
    assert match("shop.example.com", b"POST", "/other") == "shop"
    assert match("shop.example.com", b"GET", "/other") == "all"
    headers["x-env"] = "gray"
    assert match("x", b"GET", "/api/items") == "gray"
    api = next(r for r in table.routes if r.name == "api")
    assert api.upstream_path("/api/items/1") == "/v1/items/1"
