"""Fixtures every test directory may use: a real control plane process and a client of it, and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.control.running import TOKEN, ControlProcess
from tests.support.clock import FakeClock
from tidegate.client.control import ControlClient


@pytest.fixture
def control(tmp_path) -> Iterator[ControlProcess]:
    plane = ControlProcess(tmp_path / "data", tmp_path / "control.log")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def client(control: ControlProcess) -> Iterator[ControlClient]:
    with ControlClient(control.url, TOKEN) as c:
        yield c


@pytest.fixture
def clock() -> FakeClock:
    """A FakeClock at 1000.0 s; move it with `clock.advance(seconds)`."""
    return FakeClock()
