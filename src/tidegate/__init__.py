"""tidegate: microservice governance for Python services, with no code changes.

`connect`, `guard` and `Guard` load on first use (PEP 562): `python -m tidegate ...`
imports this package first, and the preStop's `python -m tidegate offline` needs none of
the agent and rule modules behind them."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from tidegate.connect import connect
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

#: name -> the module that defines it (`connect` and `guard` are also their modules' names).
_LAZY = {"connect": "tidegate.connect", "guard": "tidegate.guard", "Guard": "tidegate.guard"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tidegate' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule tidegate.connect (or .guard) binds it on this package: bind the
        # function of that name instead, as the eager `from tidegate.connect import connect` did.
        if name in ("connect", "guard") and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
