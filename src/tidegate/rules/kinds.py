"""Imports every module that registers a rule kind, so `validate` knows them all (imported by the package `__init__`)."""

from tidegate.rules import (
    adaptive,  # noqa: F401
    faulttolerance,  # noqa: F401
    gateway,  # noqa: F401
    hotspot,  # noqa: F401
    lanes,  # noqa: F401
    rollout,  # noqa: F401
    settings,  # noqa: F401
)
