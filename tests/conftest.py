"""Fixtures every test directory may use: a real control plane process and a client of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.control.running import TOKEN, ControlProcess
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
