"""The process's stability protection: its Governor, the rules in force, and what edges call.

`install(runtime)` (from the bootstrap) builds one `Stability` per process, a
capability registered on the runtime (`runtime.capability(Stability)` finds it). It:
  - listens to the rule book: on any change it compiles the stability
    documents in force, each on its own (`IsolatingCompiler`, for this
    service), and loads them into the Governor at once; a document that fails
    keeps its last valid version in force (the others still update), and the
    error is logged and posted to the control plane as a `rule-refused` event;
  - gives edges (route hooks, SQL, outbound calls, `tidegate.guard`) `enter`
    and `leave`, which count per-resource pass/block/error/RT in the metrics;
  - reports breaker state changes and blocks (aggregated per second) as
    control-plane events from a background thread (`StabilityEvents`), never
    on the request path;
  - feeds saturation readings to adaptive protection (`saturation.py`)
    while an adaptive rule is in force;
  - answers a refused inbound HTTP request (`responses.py`); `inbound.py`
    admits an inbound request, whatever the framework.

The entrance of the current request (its inbound resource) rides in a context
variable, so SQL and outbound calls made while serving it can be limited by
chain rules (`entrance:` in a rule) and counted under it.

Imports the runtime, the capability base, `tidegate.core` and `tidegate.rules`
(the control-plane client lazily, for events); no other capability.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tidegate.agent.capability import Capability
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import responses
from tidegate.agent.stability.events import StabilityEvents
from tidegate.agent.stability.saturation import CpuSampler, LoopLagSampler
from tidegate.core.breaker import BreakerRule
from tidegate.core.governor import Entry, Governor, RuleSet
from tidegate.errors import BlockedError, RuleError
from tidegate.rules.stability import KINDS, IsolatingCompiler

log = logging.getLogger("tidegate")

_entrance: contextvars.ContextVar[str] = contextvars.ContextVar("tidegate_entrance", default="")

#: `fallback(error)` answers an outbound call to a service that a rule refused.
OutboundFallback = Callable[[BlockedError], Any]


def entrance() -> str:
    """The inbound resource of the request being served ("" outside one)."""
    return _entrance.get()


class Stability(Capability):
    """One process's Governor with its rules, events, samplers and blocked-response shape."""

    def __init__(self, runtime: AgentRuntime, events: StabilityEvents | None = None) -> None:
        self.runtime = runtime
        self.governor = Governor()
        self.clock = runtime.clock
        self.service = runtime.config.service
        self.events = events or StabilityEvents.for_runtime(runtime)
        self.body_template: Mapping[str, Any] = responses.body_from_env()
        #: Outbound fallbacks by service name (`set_outbound_fallback`).
        self.fallbacks: dict[str, OutboundFallback] = {}
        self.loop_lag = LoopLagSampler(self.governor)
        self.cpu = CpuSampler(self.governor)
        self.governor.add_breaker_listener(self._on_breaker)
        # One reload at a time, so a slower compile of older documents never lands after a newer one.
        self._reload_lock = threading.Lock()
        self._compiler = IsolatingCompiler(self.service)
        #: What each refused document was last refused for, so a refusal is logged and posted once.
        self._refused: dict[tuple[str, str, str], str] = {}
        #: Per resource, the parameters (`path:id`, `query:user`, `header:x-user-id`) its hot-spot rules read.
        self.hotspot_params: dict[str, tuple[str, ...]] = {}
        #: Inbound resources some rule needs to see (None: every one — an adaptive rule
        #: weighs all inbound load, and a chain rule needs every request's entrance).
        #: The others skip the governor: a request no rule names costs nothing here.
        self.inbound_governed: frozenset[str] | None = frozenset()
        #: Every resource some rule names; outbound calls to a service no rule names
        #: skip the governor (their counts are in the outbound metrics already).
        self.named: frozenset[str] = frozenset()

    # -- rules ------------------------------------------------------------------------

    def on_rules_changed(self, kind: str) -> None:
        if kind in KINDS:
            self.reload()

    def reload(self) -> bool:
        """Compile the stability documents in force and load them; False when some document was refused
        (it keeps its last valid version, the others are loaded)."""
        with self._reload_lock:  # the whole swap, so an older reload never lands after a newer one
            documents = [rule.document for rule in self.runtime.rulebook.all() if rule.kind in KINDS]
            rules, problems = self._compiler.compile(documents)
            try:
                self.governor.load(rules)
            except Exception:  # the rules in force stay in force, whatever went wrong
                log.exception("tidegate: stability rules could not be loaded; the previous ones stay in force")
                return False
            self._report(problems)
            params: dict[str, set[str]] = {}
            for hot in rules.hotspot:
                params.setdefault(hot.resource, set()).add(hot.param)
            self.hotspot_params = {resource: tuple(sorted(keys)) for resource, keys in params.items()}
            self.named = _named(rules)
            self.inbound_governed = None if _needs_every_inbound(rules) else self.named
        counts = (len(rules.flow), len(rules.breakers), len(rules.hotspot), len(rules.adaptive))
        log.log(
            logging.INFO if any(counts) else logging.DEBUG,
            "tidegate: stability rules in force: %d flow, %d breaker, %d hot-spot, %d adaptive",
            *counts,
        )
        return not problems

    def _report(self, problems: list[tuple[tuple[str, str, str], RuleError]]) -> None:
        """Log and post each refused document once (again only when its error changes)."""
        refused = {key: str(error) for key, error in problems}
        for key, error in problems:
            if self._refused.get(key) == str(error):
                continue
            log.error("tidegate: stability rule %s refused; its last valid version (if any) stays in force: %s", "/".join(key), error)
            self.events.report(
                {"type": "rule-refused", "service": self.service, "error": str(error), "document": error.document, "field": error.field}
            )
        self._refused = refused

    def governs(self, resource: str) -> bool:
        """Whether an outbound call to `resource` must go through the governor."""
        return resource in self.named

    def governs_inbound(self, resource: str) -> bool:
        """Whether an inbound request to `resource` must go through the governor."""
        governed = self.inbound_governed
        return governed is None or resource in governed

    def governs_any_inbound(self) -> bool:
        """Whether some inbound request may need the governor: when none does (no rule in force names
        an inbound resource), route hooks hand a request straight to the framework."""
        governed = self.inbound_governed
        return governed is None or bool(governed)

    @property
    def adaptive_in_force(self) -> bool:
        return bool(self.governor.rules.adaptive)

    def measure_saturation(self) -> None:
        """Called by inbound hooks: while an adaptive rule is in force, keep the samplers running
        (CPU here; an ASGI hook also calls `loop_lag.ensure()` from its event loop)."""
        if self.governor.rules.adaptive:
            self.cpu.ensure_started()

    # -- what edges call -----------------------------------------------------------------

    def enter(self, resource: str, *, origin: str = "", args: Mapping[str, str] | None = None, inbound: bool = False) -> Entry:
        """Admit a call to `resource` now, or raise (and count) the BlockedError refusing it."""
        try:
            return self.governor.entry(resource, self.clock(), origin=origin, context=_entrance.get(), args=args, inbound=inbound)
        except BlockedError as error:
            self.blocked(error)
            raise

    def leave(self, entry: Entry, resource: str, error: bool = False) -> None:
        """End an admitted call: its RT and outcome go to the breakers and the metrics."""
        now = self.clock()
        entry.exit(now, error)
        metrics = self.runtime.metrics
        if metrics is not None:
            metrics.observe_resource(resource, error, max(0.0, now - entry.start))

    def blocked(self, error: BlockedError) -> None:
        metrics = self.runtime.metrics
        if metrics is not None:
            metrics.count_block(error.resource)
        self.events.count_block(error)

    @staticmethod
    def enter_request(resource: str) -> contextvars.Token[str]:
        """Mark `resource` as the entrance of the request being served (see `entrance`)."""
        return _entrance.set(resource)

    @staticmethod
    def leave_request(token: contextvars.Token[str]) -> None:
        _entrance.reset(token)

    # -- blocked responses ---------------------------------------------------------------

    def blocked_response(self, error: BlockedError) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) answered to a blocked inbound HTTP request."""
        return responses.blocked_response(error, self.body_template)

    def set_outbound_fallback(self, service: str, fallback: OutboundFallback | None) -> None:
        """Answer refused calls to `service` with `fallback(error)` instead of raising (None: raise again)."""
        if fallback is None:
            self.fallbacks.pop(service, None)
        else:
            self.fallbacks[service] = fallback

    # -- events --------------------------------------------------------------------------

    def _on_breaker(self, rule: BreakerRule, from_state: str, to_state: str, now: float, snapshot: float | None) -> None:
        self.events.report(
            {
                "type": "breaker",
                "service": self.service,
                "resource": rule.resource,
                "rule": rule.label,
                "from": str(from_state),
                "to": str(to_state),
                "snapshot": snapshot,
            }
        )

    def after_fork_in_child(self) -> None:
        """A forked child has none of its parent's threads; its samplers start again when needed."""
        self._reload_lock = threading.Lock()
        self.events.after_fork_in_child()
        self.cpu.after_fork_in_child()
        self.loop_lag = LoopLagSampler(self.governor)


def _named(rules: RuleSet) -> frozenset[str]:
    """The resources `rules` name, a relate rule's reference included."""
    named = {flow.resource for flow in rules.flow} | {flow.ref_resource for flow in rules.flow if flow.ref_resource}
    named |= {breaker.resource for breaker in rules.breakers} | {hot.resource for hot in rules.hotspot}
    return frozenset(named)


def _needs_every_inbound(rules: RuleSet) -> bool:
    """An adaptive rule weighs all inbound load, and a chain rule needs every request's entrance."""
    return bool(rules.adaptive) or any(flow.strategy == "chain" for flow in rules.flow)


def install(runtime: AgentRuntime) -> Stability:
    """Build the process's Stability, register it on `runtime`, follow the rule book, and load the rules already in it."""
    stability = runtime.add(Stability(runtime))
    runtime.rulebook.add_listener(stability.on_rules_changed)
    if any(rule.kind in KINDS for rule in runtime.rulebook.all()):
        stability.reload()
    return stability
