"""The demo installs the redis-server its lanes scene needs (issue 10, item 16), with a fake apt-get."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from tidegate.demo.brokers import redis_server

REAL = shutil.which("redis-server") or "/usr/bin/redis-server"


def fake_apt(bin_dir: Path, install_exit: int = 0) -> Path:
    """An apt-get that records its calls and, on `install redis-server`, puts a redis-server on PATH."""
    bin_dir.mkdir(exist_ok=True)
    calls = bin_dir / "apt-calls"
    script = bin_dir / "apt-get"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$DEBIAN_FRONTEND $*" >> {calls}\n'
        f'case "$*" in *"install"*) [ {install_exit} = 0 ] || {{ echo "E: Unable to locate package redis-server" >&2; exit {install_exit}; }}\n'
        f"  /bin/ln -s {REAL} {bin_dir}/redis-server;; esac\n"
    )
    script.chmod(0o755)
    return calls


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def test_a_missing_redis_server_is_installed_quietly_after_an_update(tmp_path: Path) -> None:
    calls = fake_apt(tmp_path / "bin")
    console, out = _console()
    found = redis_server(console, path=str(tmp_path / "bin"), is_root=lambda: True)
    assert found == str(tmp_path / "bin" / "redis-server")
    assert calls.read_text().splitlines() == [
        "noninteractive update -qq",
        "noninteractive install -y -qq --no-install-recommends redis-server",
    ]
    assert "installing redis-server" in out.getvalue()


def test_one_on_path_is_used_as_it_is(tmp_path: Path) -> None:
    calls = fake_apt(tmp_path / "bin")
    os.symlink(REAL, tmp_path / "bin" / "redis-server")
    assert redis_server(_console()[0], path=str(tmp_path / "bin"), is_root=lambda: True) == str(tmp_path / "bin" / "redis-server")
    assert not calls.exists()


@pytest.mark.parametrize(
    "case, needle",
    [
        ("no apt-get", "apt-get is not available"),
        ("not root", "sudo apt-get install -y redis-server"),
        ("install fails", "Unable to locate package"),
        ("--no-install", "--no-install"),
    ],
)
def test_when_it_cannot_be_installed_the_demo_says_what_to_do_and_goes_on(tmp_path: Path, case: str, needle: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if case != "no apt-get":
        fake_apt(bin_dir, install_exit=100 if case == "install fails" else 0)
    console, out = _console()
    found = redis_server(console, install=case != "--no-install", path=str(bin_dir), is_root=lambda: case != "not root")
    assert found is None
    said = out.getvalue()
    assert needle in said and "orders stream" in said and "skipped" in said
