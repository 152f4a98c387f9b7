"""Lossless online: register only once started and prewarmed, ramp new instances up, then SERVING.

`LosslessOnline` is the capability, one per process, registered by `install`:
  - `prewarm` (`prewarm.py`): the startup gate the owner asks before it
    registers (`may_register`), and the prewarm run a serving process begins
    when its app's startup finished (`begin`, from the server hooks);
  - `warmup` (`warmup.py`): consumer-side weights that ramp a new instance up
    (the outbound router's `weighting`), and the reweigh timer;
  - `promotion` (`warmup.py`): an instance registers WARMING when its service
    has a warm-up window (`state_on_register`), and becomes SERVING after it;
  - `called` (`called.py`): the services this one calls, remembered for the
    next start's HTTP prewarm.

Imports the runtime, the capability base, `tidegate.core` and `tidegate.rules`;
no other capability, no instrumentation: each library's prewarm step is
registered by its instrumentor (`prewarm.add_step`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tidegate.agent.capability import Capability
from tidegate.agent.online.called import CalledServices, state_dir
from tidegate.agent.online.prewarm import Prewarm
from tidegate.agent.online.warmup import ConsumerWarmup, Promotion
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import InstanceState
from tidegate.core.prewarm import PrewarmPlan


class LosslessOnline(Capability):
    """This process's startup gate, prewarm, consumer warm-up and promotion."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.warmup = ConsumerWarmup(runtime)
        self.prewarm = Prewarm(runtime)
        self.promotion = Promotion(runtime, self.warmup)
        #: The services this one calls, kept across restarts (`remember_calls`); the outbound
        #: pipeline tells it each service it first routes to.
        self.called: CalledServices | None = None

    def remember_calls(self) -> CalledServices:
        """Remember the services this one calls from now on, for the next start's prewarm."""
        self.called = CalledServices(state_dir() / f"{self.runtime.config.service}.called.json")
        return self.called

    def http_targets(self, plan: PrewarmPlan) -> tuple[list[str], list[str]]:
        """(services, base URLs of their routable instances) an HTTP prewarm step opens connections to:
        those called in the previous life and those the plan declares."""
        called = self.called.names if self.called is not None else set()
        services = sorted(set(plan.services) | called)
        directory = self.runtime.directory
        return services, [f"http://{i.host}:{i.port}/" for name in services for i in directory.routable(name)]

    def begin(self, addresses: Sequence[tuple[str, int]], loop: asyncio.AbstractEventLoop | None = None) -> None:
        """The app's startup finished in this request-serving process: prewarm, then mark it done."""
        self.prewarm.begin(addresses, loop)

    def may_register(self) -> bool:
        """Whether startup and prewarm finished (or waiting for them timed out)."""
        return self.prewarm.may_register()

    def state_on_register(self) -> InstanceState:
        """WARMING when this service has a warm-up window, else SERVING."""
        return self.promotion.state_on_register()


def install(runtime: AgentRuntime) -> LosslessOnline:
    """Build the process's `LosslessOnline` and register it on `runtime`."""
    return runtime.add(LosslessOnline(runtime))


def begin(runtime: AgentRuntime | None, addresses: Sequence[tuple[str, int]], loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Server hook: the app's startup finished in this request-serving process."""
    online = runtime.capability(LosslessOnline) if runtime is not None else None
    if online is not None:
        online.begin(addresses, loop)
