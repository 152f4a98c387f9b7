"""Client side of the control plane, for agents, the gateway, the CLI and the demo.

`ControlClient` calls the HTTP API (register, heartbeat, rules, ...);
`Watcher` keeps a `ServiceDirectory` and a `RuleBook` in step with the watch
stream, with an on-disk snapshot for when the control plane is down.
Both load on first use (PEP 562): the CLI's commands that need neither (the
preStop's `tidegate offline`) do not pay for httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidegate.client.control import ControlClient
    from tidegate.client.watch import Watcher

__all__ = ["ControlClient", "Watcher"]

_LAZY = {"ControlClient": "tidegate.client.control", "Watcher": "tidegate.client.watch"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tidegate.client' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
