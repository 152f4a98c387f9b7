"""`TrafficLane` and `CanaryRule` documents -> the core's coloring and lane routing.

`TrafficLane` follows OpenSergo's TrafficLane (traffic.opensergo.io/v1alpha1):
which requests join a lane (coloring), the lane's name, and whether it is
strict (a strict lane never falls back to base instances). The lane rides in
W3C `baggage` as `tidegate.lane`.

```yaml
apiVersion: traffic.opensergo.io/v1alpha1
kind: TrafficLane
metadata:
  name: gray-testers
spec:
  lane:
    name: gray
    strict: false            # default false: fall back to base instances
  selector:                  # optional: the entry services that color; default all
    app: web                 # or `apps: [web, gateway]`
  priority: 10               # optional: lower first; ties by namespace, then name
  rules:                     # first matching rule of the first document wins
    - http:                  # every condition of one rule must hold
        headers:
          x-user-id: {regex: "1[0-9]{4}"}
        cookies:
          beta: {present: true}
        query:
          env: gray          # a plain value means {exact: gray}
        uri: {prefix: /api/}
        method: GET
    - percent: 5             # 5% of users, the same users every time
      stickyKey: {header: x-user-id}   # or {cookie: uid} / {query: user}
```

OpenSergo's list form of headers (`headers: [{x-user-id: {exact: "1"}}]`) is
accepted too. Regexes must match the whole value (in linear time:
`tidegate.core.regex`). Header names are matched lower-cased; cookie and
query names as written.

OpenSergo's own TrafficLane shape is accepted as well: `spec.rules` a mapping
of `traffic.http` (the conditions, as `http` above), `workload.selector.tag`
(the instances' tag, which is the lane tidegate routes and carries; without
it, `lane.name`), `lane.name` and `traceIdBaggage` (tidegate carries the lane
as baggage member `tidegate.lane`, or `TIDEGATE_LANE_KEY`; another name is
reported as a warning):

```yaml
spec:
  selector: {app: spring-cloud-a}
  rules:
    traffic:
      http:
        headers: [{X-User-Id: {exact: "12345"}}]
        uri: {exact: /index}
    workload: {selector: {tag: gray}}
    lane: {name: Gray}
    traceIdBaggage: x-opensergo-traffic
```

`CanaryRule` is a tidegate kind (OpenSergo has no canary shape): a share of a
service's base traffic goes to its instances carrying a tag, sticky by a key.

```yaml
apiVersion: traffic.opensergo.io/v1alpha1
kind: CanaryRule
metadata:
  name: orders-v2
spec:
  service: orders
  tag: v2
  percent: 10
  stickyKey: {header: x-user-id}   # optional; without it each request draws
```
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.core import lanes as core_lanes
from tidegate.core.baggage import LANE_KEY, is_valid_lane
from tidegate.core.coloring import (
    Coloring,
    ColoringRule,
    Condition,
    MatchKind,
    Percentage,
    RequestKey,
    Source,
    StringMatch,
)
from tidegate.core.regex import RegexError
from tidegate.errors import RuleError
from tidegate.rules.document import label_app, register_kind, validate

LANE_KIND = "TrafficLane"
CANARY_KIND = "CanaryRule"

_LANE_NAME = "1-63 of A-Z a-z 0-9 . _ -"


@dataclass(frozen=True, slots=True)
class TrafficLane:
    """A parsed `TrafficLane` document."""

    name: str
    namespace: str
    lane: core_lanes.LaneRule
    rules: tuple[ColoringRule, ...]
    priority: int = 0
    warnings: tuple[str, ...] = ()  # what of the document tidegate does not act on as written


class _Spec:
    """Reads one document's spec, raising RuleError naming the document and field."""

    def __init__(self, document: Mapping[str, Any], kind: str, label: str = "") -> None:
        self.label = label or f"{kind}/{document['metadata']['name']}"
        self.spec = document.get("spec") or {}

    def fail(self, field: str, reason: str) -> RuleError:
        return RuleError(reason, document=self.label, field=field)

    def only(self, value: Mapping[str, Any], field: str, known: tuple[str, ...]) -> None:
        for key in value:
            if key not in known:
                raise self.fail(f"{field}.{key}" if field else str(key), f"unknown field (known: {', '.join(known)})")

    def mapping(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(field, "must be a mapping")
        return value

    def lane_name(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not is_valid_lane(value):
            raise self.fail(field, f"must be a lane name: {_LANE_NAME}")
        return value

    def percent(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise self.fail(field, "must be a number from 0 to 100")
        return float(value)

    def sticky_key(self, value: Any, field: str) -> RequestKey:
        value = self.mapping(value, field)
        sources = {"header": Source.HEADER, "cookie": Source.COOKIE, "query": Source.QUERY}
        self.only(value, field, tuple(sources))
        if len(value) != 1:
            raise self.fail(field, "must name exactly one of header, cookie, query")
        ((where, name),) = value.items()
        if not isinstance(name, str) or not name:
            raise self.fail(f"{field}.{where}", "must be a non-empty name")
        return RequestKey(sources[where], name.lower() if where == "header" else name)

    def string_match(self, value: Any, field: str) -> StringMatch:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return StringMatch(MatchKind.EXACT, str(value))
        value = self.mapping(value, field)
        kinds = tuple(str(kind) for kind in MatchKind)
        self.only(value, field, kinds)
        if len(value) != 1:
            raise self.fail(field, f"must have exactly one of {', '.join(kinds)}")
        ((how, text),) = value.items()
        where = f"{field}.{how}"
        if how == MatchKind.PRESENT:
            if text is not True:
                raise self.fail(where, "only `present: true` is supported")
            return StringMatch(MatchKind.PRESENT)
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise self.fail(where, "must be a string")
        if how == MatchKind.REGEX:
            try:
                return StringMatch.regex(str(text))
            except RegexError as bad:
                raise self.fail(where, f"regex {str(text)[:80]!r} {bad}") from None
        return StringMatch(MatchKind(how), str(text))

    def named_matches(self, value: Any, field: str, source: Source) -> list[Condition]:
        """`{name: match}` or OpenSergo's `[{name: match}, ...]`."""
        items: list[tuple[Any, Any]] = []
        if isinstance(value, list):
            for index, entry in enumerate(value):
                entry = self.mapping(entry, f"{field}[{index}]")
                kinds = [key for key in entry if key in tuple(str(kind) for kind in MatchKind)]
                names = [key for key in entry if key not in kinds]
                if kinds and len(names) == 1 and entry[names[0]] is None:
                    # `- X-User-Id:\n  exact: "1"` (as OpenSergo's sample is indented): the name, then its match
                    items.append((names[0], {kind: entry[kind] for kind in kinds}))
                else:
                    items.extend(entry.items())
        else:
            items.extend(self.mapping(value, field).items())
        conditions = []
        for name, match in items:
            if not isinstance(name, str) or not name:
                raise self.fail(field, "names must be non-empty strings")
            key = name.lower() if source is Source.HEADER else name
            conditions.append(Condition(RequestKey(source, key), self.string_match(match, f"{field}.{name}")))
        return conditions


def parse_traffic_lane(document: Mapping[str, Any]) -> TrafficLane:
    """Validate a `TrafficLane` document's spec (tidegate's shape or OpenSergo's) into its typed form."""
    reader = _Spec(document, LANE_KIND)
    spec = reader.spec
    reader.only(spec, "spec", ("lane", "selector", "priority", "rules"))
    priority = spec.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise reader.fail("spec.priority", "must be an integer")
    services = _selector(reader, spec.get("selector"))
    app = label_app(document, reader.label)
    if app and services and app not in services:
        raise reader.fail(
            "metadata.labels.app", f"names app {app!r} but spec.selector names {', '.join(sorted(services))}: give one, or the same in both"
        )
    if app and not services:
        services = frozenset((app,))
    raw_rules = spec.get("rules", [])
    warnings: list[tuple[str, str]] = []
    if isinstance(raw_rules, Mapping) and set(raw_rules) & {"traffic", "workload", "lane", "traceIdBaggage"}:
        # OpenSergo's shape: one rule, the lane inside it
        if "lane" in spec:
            raise reader.fail("spec.lane", "give the lane once: in spec.rules.lane (OpenSergo's shape) or spec.lane")
        lane, strict, from_clients, items = _opensergo_rules(reader, raw_rules, warnings)
    else:
        lane_spec = reader.mapping(spec.get("lane"), "spec.lane")
        reader.only(lane_spec, "spec.lane", ("name", "strict", "fromClients"))
        lane = reader.lane_name(lane_spec.get("name"), "spec.lane.name")
        strict = lane_spec.get("strict", False)
        from_clients = lane_spec.get("fromClients", False)
        if not isinstance(raw_rules, list):
            raise reader.fail("spec.rules", "must be a list (or OpenSergo's mapping of traffic, workload, lane, traceIdBaggage)")
        items = [(item, f"spec.rules[{i}]") for i, item in enumerate(raw_rules)]
    if not isinstance(strict, bool):
        raise reader.fail("spec.lane.strict", "must be true or false")
    if not isinstance(from_clients, bool):
        raise reader.fail("spec.lane.fromClients", "must be true or false")
    rules = tuple(_coloring_rule(reader, item, field, lane, services) for item, field in items)
    metadata = document["metadata"]
    return TrafficLane(
        name=str(metadata["name"]),
        namespace=str(metadata.get("namespace") or "default"),
        lane=core_lanes.LaneRule(lane, strict, from_clients),
        rules=rules,
        priority=priority,
        warnings=tuple(f"{reader.label} field {field!r}: {text}" for field, text in warnings),
    )


def _opensergo_rules(
    reader: _Spec, rules: Mapping[str, Any], warnings: list[tuple[str, str]]
) -> tuple[str, Any, Any, list[tuple[Any, str]]]:
    """(lane, strict, fromClients, [(coloring rule item, field)]) of OpenSergo's `spec.rules` mapping."""
    reader.only(rules, "spec.rules", ("traffic", "workload", "lane", "traceIdBaggage"))
    lane_spec = reader.mapping(rules.get("lane"), "spec.rules.lane")
    reader.only(lane_spec, "spec.rules.lane", ("name", "strict", "fromClients"))
    lane = reader.lane_name(lane_spec.get("name"), "spec.rules.lane.name")
    if "workload" in rules:
        workload = reader.mapping(rules["workload"], "spec.rules.workload")
        reader.only(workload, "spec.rules.workload", ("selector",))
        selector = reader.mapping(workload.get("selector"), "spec.rules.workload.selector")
        reader.only(selector, "spec.rules.workload.selector", ("tag",))
        lane = reader.lane_name(selector.get("tag"), "spec.rules.workload.selector.tag")  # the tag instances carry is the lane
    baggage = rules.get("traceIdBaggage")
    if baggage is not None:
        if not isinstance(baggage, str) or not baggage:
            raise reader.fail("spec.rules.traceIdBaggage", "must be a baggage member name")
        if baggage != LANE_KEY:
            warnings.append(
                (
                    "spec.rules.traceIdBaggage",
                    f"tidegate carries the lane as baggage member {LANE_KEY!r} (set TIDEGATE_LANE_KEY={baggage} on every service to use {baggage!r})",
                )
            )
    traffic = reader.mapping(rules.get("traffic"), "spec.rules.traffic")
    reader.only(traffic, "spec.rules.traffic", ("http",))
    if "http" not in traffic:
        raise reader.fail("spec.rules.traffic.http", "is required: the requests that join the lane")
    return lane, lane_spec.get("strict", False), lane_spec.get("fromClients", False), [({"http": traffic["http"]}, "spec.rules.traffic")]


def _selector(reader: _Spec, value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    value = reader.mapping(value, "spec.selector")
    reader.only(value, "spec.selector", ("app", "apps"))
    apps: list[Any] = []
    if "app" in value:
        apps.append(value["app"])
    if "apps" in value:
        if not isinstance(value["apps"], list):
            raise reader.fail("spec.selector.apps", "must be a list of service names")
        apps.extend(value["apps"])
    if not all(isinstance(app, str) and app for app in apps):
        raise reader.fail("spec.selector", "service names must be non-empty strings")
    return frozenset(apps)


def _coloring_rule(reader: _Spec, item: Any, field: str, lane: str, services: frozenset[str]) -> ColoringRule:
    item = reader.mapping(item, field)
    reader.only(item, field, ("http", "percent", "stickyKey"))
    if not item:
        raise reader.fail(field, "needs at least one of http, percent")
    conditions: list[Condition] = []
    if "http" in item:
        http = reader.mapping(item["http"], f"{field}.http")
        reader.only(http, f"{field}.http", ("headers", "cookies", "query", "uri", "method"))
        if not http:
            raise reader.fail(f"{field}.http", "needs at least one of headers, cookies, query, uri, method")
        for name, source in (("headers", Source.HEADER), ("cookies", Source.COOKIE), ("query", Source.QUERY)):
            if name in http:
                conditions.extend(reader.named_matches(http[name], f"{field}.http.{name}", source))
        if "uri" in http:
            conditions.append(Condition(RequestKey(Source.PATH), reader.string_match(http["uri"], f"{field}.http.uri")))
        if "method" in http:
            match = reader.string_match(http["method"], f"{field}.http.method")
            if match.kind is MatchKind.EXACT:
                match = StringMatch(MatchKind.EXACT, match.value.upper())
            conditions.append(Condition(RequestKey(Source.METHOD), match))
    percentage = None
    if "percent" in item:
        sticky = reader.sticky_key(item["stickyKey"], f"{field}.stickyKey") if "stickyKey" in item else None
        percentage = Percentage(reader.percent(item["percent"], f"{field}.percent"), sticky, salt=lane)
    elif "stickyKey" in item:
        raise reader.fail(f"{field}.stickyKey", "only means something with `percent`")
    return ColoringRule(lane, tuple(conditions), percentage, services)


def parse_sticky_key(value: Any, document: str, field: str) -> RequestKey:
    """A `stickyKey` mapping (`{header: x-user-id}`, `{cookie: uid}` or `{query: user}`), for other kinds that take one."""
    return _Spec({"metadata": {"name": ""}, "spec": {}}, "", label=document).sticky_key(value, field)


def parse_canary(document: Mapping[str, Any]) -> core_lanes.CanaryRule:
    """Validate a `CanaryRule` document's spec into the core's CanaryRule."""
    reader = _Spec(document, CANARY_KIND)
    spec = reader.spec
    reader.only(spec, "spec", ("service", "tag", "percent", "stickyKey"))
    service = spec.get("service")
    if not isinstance(service, str) or not service:
        raise reader.fail("spec.service", "is required: the service name")
    tag = reader.lane_name(spec.get("tag"), "spec.tag")
    if "percent" not in spec:
        raise reader.fail("spec.percent", "is required: the share of base traffic, 0 to 100")
    percent = reader.percent(spec["percent"], "spec.percent")
    sticky = reader.sticky_key(spec["stickyKey"], "spec.stickyKey") if "stickyKey" in spec else None
    return core_lanes.CanaryRule(service, tag, percent, sticky)


def compile_coloring(documents: Iterable[Mapping[str, Any]]) -> tuple[Coloring, list[RuleError]]:
    """The coloring of every valid `TrafficLane` document, in priority order.

    Invalid documents are left out and returned as errors to log; the rest apply."""
    lanes, problems = _parse_all(documents, LANE_KIND)
    ordered = sorted(lanes, key=lambda lane: (lane.priority, lane.namespace, lane.name))
    return Coloring(rule for lane in ordered for rule in lane.rules), problems


def compile_lane_routing(
    lane_documents: Iterable[Mapping[str, Any]], canary_documents: Iterable[Mapping[str, Any]]
) -> tuple[core_lanes.LaneRouting, list[RuleError]]:
    """Lane strictness (a lane is strict when any document says so) and canaries
    (ordered by namespace, then name) of every valid document; invalid ones are
    left out and returned as errors, as are canaries of one service whose
    shares pass 100% or whose sticky keys differ (the first one's applies)."""
    lanes, problems = _parse_all(lane_documents, LANE_KIND)
    canary_docs = sorted((doc for doc in canary_documents if isinstance(doc, Mapping)), key=_order)
    canaries, canary_problems = _parse_all(canary_docs, CANARY_KIND)
    problems.extend(canary_problems)
    problems.extend(_canary_conflicts(canaries))
    return core_lanes.LaneRouting((lane.lane for lane in lanes), canaries), problems


def _order(document: Mapping[str, Any]) -> tuple[str, str]:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        return ("default", "")
    return (str(metadata.get("namespace") or "default"), str(metadata.get("name") or ""))


def _canary_conflicts(canaries: list[core_lanes.CanaryRule]) -> list[RuleError]:
    problems = []
    by_service: dict[str, list[core_lanes.CanaryRule]] = {}
    for canary in canaries:
        by_service.setdefault(canary.service, []).append(canary)
    for service, rules in by_service.items():
        if sum(rule.percent for rule in rules) > 100:
            problems.append(
                RuleError(
                    f"canaries of service {service!r} add up to more than 100%; the last ones are cut",
                    document=CANARY_KIND,
                    field="spec.percent",
                )
            )
        if len({rule.sticky_key for rule in rules}) > 1:
            problems.append(
                RuleError(
                    f"canaries of service {service!r} name different sticky keys; the first applies",
                    document=CANARY_KIND,
                    field="spec.stickyKey",
                )
            )
    return problems


def _parse_all(documents: Iterable[Mapping[str, Any]], kind: str) -> tuple[list[Any], list[RuleError]]:
    parsed: list[Any] = []
    problems: list[RuleError] = []
    for document in documents:
        try:
            if not isinstance(document, Mapping) or document.get("kind") != kind:
                raise RuleError(f"expected a {kind} document", document=kind, field="kind")
            parsed.append(validate(document))
        except RuleError as bad:
            problems.append(bad)
    return parsed, problems


register_kind(LANE_KIND, parse_traffic_lane)
register_kind(CANARY_KIND, parse_canary)
