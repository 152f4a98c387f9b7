"""The process's inbound trust (`tidegate.core.trust`), made once from TIDEGATE_EDGE and the directory.

The inbound adapters call `believed(found, peer)` on every request that carries a
consumer header or a lane; a request that carries neither never comes here.
Imports the runtime and `tidegate.core`.
"""

from __future__ import annotations

import logging
import os

from tidegate.agent.runtime import AgentRuntime, get_runtime
from tidegate.core.context import RequestContext
from tidegate.core.trust import EDGE_ENV, EdgeMode, InboundTrust, is_loopback, parse_edge

log = logging.getLogger("tidegate")

_trust: InboundTrust | None = None
#: What `_advertises_loopback` last answered, and what it was made from: the lifecycle's list of
#: instances (swapped whole when they register, never changed in place) and TIDEGATE_HOST.
_loopback_seen: tuple[object, str, bool] = (None, "", False)


def edge_mode(environ: dict[str, str] | None = None) -> EdgeMode:
    """TIDEGATE_EDGE's mode; a value that names none is logged and auto is used (the safe default)."""
    try:
        return parse_edge((os.environ if environ is None else environ).get(EDGE_ENV, ""))
    except ValueError as error:
        log.error("tidegate: %s; using auto", error)
        return EdgeMode.AUTO


def trust() -> InboundTrust | None:
    """The process's trust decision (None outside an agent: nothing is filtered there)."""
    global _trust
    runtime = get_runtime()
    if runtime is None:
        return None
    if _trust is None or _trust.directory is not runtime.directory:
        _trust = InboundTrust(edge_mode(), runtime.directory)
    _trust.loopback_local = _advertises_loopback(runtime)
    return _trust


def _advertises_loopback(runtime: AgentRuntime) -> bool:
    """Whether this process's instances (or its TIDEGATE_HOST) are on loopback: then so is every
    governed process it talks to (phase 2's rule), whether or not its directory lists any yet.

    Asked on every request that carries a consumer name or a lane, so worked out only when the
    instances or the setting changed (two identity tests otherwise)."""
    global _loopback_seen
    lifecycle = runtime.lifecycle
    instances = lifecycle.instances if lifecycle is not None else None
    advertised = runtime.config.advertise_host
    seen_instances, seen_advertised, answer = _loopback_seen
    if instances is seen_instances and advertised == seen_advertised:
        return answer
    hosts = [instance.host for instance in instances or ()]
    if advertised:
        hosts.append(advertised)
    answer = any(is_loopback(host) for host in hosts)
    _loopback_seen = (instances, advertised, answer)
    return answer


def believed(found: RequestContext, peer: str, client_lanes: frozenset[str] = frozenset()) -> RequestContext:
    """`found` as far as the caller at `peer` is believed; its lane is kept from any caller when
    it is one of `client_lanes` (a TrafficLane in force lets clients name it)."""
    decision = trust()
    if decision is None:
        return found
    kept = decision.apply(found, peer, clients_set_lane=bool(found.lane) and found.lane in client_lanes)
    if kept is not found:
        log.debug("tidegate: caller %s is not a governed peer: its consumer name and lane are not used", peer or "(unknown)")
    return kept
