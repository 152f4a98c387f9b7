"""Lane routing: which instances of a service may take a request of a given lane.

Instances carry a tag; a request carries a lane (shared/DESIGN.md, "Lanes").
For lane L, the instances tagged L when any are routable, else the base
(untagged) ones, unless L is strict: then nothing, and the router raises
NoInstanceError(service, lane). Base traffic (no lane) never reaches tagged
instances, except the share a canary rule sends to its tag.

The router groups a service's routable instances by tag once per directory
change (`group_by_tag`); a request then costs a few dict lookups
(`LaneRouting.select`), plus one CRC-32 of the sticky key for a service with
a canary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tidegate.core.coloring import BUCKETS, Draw, RequestKey, percent_buckets, sticky_bucket
from tidegate.core.instance import Instance

Instances = tuple[Instance, ...]
TagGroups = Mapping[str, Instances]  # tag ("" = base) -> routable instances with it
BASE = ""


@dataclass(frozen=True, slots=True)
class LaneRule:
    """A lane, whether it is strict (no fallback to base instances), and whether callers
    outside the estate may name it themselves (`from_clients`: a tester's
    `baggage: tidegate.lane=<lane>` through an edge; otherwise only governed peers'
    lanes and the coloring rules count, `tidegate.core.trust`)."""

    lane: str
    strict: bool = False
    from_clients: bool = False


@dataclass(frozen=True, slots=True)
class CanaryRule:
    """Send `percent` of the base traffic of `service` to its instances tagged `tag`.

    Sticky by the value of `sticky_key` (read by the edge from the request):
    the same value always gets the same answer. Without it, a random draw."""

    service: str
    tag: str
    percent: float
    sticky_key: RequestKey | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The instances a request may go to, the tag they were picked by ("" =
    base), and the lane the request keeps downstream ("" = base; a canary
    picks tagged instances for base traffic, which stays base)."""

    instances: Instances
    lane: str
    tag: str


def group_by_tag(instances: Iterable[Instance]) -> dict[str, Instances]:
    """Routable instances of one service, by tag (base instances under "")."""
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.tag, []).append(instance)
    return {tag: tuple(members) for tag, members in groups.items()}


def select_lane_instances(instances: Iterable[Instance], lane: str, *, strict: bool) -> tuple[Instances, str]:
    """(instances, effective lane) for a request of `lane` among routable `instances`.

    Tagged `lane` if any, else base with effective lane "" (or nothing, when strict)."""
    groups = group_by_tag(instances)
    selection = _select(groups, lane, strict)
    return selection.instances, selection.lane


def _select(groups: TagGroups, lane: str, strict: bool) -> Selection:
    if lane:
        tagged = groups.get(lane)
        if tagged:
            return Selection(tagged, lane, lane)
        if strict:
            return Selection((), lane, lane)
    return Selection(groups.get(BASE, ()), BASE, BASE)


@dataclass(frozen=True, slots=True)
class _CanarySplit:
    """A service's canaries as bucket ranges: [previous upper, upper) -> tag."""

    uppers: tuple[tuple[int, str], ...]
    sticky_key: RequestKey | None

    def tag_for(self, service: str, sticky: str | None, draw: Draw) -> str:
        bucket = sticky_bucket(sticky, service) if sticky is not None else int(draw() * BUCKETS)
        for upper, tag in self.uppers:
            if bucket < upper:
                return tag
        return BASE


class LaneRouting:
    """Lane and canary rules of every service, compiled for cheap lookups.

    Several canaries of one service share the bucket space in the order given
    (their shares add up; whatever exceeds 100% is cut) and the first one's
    sticky key. The bucket is salted with the service name, so each service's
    canary picks its own users. A canary whose tag has no routable instance
    sends its share to base instances."""

    __slots__ = ("_strict", "_splits", "lanes", "canaries", "client_lanes")

    def __init__(self, lanes: Iterable[LaneRule] = (), canaries: Iterable[CanaryRule] = ()) -> None:
        self.lanes = tuple(lanes)
        self.canaries = tuple(canaries)
        self._strict = frozenset(rule.lane for rule in self.lanes if rule.strict)
        #: Lanes a caller that is not a governed peer may put itself in (a document says `fromClients`).
        self.client_lanes = frozenset(rule.lane for rule in self.lanes if rule.from_clients)
        by_service: dict[str, list[CanaryRule]] = {}
        for canary in self.canaries:
            by_service.setdefault(canary.service, []).append(canary)
        self._splits: dict[str, _CanarySplit] = {}
        for service, rules in by_service.items():
            uppers: list[tuple[int, str]] = []
            upper = 0
            for rule in rules:
                upper = min(BUCKETS, upper + percent_buckets(rule.percent))
                uppers.append((upper, rule.tag))
            self._splits[service] = _CanarySplit(tuple(uppers), rules[0].sticky_key)

    def is_strict(self, lane: str) -> bool:
        return lane in self._strict

    def sticky_key(self, service: str) -> RequestKey | None:
        """What the edge should read from the request for `service`'s canary (None: nothing)."""
        split = self._splits.get(service)
        return split.sticky_key if split is not None else None

    def has_canary(self, service: str) -> bool:
        return service in self._splits

    def select(self, service: str, groups: TagGroups, lane: str, draw: Draw, sticky: str | None = None) -> Selection:
        """The instances of `service` a request of `lane` may go to.

        `groups` is `group_by_tag(directory.routable(service))`; `sticky` is the
        value of `sticky_key(service)` in the request, if any; `draw` is called
        only for base traffic of a service with a canary and no sticky value.
        An empty result means: raise NoInstanceError(service, lane)."""
        if not lane:
            split = self._splits.get(service)
            if split is not None:
                tag = split.tag_for(service, sticky, draw)
                if tag:
                    tagged = groups.get(tag)
                    if tagged:
                        return Selection(tagged, BASE, tag)
            return Selection(groups.get(BASE, ()), BASE, BASE)
        return _select(groups, lane, lane in self._strict)
