"""Inbound trust: whose word about itself a request carries is believed (issue 11, item 4).

A caller says who it is (`x-tidegate-consumer`: the origin per-origin limits
count, and the admin address a drain notice goes to) and which lane it is in
(the lane member of `baggage`). Only a *governed peer* is believed: a caller
whose peer address is the host of an instance in this process's directory, or
a loopback peer when the directory holds instances advertised on loopback
(every service on one host). `TIDEGATE_EDGE` changes that: `auto` (the default,
the rule above), `on` (an entry service, e.g. behind a local proxy: no caller is
believed), `off` (every caller is, as before issue 11).

From a caller that is not believed the origin and admin address are dropped,
and so is the lane member (the other baggage members pass on untouched), unless
a TrafficLane rule in force lets clients set the lane. Pure: the directory is
read, nothing else.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum

from tidegate.core.baggage import set_lane
from tidegate.core.context import RequestContext, lane_key
from tidegate.core.directory import ServiceDirectory

EDGE_ENV = "TIDEGATE_EDGE"


class EdgeMode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


def parse_edge(text: str) -> EdgeMode:
    """The mode `TIDEGATE_EDGE` names ("" is auto); ValueError naming the variable otherwise."""
    value = text.strip().lower() or "auto"
    try:
        return EdgeMode(value)
    except ValueError:
        raise ValueError(f"{EDGE_ENV}: {text!r} is not auto, on or off") from None


def is_loopback(peer: str) -> bool:
    if peer == "localhost":
        return True
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


class InboundTrust:
    """Decides, per request, whether its caller's identity and lane are believed."""

    def __init__(self, mode: EdgeMode, directory: ServiceDirectory, loopback_local: bool = False) -> None:
        self.mode = mode
        #: This instance advertises a loopback host: every governed process is on this host,
        #: so a loopback peer is one of them (the agent keeps it current).
        self.loopback_local = loopback_local
        self.directory = directory
        self._seen_generation = -1  # the directory's `generation` the host set was made at
        self._hosts: frozenset[str] = frozenset()
        self._loopback = False  # the directory holds instances advertised on loopback

    def trusts(self, peer: str) -> bool:
        """Whether the caller at `peer` (its IP address; "" when unknown) is a governed peer."""
        if self.mode is EdgeMode.OFF:
            return True
        if self.mode is EdgeMode.ON or not peer:
            return False
        self._refresh()
        if is_loopback(peer):
            return self.loopback_local or self._loopback
        return peer in self._hosts or peer.removeprefix("::ffff:") in self._hosts

    def apply(self, found: RequestContext, peer: str, clients_set_lane: bool = False) -> RequestContext:
        """`found` as far as the caller at `peer` is believed (the same object when wholly)."""
        if not (found.origin or found.origin_admin or found.lane) or self.trusts(peer):
            return found
        lane, baggage = found.lane, found.baggage
        if lane and not clients_set_lane:
            lane, baggage = "", set_lane(baggage, "", lane_key()).header
        return RequestContext(lane, baggage, "", "", found.problem, found.request)

    def _refresh(self) -> None:
        # Keyed on the directory's change counter, read before the instances: a change that lands
        # meanwhile bumps it again, so the next request rebuilds (a request never sees a set older
        # than the counter it was made at). The revision would miss changes that keep it.
        generation = self.directory.generation
        if generation == self._seen_generation:
            return
        hosts = {i.host for service in self.directory.services() for i in self.directory.instances(service)}
        self._hosts = frozenset(hosts)
        self._loopback = any(is_loopback(host) for host in hosts)
        self._seen_generation = generation
