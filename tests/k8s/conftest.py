"""Fixtures for the Kubernetes tests: the agent tests' real control plane."""

from tests.agent.conftest import control_plane  # noqa: F401 (a fixture, used by name)
