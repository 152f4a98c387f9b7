"""`watch_on_demand`: the first call by name in a process that serves nothing starts its watch, once."""

from __future__ import annotations

import threading

from tests.control.running import TOKEN, ControlProcess
from tidegate.agent.config import AgentConfig
from tidegate.agent.lifecycle import InstanceLifecycle
from tidegate.agent.runtime import AgentRuntime
from tidegate.client.control import ControlClient
from tidegate.core.instance import Instance


def test_concurrent_first_calls_all_wait_for_the_one_sync_then_it_costs_nothing(control: ControlProcess, client: ControlClient) -> None:
    client.register(Instance(id="", service="items", host="127.0.0.1", port=1))
    runtime = AgentRuntime(config=AgentConfig(service="reports", control=control.url, token=TOKEN))
    lifecycle = InstanceLifecycle(runtime)
    assert not lifecycle.watch_on_demand("10.0.0.7") and not lifecycle.watch_on_demand("localhost")
    assert lifecycle.watcher is None  # never a service name: no reason to watch
    start = threading.Barrier(4)
    answers: list[bool] = []

    def first_call() -> None:
        start.wait()
        answers.append(lifecycle.watch_on_demand("items"))

    callers = [threading.Thread(target=first_call) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=30)
    try:
        assert answers == [True] * 4  # each may look again: the directory is synced
        assert runtime.directory.knows("items") and len(runtime.directory.routable("items")) == 1
        watcher = lifecycle.watcher
        assert not lifecycle.watch_on_demand("elsewhere")  # once is enough
        assert lifecycle.watcher is watcher
    finally:
        assert lifecycle.watcher is not None
        lifecycle.watcher.stop()
    assert client.instances("reports") == []  # it serves nothing: nothing registered
