"""tidegate: microservice governance for Python services, with no code changes."""

from tidegate.connect import connect
from tidegate.errors import (
    BlockedError,
    BreakerOpenError,
    ControlPlaneError,
    FlowBlockedError,
    HotspotBlockedError,
    NoInstanceError,
    RuleError,
    SystemBlockedError,
    TidegateError,
)
from tidegate.guard import Guard, guard

__version__ = "0.1.0"

__all__ = [
    "BlockedError",
    "BreakerOpenError",
    "ControlPlaneError",
    "FlowBlockedError",
    "HotspotBlockedError",
    "NoInstanceError",
    "RuleError",
    "SystemBlockedError",
    "TidegateError",
    "connect",
    "Guard",
    "guard",
]
