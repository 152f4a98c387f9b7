"""The entry/exit pipeline every governed call passes, and the rule sets in force.

`Governor.entry(resource, now, ...)` runs Sentinel's slot chain in its order:
statistics (bring the windows to `now`), adaptive protection (inbound calls
only), flow control, hot-spot parameters, circuit breakers; the first refusal
raises a `BlockedError` subclass (counted as a block), otherwise the call is
counted as passed and an `Entry` comes back, whose `wait_s` the caller sleeps
first when a throttling rule queued it. `Entry.exit(now, error)` records the
RT (from the end of the wait) and the outcome, and feeds the breakers.

Rule managers (`load_flow_rules`, `load_breaker_rules`, `load_adaptive_rules`,
`load_hotspot_rules`, or `load` for a whole `RuleSet`) validate every rule
first and swap only if all are valid; on error the old set stays in force. A
rule identical to one in force keeps its controller, so unrelated reloads do
not reset warm-up, queues or breaker states.

`now` is float seconds from a monotonic clock (`time.monotonic()` at the edge);
the Governor derives integer milliseconds from it once per call for the windows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from tidegate.core.adaptive import AdaptiveGuard, AdaptiveRule, SystemReadings
from tidegate.core.breaker import CLOSED, BreakerRule, CircuitBreaker, StateListener
from tidegate.core.flow import BLOCKED, NODE_CONTEXT, NODE_ORIGIN, NODE_RELATE, ORIGIN_DEFAULT, ORIGIN_OTHER, FlowController, FlowRule
from tidegate.core.hotspot import HotspotLimiter, HotspotRule
from tidegate.core.stat import StatNode, Window
from tidegate.errors import BreakerOpenError, FlowBlockedError, HotspotBlockedError, SystemBlockedError


class _Rule(Protocol):
    """What the rule managers need of every rule: it checks itself (raising RuleError)."""

    def validate(self) -> None: ...


class _ResourceRule(_Rule, Hashable, Protocol):
    """A rule whose controllers live in the slot of the resource it names."""

    @property
    def resource(self) -> str: ...


class _Controller(Protocol):
    """A rule's controller; an unchanged rule keeps its controller (and so its state) across reloads."""

    @property
    def rule(self) -> Hashable: ...


_RuleT = TypeVar("_RuleT", bound=_Rule)
_ResourceRuleT = TypeVar("_ResourceRuleT", bound=_ResourceRule)
_ControllerT = TypeVar("_ControllerT", bound=_Controller)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every stability rule in force, by kind, as typed core rules."""

    flow: tuple[FlowRule, ...] = ()
    breakers: tuple[BreakerRule, ...] = ()
    adaptive: tuple[AdaptiveRule, ...] = ()
    hotspot: tuple[HotspotRule, ...] = ()

    def validate(self) -> None:
        rules: tuple[_Rule, ...] = (*self.flow, *self.breakers, *self.adaptive, *self.hotspot)
        for rule in rules:
            rule.validate()


class ResourceSlot:
    """Per-resource state: statistics and the controllers of the rules naming it."""

    __slots__ = (
        "resource",
        "stat",
        "flow",
        "rule_windows",
        "hotspot",
        "breakers",
        "by_origin",
        "by_context",
        "track_origin",
        "track_context",
        "named_origins",
    )

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.stat = StatNode()
        self.flow: tuple[FlowController, ...] = ()
        self.rule_windows: tuple[Window, ...] = ()
        self.hotspot: tuple[HotspotLimiter, ...] = ()
        self.breakers: tuple[CircuitBreaker, ...] = ()
        self.by_origin: dict[str, StatNode] = {}
        self.by_context: dict[str, StatNode] = {}
        self.track_origin = False
        self.track_context = False
        self.named_origins: frozenset[str] = frozenset()


class Entry:
    """A call that was let through; `exit` it exactly once when it finishes."""

    __slots__ = ("_slot", "start", "wait_s", "_extra")

    def __init__(self, slot: ResourceSlot, start: float, wait_s: float, extra: tuple[StatNode, ...] | None) -> None:
        self._slot: ResourceSlot | None = slot
        #: When the call starts (after its wait): its RT is measured from here.
        self.start = start
        #: Seconds the caller must sleep before making the call (0.0: go now).
        self.wait_s = wait_s
        # Origin, context and inbound statistics this call also counts in, if any.
        self._extra = extra

    def exit(self, now: float, error: bool = False) -> None:
        """Record the call's RT and outcome; a second exit of the same entry is ignored."""
        slot = self._slot
        if slot is None:
            return
        self._slot = None
        rt_ms = (now - self.start) * 1000.0
        if rt_ms < 0.0:
            rt_ms = 0.0
        stat = slot.stat
        window = stat.second
        if now >= window.live_end_s:
            window.roll(int(now * 1000.0))
        window.success += 1
        window.rt_sum_ms += rt_ms
        if rt_ms < window.min_rt_ms:
            window.min_rt_ms = rt_ms
        if error:
            window.error += 1
        _leave(stat)
        if self._extra is not None:
            now_ms = int(now * 1000.0)
            for node in self._extra:
                node.second.add_complete(now_ms, rt_ms, error)
                _leave(node)
        for breaker in slot.breakers:
            breaker.on_complete(rt_ms, error, now)


