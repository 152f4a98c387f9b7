"""What a starting instance does before it registers: the prewarm plan, as data.

Parsed once from the environment (local defaults) and overlaid by the
service's `ServiceSettings` pushed live; the agent (`tidegate.agent.online.prewarm`)
carries it out. Pure: parsing and merging only.

Warm-up requests are written `METHOD /path xN`, comma separated:
`"GET /catalog x20, GET /health x5"` (`xN` optional, default 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

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


@dataclass(frozen=True, slots=True)
class PrewarmPlan:
    """Which prewarm steps run, and how long registration waits after them."""

    sqlalchemy: bool = True
    redis: bool = True
    http: bool = True
    services: tuple[str, ...] = ()  # declared services to open connections to, besides those called before
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
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", name):
            raise PrewarmSpecError(setting, f"{name!r} is not a service name")
    return names


def plan_from_env(env: Mapping[str, str]) -> tuple[PrewarmPlan, list[PrewarmSpecError]]:
    """The local plan; each malformed variable is reported and leaves its default in force."""
    plan = PrewarmPlan()
    problems: list[PrewarmSpecError] = []
    everything = env.get("TIDEGATE_PREWARM", "").strip()
    if everything:
        try:
            on = parse_switch(everything, "TIDEGATE_PREWARM")
            plan = replace(plan, sqlalchemy=on, redis=on, http=on)
        except PrewarmSpecError as bad:
            problems.append(bad)
    for field, variable in (
        ("sqlalchemy", "TIDEGATE_PREWARM_SQLALCHEMY"),
        ("redis", "TIDEGATE_PREWARM_REDIS"),
        ("http", "TIDEGATE_PREWARM_HTTP"),
    ):
        text = env.get(variable, "").strip()
        if text:
            try:
                plan = replace(plan, **{field: parse_switch(text, variable)})
            except PrewarmSpecError as bad:
                problems.append(bad)
    parsers = (
        ("services", "TIDEGATE_PREWARM_SERVICES", parse_services),
        ("warmup_requests", "TIDEGATE_WARMUP_REQUESTS", parse_warmup_requests),
        ("register_delay_s", "TIDEGATE_REGISTER_DELAY", parse_seconds),
    )
    for field, variable, parser in parsers:
        text = env.get(variable, "").strip()
        if text:
            try:
                plan = replace(plan, **{field: parser(text, variable)})  # type: ignore[operator]
            except PrewarmSpecError as bad:
                problems.append(bad)
    return plan, problems


def overlay(plan: PrewarmPlan, live: Mapping[str, object]) -> PrewarmPlan:
    """`plan` with the prewarm fields a `ServiceSettings` document sets (already validated)."""
    changes: dict[str, object] = {}
    for field, key in (("sqlalchemy", "prewarmSqlAlchemy"), ("redis", "prewarmRedis"), ("http", "prewarmHttp")):
        if key in live:
            changes[field] = bool(live[key])
    if "prewarmServices" in live:
        changes["services"] = parse_services(str(live["prewarmServices"]), "spec.prewarmServices")
    if "warmupRequests" in live:
        changes["warmup_requests"] = parse_warmup_requests(str(live["warmupRequests"]), "spec.warmupRequests")
    if "registerDelaySeconds" in live:
        changes["register_delay_s"] = float(live["registerDelaySeconds"])  # type: ignore[arg-type]
    return replace(plan, **changes)  # type: ignore[arg-type]
