"""Rollouts run in the control plane: the runner drives each service's step machine on a timer.

A closed terminal neither stops nor orphans a rollout: the runner lives here, and
saves each rollout (its document and machine state) in the store after every
change, so a restarted control plane resumes it at the step it was in (the open
window starts again: the metrics of the one before were in the old process's
memory). Each tick judges the windows that are due on the metrics agents pushed
(gray = the new tag's series, base = the untagged one), and carries out what the
machine asks for:

- SetWeight: the rollout's own `CanaryRule` (`rollout-<service>`) at that percent,
  applied through the rule store like any other (agents and gateways already honour it);
- Promote: that canary stays at 100%: every request for the service goes to the new tag;
- DrainOld: the service's other instances are marked DRAINING in the registry, so every
  consumer drops them at once, and that change asks each one's agent to go offline (an
  admin's state change: the record's `ask`, heard over its watch): the agent runs its
  lossless drain, and re-registers as DRAINING, not SERVING.

Every decision is posted as an event (`type: rollout`) with its evidence.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from tidegate.control.metrics_store import BUCKETS, ERRORS, HIST, PASSED, MetricsStore, quantile
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.core.instance import InstanceState
from tidegate.core.rollout.judge import Side, judge
from tidegate.core.rollout.machine import Action, Decision, DrainOld, Phase, Promote, Rollout, RolloutStateError, SetWeight
from tidegate.errors import RuleError
from tidegate.rules import validate
from tidegate.rules.rollout import KIND, RolloutDocument

log = logging.getLogger("tidegate.control")

#: How often the runner looks for windows that are due, in seconds.
TICK_S = 0.5
#: Latency a request in the histogram's +Inf bucket is counted at for the latency test (ms).
OVERFLOW_MS = 2 * BUCKETS[-1] * 1000.0
ACTIONS = ("pause", "resume", "promote", "abort")


class RolloutRunner:
    """Every service's rollout (the latest one, finished or not), by service."""

    def __init__(self, plane: ControlPlane, metrics: MetricsStore, clock: Callable[[], float] = time.time) -> None:
        self.plane = plane
        self.metrics = metrics
        self.clock = clock
        self.rollouts: dict[str, tuple[Rollout, Mapping[str, Any]]] = {}  # service -> (machine, its document)
        for service, record in plane.storage.rollouts().items():
            try:
                parsed: RolloutDocument = validate(record["document"])
                rollout = Rollout.from_dict(record["machine"])
            except (KeyError, TypeError, ValueError) as bad:  # RuleError is a ValueError
                log.warning("control plane: saved rollout of %r cannot be read, left alone: %s", service, bad)
                continue
            self.rollouts[service] = (rollout, record["document"])
            if rollout.active:
                rollout.reopen(self.clock())
                self._carry_out(rollout, parsed, rollout.restore())
                self._save(service)
                log.info("control plane: rollout of %r resumed at step %d (%g%%), %s", service, rollout.step, rollout.weight, rollout.phase)

    # -- operator requests
    def start(self, body: Any) -> dict[str, Any]:
        document = _as_document(body)
        parsed: RolloutDocument = validate(document)
        plan = parsed.plan
        current = self.rollouts.get(plan.service)
        if current is not None and current[0].active:
            raise RequestError(
                409,
                f"service {plan.service!r} already has a rollout {current[0].phase} (of tag {current[0].plan.tag!r}):"
                " abort or promote it first",
                field="spec.service",
                extra={"service": plan.service},
            )
        instances = self.plane.instances(plan.service)
        if not any(instance.tag == plan.tag for instance in instances):
            tags = sorted({instance.tag or "(base)" for instance in instances})
            raise RuleError(
                f"service {plan.service!r} has no live instance of tag {plan.tag!r}"
                + (f" (its instances' tags: {', '.join(tags)})" if tags else " (it has no live instance)")
                + ": start the new version first",
                document=f"{KIND}/{document['metadata']['name']}",
                field="spec.tag",
            )
        rollout = Rollout(plan)
        actions = rollout.start(self.clock())
        last = None
        self._carry_out(rollout, parsed, actions[:1], strict=True)  # a canary the store refuses (409) refuses the rollout
        self.rollouts[plan.service] = (rollout, document)
        self._save(plan.service)
        self._announce(rollout, last)
        return self.view(plan.service)

    def act(self, service: str, action: str, reason: str = "") -> dict[str, Any]:
        rollout, document = self._get(service)
        now = self.clock()
        last = _newest(rollout)
        try:
            if action == "pause":
                actions = rollout.pause(now, reason or "paused by an operator")
            elif action == "resume":
                actions = rollout.resume(now)
            elif action == "promote":
                actions = rollout.promote(now, reason or "promoted by an operator")
            elif action == "abort":
                actions = rollout.abort(now, reason or "aborted by an operator")
            else:
                raise RequestError(404, f"no rollout action {action!r} (known: {', '.join(ACTIONS)})", field="action")
        except RolloutStateError as refused:
            raise RequestError(409, f"rollout of {service!r}: {refused}", field="action") from None
        self._carry_out(rollout, validate(document), actions)
        self._save(service)
        self._announce(rollout, last)
        return self.view(service)

    def view(self, service: str) -> dict[str, Any]:
        rollout, document = self._get(service)
        return {
            "name": document["metadata"]["name"],
            "service": service,
            "tag": rollout.plan.tag,
            "weight": rollout.weight,
            "now": self.clock(),  # what the window's elapsed time is reckoned against
            **rollout.to_dict(),
        }

    def all(self) -> list[dict[str, Any]]:
        return [self.view(service) for service in sorted(self.rollouts)]

    # -- the timer
    def tick(self) -> None:
        """Judge every window that is due and carry out what follows."""
        now = self.clock()
        for service, (rollout, document) in list(self.rollouts.items()):
            window = rollout.due(now)
            if window is None:
                continue
            try:
                last = _newest(rollout)
                verdict = judge(rollout.plan.analysis, self._window(rollout, *window, now))
                actions = rollout.judged(verdict, now)
                self._carry_out(rollout, validate(document), actions)
                self._save(service)
                self._announce(rollout, last)
            except Exception:  # one rollout's trouble (the store unreachable, say) is no other's
                log.exception("control plane: the rollout of %r could not be judged; it is tried again next tick", service)

    # -- inside
    def _get(self, service: str) -> tuple[Rollout, Mapping[str, Any]]:
        found = self.rollouts.get(service)
        if found is None:
            raise RequestError(404, f"no rollout of service {service!r}", field="service")
        return found

    def _window(self, rollout: Rollout, start: float, end: float, now: float) -> dict[str, tuple[Side, Side]]:
        analysis = rollout.plan.analysis
        resources = {gate.resource for gate in analysis.gates}
        if analysis.latency_test is not None:
            resources.add(analysis.latency_test.resource)
        service = rollout.plan.service
        return {
            resource: (
                self._side(service, rollout.plan.tag, resource, start, end, now),
                self._side(service, "", resource, start, end, now),
            )
            for resource in resources
        }

    def _side(self, service: str, tag: str, resource: str, start: float, end: float, now: float) -> Side:
        counters = self.metrics.window(service, tag, resource, start, end, now)
        histogram = counters[HIST:]
        p99 = quantile(histogram, 0.99)
        bounds = [bound * 1000.0 for bound in BUCKETS] + [OVERFLOW_MS]
        return Side(
            requests=int(counters[PASSED]),
            errors=int(counters[ERRORS]),
            p99_ms=None if p99 is None else p99 * 1000.0,
            latency_ms={bound: int(count) for bound, count in zip(bounds, histogram) if count},
        )

    def _carry_out(self, rollout: Rollout, parsed: RolloutDocument, actions: list[Action], strict: bool = False) -> None:
        plan = rollout.plan
        for action in actions:
            try:
                if isinstance(action, SetWeight):
                    self.plane.apply_rules([_canary(plan.service, plan.tag, action.percent, parsed)])
                elif isinstance(action, Promote):
                    pass  # the canary at 100% is the hand-over: it stays in force
                elif isinstance(action, DrainOld):
                    self._drain_old(plan.service, action.tag)
            except (RequestError, RuleError) as refused:
                if strict:
                    raise
                log.error("control plane: rollout of %r could not %s: %s", plan.service, action, refused)
                self.plane.post_event({"type": "rollout-error", "service": plan.service, "action": repr(action), "error": str(refused)})
        if rollout.phase is Phase.PROMOTED and (not plan.drain_old or any(isinstance(a, DrainOld) for a in actions)):
            rollout.drained(self.clock())

    def _drain_old(self, service: str, tag: str) -> None:
        for instance in self.plane.instances(service):
            if instance.tag != tag and instance.state in (InstanceState.WARMING, InstanceState.SERVING):
                self.plane.set_state(instance.id, {"state": str(InstanceState.DRAINING)})

    def _save(self, service: str) -> None:
        rollout, document = self.rollouts[service]
        self.plane.storage.put_rollout(service, {"document": dict(document), "machine": rollout.to_dict()})

    def _announce(self, rollout: Rollout, last: Decision | None) -> None:
        """Post each decision made after `last` (the newest before the change) as an event."""
        decisions = rollout.decisions
        start = next((i + 1 for i in range(len(decisions) - 1, -1, -1) if decisions[i] is last), 0)
        for decision in decisions[start:]:
            event = {
                "type": "rollout",
                "service": rollout.plan.service,
                "tag": rollout.plan.tag,
                "decision": decision.kind,
                "step": decision.step,
                "weight": decision.weight,
                "reasons": list(decision.reasons),
                "evidence": decision.evidence,
            }
            try:
                self.plane.post_event(event)
            except RequestError:  # past the event size (many resources): the decision without its evidence
                self.plane.post_event({**event, "reasons": [r[:500] for r in decision.reasons[:10]], "evidence": {}, "truncated": True})


