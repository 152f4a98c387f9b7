"""Client side of the control plane, for agents, the gateway, the CLI and the demo.

`ControlClient` calls the HTTP API (register, heartbeat, rules, ...);
`Watcher` keeps a `ServiceDirectory` and a `RuleBook` in step with the watch
stream, with an on-disk snapshot for when the control plane is down.
"""

from tidegate.client.control import ControlClient
from tidegate.client.watch import Watcher

__all__ = ["ControlClient", "Watcher"]
