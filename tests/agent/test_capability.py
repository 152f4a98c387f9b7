"""Capabilities on the runtime: registered once, found by class, their hooks called in order and guarded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tidegate.agent.capability import AdminRoute, Capabilities, Capability, Listening
from tidegate.agent.config import AgentConfig
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance, InstanceState


class Recording(Capability):
    def __init__(self, name: str, calls: list[str], *, register: bool = True, state: InstanceState | None = None) -> None:
        self.name, self.calls, self.register, self.state = name, calls, register, state

    def on_listening(self, owner: Listening) -> None:
        self.calls.append(f"{self.name}:listening:{owner.advertised_host}")

    def may_register(self) -> bool:
        self.calls.append(f"{self.name}:may_register")
        return self.register

    def state_on_register(self) -> InstanceState | None:
        return self.state


class Other(Recording):
    pass


class Failing(Capability):
    def after_fork_in_child(self) -> None:
        raise RuntimeError("boom")

    def admin_routes(self) -> Mapping[str, AdminRoute]:
        raise RuntimeError("boom")


def _runtime() -> AgentRuntime:
    return AgentRuntime(config=AgentConfig(service="shop"))


def _write(body: Any, query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
    return 200, {}


def test_a_capability_is_found_by_its_class_and_its_base_classes() -> None:
    runtime, calls = _runtime(), []
    first = runtime.add(Recording("a", calls))
    other = runtime.add(Other("b", calls))
    assert runtime.capability(Recording) is first
    assert runtime.capability(Other) is other
    assert runtime.capability(Capability) is first  # the first registered wins for a shared base
    assert runtime.capability(Failing) is None
    assert runtime.capabilities(Capability) == (first, other)
    with pytest.raises(ValueError, match="Recording"):
        runtime.add(Recording("again", calls))


def test_hooks_run_in_registration_order_and_a_failing_one_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    runtime, calls = _runtime(), []
    runtime.add(Recording("a", calls, register=False))
    runtime.add(Failing())
    runtime.add(Other("b", calls, state=InstanceState.WARMING))
    hooks = Capabilities(runtime)
    hooks.on_listening(Listening((Instance("i", "shop", "10.0.0.5", 8000),), 4321, None))
    assert calls == ["a:listening:10.0.0.5", "b:listening:10.0.0.5"]
    hooks.after_fork_in_child()
    assert "Failing.after_fork_in_child failed" in caplog.text
    assert hooks.may_register() is False
    assert calls[-2:] == ["a:may_register", "b:may_register"]  # every gate is asked, so each one's wait starts
    assert hooks.state_on_register() == InstanceState.WARMING
    assert hooks.admin_routes() == {}


def test_admin_routes_are_merged_and_the_first_claim_of_a_path_wins(caplog: pytest.LogCaptureFixture) -> None:
    first, second = AdminRoute(_write), AdminRoute(_write, gated=False)

    class A(Capability):
        def admin_routes(self) -> Mapping[str, AdminRoute]:
            return {"/x": first}

    class B(Capability):
        def admin_routes(self) -> Mapping[str, AdminRoute]:
            return {"/x": second, "/y": second}

    runtime = _runtime()
    runtime.add(A())
    runtime.add(B())
    assert Capabilities(runtime).admin_routes() == {"/x": first, "/y": second}
    assert "/x is claimed twice" in caplog.text


def test_without_capabilities_the_hooks_say_yes_and_nothing() -> None:
    hooks = Capabilities(_runtime())
    assert hooks.may_register() is True
    assert hooks.state_on_register() is None
    assert Listening((), None, None).advertised_host == "127.0.0.1"