def _leave(node: StatNode) -> None:
    try:
        node.active.pop()
    except IndexError:  # the count was reset (`concurrency = 0`) while calls were in progress
        pass


class Governor:
    """Per-resource slots, the rules in force, and the entry point of every governed call."""

    def __init__(self) -> None:
        self._slots: dict[str, ResourceSlot] = {}
        self._lock = threading.Lock()
        self._rules = RuleSet()
        self._adaptive: AdaptiveGuard | None = None
        self._listeners: list[StateListener] = []
        #: Statistics of every inbound call together (Sentinel's entry node), read by adaptive protection.
        self.inbound = StatNode()
        #: What the edge last measured about the process; see `observe`.
        self.readings = SystemReadings()

    # The hot path.

    def entry(
        self,
        resource: str,
        now: float,
        *,
        origin: str = "",
        context: str = "",
        args: Mapping[str, str] | None = None,
        inbound: bool = False,
    ) -> Entry:
        """Admit a call to `resource` at `now`, or raise the BlockedError of the rule that refuses it."""
        slot = self._slots.get(resource)
        if slot is None:
            slot = self._slot(resource)
        now_ms = int(now * 1000.0)
        stat = slot.stat
        window = stat.second
        if now_ms >= window.live_end:
            window.roll(now_ms)
        origin_node = context_node = inbound_node = None
        if origin and slot.track_origin:
            origin_node = slot.by_origin.get(origin) or self._sub_node(slot.by_origin, origin)
        if context and slot.track_context:
            context_node = slot.by_context.get(context) or self._sub_node(slot.by_context, context)
        if inbound:
            inbound_node = self.inbound
            guard = self._adaptive
            if guard is not None:
                why = guard.refusal(inbound_node, self.readings, now_ms)
                if why:
                    self._count_block(stat, now_ms, origin_node, context_node, inbound_node)
                    raise SystemBlockedError(resource, guard.label, why)

        wait = 0.0
        node: StatNode | None  # the statistics the rule reads (None: the rule does not apply to this call)
        for ctrl in slot.flow:
            limit = ctrl.plain_limit
            if limit is not None:
                # Direct, default-origin QPS reject on the resource's own second: checked inline (the common rule).
                if window.prior_passed + window.passed + 1 <= limit:
                    continue
                node = stat
                queued = BLOCKED
            else:
                node = stat if ctrl.node_kind == 0 else self._flow_node(ctrl, slot, origin, context, origin_node, context_node)
                if node is None:
                    continue
                queued = ctrl.check(node, now_ms, now)
            if queued:
                if queued < 0.0:
                    why, retry = ctrl.refusal(node, now_ms, now)
                    self._count_block(stat, now_ms, origin_node, context_node, inbound_node)
                    raise FlowBlockedError(resource, ctrl.rule.label, why, retry)
                if queued > wait:
                    wait = queued

        if args and slot.hotspot:
            for limiter in slot.hotspot:
                value = args.get(limiter.param)
                if value is not None and not limiter.try_pass(value, now_ms):
                    self._count_block(stat, now_ms, origin_node, context_node, inbound_node)
                    raise HotspotBlockedError(
                        resource,
                        limiter.rule.label,
                        f"value {value!r} of {limiter.param!r} over {limiter.exceptions.get(value, limiter.threshold)} per {limiter.rule.duration_s}s",
                        limiter.retry_after_s(value, now_ms),
                    )

        probes: list[CircuitBreaker] | None = None
        for breaker in slot.breakers:
            if breaker.state is CLOSED:
                continue
            if breaker.try_pass(now_ms, now):
                probes = [breaker] if probes is None else [*probes, breaker]
                continue
            if probes is not None:
                for probe in probes:
                    probe.revert_probe(now_ms, now)
            self._count_block(stat, now_ms, origin_node, context_node, inbound_node)
            raise BreakerOpenError(resource, breaker.rule.label, f"circuit breaker {breaker.state}", breaker.retry_after_s(now_ms))

        window.passed += 1
        stat.active.append(None)
        if slot.rule_windows:
            for rule_window in slot.rule_windows:
                rule_window.add_pass(now_ms)
        extra = None
        if origin_node is not None or context_node is not None or inbound_node is not None:
            extra = tuple(node for node in (origin_node, context_node, inbound_node) if node is not None)
            for node in extra:
                node.second.add_pass(now_ms)
                node.active.append(None)
        return Entry(slot, now + wait, wait, extra)

    def _flow_node(
        self,
        ctrl: FlowController,
        slot: ResourceSlot,
        origin: str,
        context: str,
        origin_node: StatNode | None,
        context_node: StatNode | None,
    ) -> StatNode | None:
        """The statistics a non-plain rule reads for this call, or None if the rule does not apply to it."""
        rule = ctrl.rule
        if rule.origin != ORIGIN_DEFAULT:
            if rule.origin == ORIGIN_OTHER:
                if not origin or origin in slot.named_origins:
                    return None
            elif origin != rule.origin:
                return None
        kind = ctrl.node_kind
        if kind == NODE_ORIGIN:
            return origin_node
        if kind == NODE_RELATE:
            return ctrl.ref_node
        if kind == NODE_CONTEXT:
            return context_node if context == rule.ref_resource else None
        return slot.stat

    @staticmethod
    def _count_block(stat: StatNode, now_ms: int, *others: StatNode | None) -> None:
        stat.second.blocked += 1
        for node in others:
            if node is not None:
                node.second.add_block(now_ms)

    def _sub_node(self, nodes: dict[str, StatNode], key: str) -> StatNode:
        with self._lock:
            return nodes.setdefault(key, StatNode())

    def _slot(self, resource: str) -> ResourceSlot:
        with self._lock:
            return self._slot_locked(resource)

    def _slot_locked(self, resource: str) -> ResourceSlot:
        slot = self._slots.get(resource)
        if slot is None:
            slot = self._slots[resource] = ResourceSlot(resource)
        return slot

    # The edge's reports.

    def observe(self, *, loop_lag_s: float | None = None, cpu_usage: float | None = None) -> None:
        """Record what the edge measured (event-loop lag in seconds, CPU usage 0..1) for adaptive protection."""
        if loop_lag_s is not None:
            self.readings.loop_lag_s = loop_lag_s
        if cpu_usage is not None:
            self.readings.cpu_usage = cpu_usage

    def add_breaker_listener(self, listener: StateListener) -> None:
        """`listener(rule, from_state, to_state, now, snapshot)` hears every breaker state change."""
        self._listeners.append(listener)

    # Reads.

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def stat_node(self, resource: str) -> StatNode | None:
        slot = self._slots.get(resource)
        return slot.stat if slot is not None else None

    def resources(self) -> list[str]:
        return list(self._slots)

    def breaker_states(self) -> dict[str, str]:
        """State of every breaker in force, by rule label."""
        return {b.rule.label: b.state for slot in list(self._slots.values()) for b in slot.breakers}

    # Rule managers: validate everything, then swap.

    def load(self, rules: RuleSet) -> None:
        """Put a whole RuleSet in force, or none of it (RuleError naming the first bad rule)."""
        rules.validate()
        with self._lock:
            self._swap_flow(rules.flow)
            self._swap_breakers(rules.breakers)
            self._swap_hotspot(rules.hotspot)
            self._swap_adaptive(rules.adaptive)

    def load_flow_rules(self, rules: Iterable[FlowRule]) -> None:
        self._load(tuple(rules), self._swap_flow)

    def load_breaker_rules(self, rules: Iterable[BreakerRule]) -> None:
        self._load(tuple(rules), self._swap_breakers)

    def load_hotspot_rules(self, rules: Iterable[HotspotRule]) -> None:
        self._load(tuple(rules), self._swap_hotspot)

    def load_adaptive_rules(self, rules: Iterable[AdaptiveRule]) -> None:
        self._load(tuple(rules), self._swap_adaptive)

    def _load(self, rules: tuple[_RuleT, ...], swap: Callable[[tuple[_RuleT, ...]], None]) -> None:
        for rule in rules:
            rule.validate()
        with self._lock:
            swap(rules)

    def _swap(
        self,
        rules: tuple[_ResourceRuleT, ...],
        in_force: Callable[[ResourceSlot], tuple[_ControllerT, ...]],
        build: Callable[[_ResourceRuleT], _ControllerT],
    ) -> dict[str, tuple[_ControllerT, ...]]:
        """The controllers of `rules` for every slot's resource (a slot made for each resource a rule names);
        a rule equal to one in force keeps that rule's controller, the others get `build(rule)`. Under the lock."""
        kept = {ctrl.rule: ctrl for slot in self._slots.values() for ctrl in in_force(slot)}
        grouped: dict[str, list[_ControllerT]] = {}
        for rule in rules:
            ctrl = kept.pop(rule, None)
            if ctrl is None:
                ctrl = build(rule)
            grouped.setdefault(rule.resource, []).append(ctrl)
        for resource in grouped:
            self._slot_locked(resource)
        return {resource: tuple(grouped.get(resource, ())) for resource in self._slots}

    def _swap_flow(self, rules: tuple[FlowRule, ...]) -> None:
        controllers = self._swap(rules, lambda slot: slot.flow, self._flow_controller)
        for resource, slot in self._slots.items():
            ctrls = controllers[resource]
            slot.named_origins = frozenset(c.rule.origin for c in ctrls if c.rule.origin not in (ORIGIN_DEFAULT, ORIGIN_OTHER))
            slot.track_origin = any(c.rule.origin != ORIGIN_DEFAULT for c in ctrls)
            slot.track_context = any(c.rule.strategy == "chain" for c in ctrls)
            slot.rule_windows = tuple(c.window for c in ctrls if c.window is not None)
            slot.flow = ctrls
        self._rules = replace(self._rules, flow=rules)

    def _flow_controller(self, rule: FlowRule) -> FlowController:
        ref = self._slot_locked(rule.ref_resource).stat if rule.strategy == "relate" else None
        return FlowController(rule, ref)

    def _swap_breakers(self, rules: tuple[BreakerRule, ...]) -> None:
        breakers = self._swap(rules, lambda slot: slot.breakers, lambda rule: CircuitBreaker(rule, self._listeners))
        for resource, slot in self._slots.items():
            slot.breakers = breakers[resource]
        self._rules = replace(self._rules, breakers=rules)

    def _swap_hotspot(self, rules: tuple[HotspotRule, ...]) -> None:
        limiters = self._swap(rules, lambda slot: slot.hotspot, HotspotLimiter)
        for resource, slot in self._slots.items():
            slot.hotspot = limiters[resource]
        self._rules = replace(self._rules, hotspot=rules)

    def _swap_adaptive(self, rules: tuple[AdaptiveRule, ...]) -> None:
        self._adaptive = AdaptiveGuard(rules) if rules else None
        self._rules = replace(self._rules, adaptive=rules)