def _newest(rollout: Rollout) -> Decision | None:
    return rollout.decisions[-1] if rollout.decisions else None


def canary_name(service: str) -> str:
    """The name of a rollout's CanaryRule: rule names are lower-case DNS-like."""
    return "rollout-" + re.sub(r"[^a-z0-9.-]", "-", service.lower()).strip("-.")


def _canary(service: str, tag: str, percent: float, parsed: RolloutDocument) -> dict[str, Any]:
    spec: dict[str, Any] = {"service": service, "tag": tag, "percent": percent}
    if parsed.sticky_key is not None:
        spec["stickyKey"] = {str(parsed.sticky_key.source): parsed.sticky_key.name}
    return {"apiVersion": "traffic.opensergo.io/v1alpha1", "kind": "CanaryRule", "metadata": {"name": canary_name(service)}, "spec": spec}


def _as_document(body: Any) -> dict[str, Any]:
    """A `Rollout` document as posted; its kind and apiVersion may be left out."""
    if not isinstance(body, Mapping):
        raise RequestError(422, "a rollout is a JSON object: a Rollout document (apiVersion, kind, metadata, spec)")
    document = dict(body)
    document.setdefault("apiVersion", "tidegate.io/v1alpha1")
    document.setdefault("kind", KIND)
    if document["kind"] != KIND:
        raise RequestError(422, f"must be {KIND!r}", field="kind")
    spec = document.get("spec")
    if "metadata" not in document and isinstance(spec, Mapping) and isinstance(spec.get("service"), str):
        document["metadata"] = {"name": canary_name(str(spec["service"])).removeprefix("rollout-") or "rollout"}
    return document
