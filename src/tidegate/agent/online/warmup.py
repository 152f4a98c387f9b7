"""Warm-up in the agent: new instances ramp up on the consumer side, and move to SERVING after.

Consumer side: the outbound router weighs each service's instances through
`ConsumerWarmup.weighting`, which reads that service's `WarmupSettings` in
force at every reweigh (its `ServiceSettings` pushed live, else the local
defaults `TIDEGATE_WARMUP_WINDOW` and `TIDEGATE_WARMUP_CURVE`). While any
instance is inside its window, one daemon thread per process calls
`router.reweigh()` every `tick_s(window)`; it ends when the last window does
(`WarmupWeights.all_warm_at`) and starts again on the next directory change.

Provider side: an instance enters the registry WARMING when its own service
has a warm-up window, and the socket owner sets it SERVING once the window has
passed (a state the registry shows; consumers ramp by `registered_at` either way).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from tidegate.core.balancer import WeightOf, registered_weight
from tidegate.core.instance import Instance, InstanceState
from tidegate.core.prewarm import PrewarmSpecError, parse_seconds
from tidegate.core.warmup import DEFAULT_CURVE, DEFAULT_WINDOW_S, WarmupSettings, WarmupWeights
from tidegate.rules.settings import KIND as SETTINGS_KIND
from tidegate.rules.warmup import compile_warmup

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate")

Clock = Callable[[], float]


def tick_s(window_s: float) -> float:
    """How often weights move: 200 steps a window, between 50 ms and 1 s."""
    return min(1.0, max(0.05, window_s / 200))


def settings_from_env(env: Mapping[str, str]) -> WarmupSettings:
    """Local defaults; a malformed variable is logged and leaves its default in force."""
    window, curve = DEFAULT_WINDOW_S, DEFAULT_CURVE
    text = env.get("TIDEGATE_WARMUP_WINDOW", "").strip()
    if text:
        try:
            window = parse_seconds(text, "TIDEGATE_WARMUP_WINDOW")
        except PrewarmSpecError as bad:
            log.error("tidegate: %s (using %g s)", bad, DEFAULT_WINDOW_S)
    text = env.get("TIDEGATE_WARMUP_CURVE", "").strip()
    if text:
        try:
            curve = parse_seconds(text, "TIDEGATE_WARMUP_CURVE", maximum=10.0)
            if curve <= 0:
                raise PrewarmSpecError("TIDEGATE_WARMUP_CURVE", "must be above 0 (1 is linear, 2 quadratic)")
        except PrewarmSpecError as bad:
            log.error("tidegate: %s (using %g)", str(bad).replace("seconds", "").strip(), DEFAULT_CURVE)
            curve = DEFAULT_CURVE
    return WarmupSettings(window_s=window, curve=curve)


class ConsumerWarmup:
    """Live warm-up settings per service, the router's weighting, and the reweigh timer."""

    def __init__(self, runtime: AgentRuntime, environ: Mapping[str, str] | None = None, clock: Clock = time.time) -> None:
        self.runtime = runtime
        self.clock = clock
        self.default = settings_from_env(os.environ if environ is None else environ)
        self._by_service: dict[str, WarmupSettings] = {}
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._lock = threading.Lock()
        self._compile()
        runtime.rulebook.add_listener(self._rules_changed)
        runtime.directory.add_listener(lambda service: self.ensure_ticking())

    def settings_of(self, service: str) -> WarmupSettings:
        return self._by_service.get(service, self.default)

    def weighting(self, instances: Sequence[Instance]) -> WeightOf:
        """The router's `weighting`: weights under the settings in force at each reweigh."""
        if not instances:
            return registered_weight
        service = instances[0].service
        built: dict[WarmupSettings, WarmupWeights] = {}

        def weight_of(instance: Instance) -> float:
            settings = self.settings_of(service)
            weights = built.get(settings)
            if weights is None:
                built.clear()
                weights = built[settings] = WarmupWeights(instances, settings)
            return weights.weight(instance, self.clock())

        return weight_of

    def warm_until(self) -> float:
        """When the last routable instance of any service leaves its window (epoch seconds)."""
        directory = self.runtime.directory
        latest = 0.0
        for service in directory.services():
            window = self.settings_of(service).window_s
            for instance in directory.routable(service):
                if instance.registered_at > 0 and window > 0:
                    latest = max(latest, instance.registered_at + window)
        return latest

    def ensure_ticking(self) -> None:
        """Start the reweigh timer in this process if an instance is warming and none runs."""
        if self.warm_until() <= self.clock():
            return
        with self._lock:
            pid = os.getpid()
            if self._thread is not None and self._thread_pid == pid and self._thread.is_alive():
                return
            self._thread_pid = pid
            self._thread = threading.Thread(target=self._tick, name="tidegate-warmup", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while True:
            router = self.runtime.router
            if router is not None:
                router.reweigh()
            now = self.clock()
            until = self.warm_until()
            if until <= now:
                if router is not None:
                    router.reweigh()  # the last step: everyone at full weight
                return
            time.sleep(min(self._interval(), until - now))

    def _interval(self) -> float:
        windows = [s.window_s for s in (self.default, *self._by_service.values()) if s.window_s > 0]
        return tick_s(min(windows)) if windows else 1.0

    def _rules_changed(self, kind: str) -> None:
        if kind != SETTINGS_KIND:
            return
        self._compile()
        router = self.runtime.router
        if router is not None:
            router.reweigh()
        self.ensure_ticking()

    def _compile(self) -> None:
        compiled, problems = compile_warmup(rule.document for rule in self.runtime.rulebook.of_kind(SETTINGS_KIND))
        for problem in problems:
            log.error("tidegate: warm-up settings: %s", problem)
        self._by_service = compiled


class Promotion:
    """Provider side: enter the registry WARMING, and become SERVING after the window."""

    def __init__(self, runtime: AgentRuntime, consumer: ConsumerWarmup) -> None:
        self.runtime = runtime
        self.consumer = consumer

    def state_on_register(self) -> InstanceState:
        window = self.consumer.settings_of(self.runtime.config.service).window_s
        if window <= 0:
            return InstanceState.SERVING
        threading.Thread(target=self._promote_after, args=(window,), name="tidegate-promote", daemon=True).start()
        return InstanceState.WARMING

    def _promote_after(self, window_s: float) -> None:
        lifecycle = self.runtime.lifecycle
        if lifecycle is None:
            return
        time.sleep(window_s)
        if lifecycle.state != InstanceState.WARMING:
            return  # draining or stopped meanwhile: leave it to them
        try:
            from tidegate.client.control import ControlClient

            config = self.runtime.config
            with ControlClient(config.control, config.token or None, timeout=3.0) as client:
                for instance in list(lifecycle.instances):
                    client.set_state(instance.id, InstanceState.SERVING, lease=lifecycle.lease_secret(instance.id))
            if lifecycle.state == InstanceState.WARMING:
                lifecycle.state = InstanceState.SERVING
            log.info("tidegate: warm-up window of %g s over; instance is SERVING", window_s)
        except Exception as error:  # the registry keeps WARMING; consumers ramp by age anyway
            log.warning("tidegate: could not mark the instance SERVING after warm-up: %s", error)
