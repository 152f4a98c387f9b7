"""What a starting instance does before it registers: the prewarm plan, as data.

Parsed once from the environment (local defaults) and overlaid by the
service's `ServiceSettings` pushed live; the agent (`tidegate.agent.online.prewarm`)
carries it out. Pure: parsing and merging only.

Warm-up requests are written `METHOD /path xN`, comma separated:
`"GET /catalog x20, GET /health x5"` (`xN` optional, default 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tidegate.core.names import is_service_name

_T = TypeVar("_T")

_REQUEST = re.compile(r"^(?P<method>[A-Za-z]+)\s+(?P<path>/\S*)(?:\s+[xX](?P<count>\d+))?$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_WARMUP_REQUESTS = 10_000
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})


class PrewarmSpecError(ValueError):
    """A prewarm setting is malformed; the message names the setting and the bad part."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {reason}")


@dataclass(frozen=True, slots=True)
class WarmupRequest:
    """`count` requests `method path` sent to the instance itself before it registers."""

    method: str
    path: str
    count: int = 1


#: What the HTTP prewarm step sends on each connection it opens (answered, so no server waits on it).
DEFAULT_HTTP_REQUEST = WarmupRequest("HEAD", "/")


@dataclass(frozen=True, slots=True)
class PrewarmPlan:
    """Which prewarm steps run, and how long registration waits after them.

    HTTP prewarm is off by default: a connection opened ahead and left idle pins
    a sync worker of the callee (gunicorn's sync workers wait for the request of
    each connection they accept), and which client sessions will carry the
    app's calls is not known before they are made. When switched on, each
    connection carries one real request (`http_request`) whose answer is read."""

    sqlalchemy: bool = True
    redis: bool = True
    http: bool = False
    services: tuple[str, ...] = ()  # declared services to open connections to, besides those called before
    http_request: WarmupRequest = DEFAULT_HTTP_REQUEST
    warmup_requests: tuple[WarmupRequest, ...] = ()
    register_delay_s: float = 0.0


def parse_warmup_requests(text: str, setting: str = "TIDEGATE_WARMUP_REQUESTS") -> tuple[WarmupRequest, ...]:
    """`"GET /catalog x20, GET /health"` -> requests; raises `PrewarmSpecError` naming the bad item."""
    requests: list[WarmupRequest] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _REQUEST.match(item)
        if match is None:
            raise PrewarmSpecError(setting, f"{item!r} is not 'METHOD /path xN' (e.g. 'GET /catalog x20')")
        method = match["method"].upper()
        if method not in _METHODS:
            raise PrewarmSpecError(setting, f"{item!r}: method {method} is not one of {', '.join(sorted(_METHODS))}")
        count = int(match["count"] or 1)
        if not 1 <= count <= MAX_WARMUP_REQUESTS:
            raise PrewarmSpecError(setting, f"{item!r}: count must be 1..{MAX_WARMUP_REQUESTS}")
        requests.append(WarmupRequest(method, match["path"], count))
    return tuple(requests)


def parse_http_request(text: str, setting: str = "TIDEGATE_PREWARM_HTTP_REQUEST") -> WarmupRequest:
    """`"HEAD /"` or `"GET /health"`: the one request the HTTP prewarm step sends on each connection."""
    requests = parse_warmup_requests(text, setting)
    if len(requests) != 1 or requests[0].count != 1:
        raise PrewarmSpecError(setting, f"{text!r} is not one 'METHOD /path' (e.g. 'GET /health')")
    return requests[0]


def parse_switch(text: str, setting: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise PrewarmSpecError(setting, f"{text!r} is not on/off (1/0, true/false)")


def parse_seconds(text: str, setting: str, maximum: float = 3600.0) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PrewarmSpecError(setting, f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= maximum:
        raise PrewarmSpecError(setting, f"{value:g} is outside 0..{maximum:g} seconds")
    return value


def parse_services(text: str, setting: str = "TIDEGATE_PREWARM_SERVICES") -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if not is_service_name(name):
            raise PrewarmSpecError(setting, f"{name!r} is not a service name")
    return names


def plan_from_env(env: Mapping[str, str]) -> tuple[PrewarmPlan, list[PrewarmSpecError]]:
    """The local plan; each malformed variable is reported and leaves its default in force."""
    problems: list[PrewarmSpecError] = []

    def setting(variable: str, parse: Callable[[str, str], _T], default: _T) -> _T:
        text = env.get(variable, "").strip()
        if text:
            try:
                return parse(text, variable)
            except PrewarmSpecError as bad:
                problems.append(bad)
        return default

    defaults = PrewarmPlan()
    everything = setting("TIDEGATE_PREWARM", parse_switch, None)

    def switch(variable: str, default: bool) -> bool:
        return setting(variable, parse_switch, default if everything is None else everything)

    plan = replace(
        defaults,
        sqlalchemy=switch("TIDEGATE_PREWARM_SQLALCHEMY", defaults.sqlalchemy),
        redis=switch("TIDEGATE_PREWARM_REDIS", defaults.redis),
        http=switch("TIDEGATE_PREWARM_HTTP", defaults.http),
        services=setting("TIDEGATE_PREWARM_SERVICES", parse_services, defaults.services),
        http_request=setting("TIDEGATE_PREWARM_HTTP_REQUEST", parse_http_request, defaults.http_request),
        warmup_requests=setting("TIDEGATE_WARMUP_REQUESTS", parse_warmup_requests, defaults.warmup_requests),
        register_delay_s=setting("TIDEGATE_REGISTER_DELAY", parse_seconds, defaults.register_delay_s),
    )
    return plan, problems


def overlay(plan: PrewarmPlan, live: Mapping[str, Any]) -> PrewarmPlan:
    """`plan` with the prewarm fields a `ServiceSettings` document's spec sets (already validated)."""

    def switch(key: str, current: bool) -> bool:
        return bool(live[key]) if key in live else current

    return replace(
        plan,
        sqlalchemy=switch("prewarmSqlAlchemy", plan.sqlalchemy),
        redis=switch("prewarmRedis", plan.redis),
        http=switch("prewarmHttp", plan.http),
        services=parse_services(str(live["prewarmServices"]), "spec.prewarmServices") if "prewarmServices" in live else plan.services,
        warmup_requests=(
            parse_warmup_requests(str(live["warmupRequests"]), "spec.warmupRequests") if "warmupRequests" in live else plan.warmup_requests
        ),
        register_delay_s=float(live["registerDelaySeconds"]) if "registerDelaySeconds" in live else plan.register_delay_s,
    )
