"""Imports every module that registers a rule kind, so `validate` knows them all."""

from tidegate.rules import settings  # noqa: F401
from tidegate.rules import lanes  # noqa: F401
from tidegate.rules import faulttolerance  # noqa: F401
from tidegate.rules import adaptive  # noqa: F401
from tidegate.rules import hotspot  # noqa: F401
