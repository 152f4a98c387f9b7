"""The data directory is its owner's only, and so are the database files (issue 11, finding 10)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from tests.control.running import ControlProcess
from tidegate.control.storage import SqliteStorage


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _database_files(data: Path) -> list[Path]:
    return sorted(p for p in data.iterdir() if p.name.startswith("control.sqlite3"))


def test_a_new_data_directory_is_0700_and_every_database_file_0600(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    storage = SqliteStorage(data)
    storage.add_service("orders")  # a write: the write-ahead log and shared memory files exist now
    try:
        assert _mode(data) == 0o700
        files = _database_files(data)
        assert {p.name for p in files} >= {"control.sqlite3", "control.sqlite3-wal", "control.sqlite3-shm"}
        assert all(_mode(p) == 0o600 for p in files), {p.name: oct(_mode(p)) for p in files}
    finally:
        storage.close()


def test_an_existing_directory_and_database_open_to_others_are_closed_and_said_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    first = SqliteStorage(data)
    first.add_service("orders")
    first.close()
    for path in _database_files(data):
        os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="tidegate.control"):
        again = SqliteStorage(data)
    try:
        assert _mode(data) == 0o700 and all(_mode(p) == 0o600 for p in _database_files(data))
        said = "\n".join(r.getMessage() for r in caplog.records)
        assert f"data directory {data} was open to other users (mode 0755); now 0700" in said
        assert "control.sqlite3 was open to other users (mode 0644); now 0600" in said
        assert again.services() == ["orders"]
    finally:
        again.close()


def test_tidegate_control_says_it_closed_an_open_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o777)
    plane = ControlProcess(data, tmp_path / "control.log")
    try:
        assert _mode(data) == 0o700
        assert "was open to other users (mode 0777); now 0700" in plane.proc.output()
    finally:
        plane.stop()
