"""What a gateway worker does as it starts: the advice on the accept-queue switch, and a SIGTERM that reaches a gateway worker while it still starts is a stop, honoured once it serves.

The race itself (the signal landing between fork and the loop's own handlers) cannot be timed from
outside, so the test stands where the handler leaves the process: the start-up flag already set.
It runs in a child Python, so pytest's own signal handlers are left alone."""

from __future__ import annotations

import subprocess
import sys

from tidegate.gateway import server

CHILD = """
import signal, sys
from tidegate.gateway import server
from tidegate.gateway.config import Config

signal.alarm(20)  # a worker that ignores the early stop serves forever: end it, with a failing status
original = server.signal.signal
def keep_flag(signum, handler):
    original(signum, handler)
    if handler is server._request_stop and signum == signal.SIGTERM:
        handler(signum, None)  # the SIGTERM arrives now, during start-up
server.signal.signal = keep_flag
sys.exit(server.serve(Config(port=0, admin_port=-1)))
"""


def test_a_stop_during_start_up_drains_nothing_and_exits_0() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "listening on" in result.stdout  # it did come up, then drained and ended


def test_a_kernel_that_resets_a_closing_listeners_queue_is_named_at_start(tmp_path, caplog) -> None:
    switch = tmp_path / "tcp_migrate_req"
    switch.write_text("0\n")
    with caplog.at_level("INFO", logger="tidegate.gateway"):
        assert server.note_accept_queue_migration(str(switch)) is False
    assert "net.ipv4.tcp_migrate_req=1" in caplog.text
    switch.write_text("1\n")
    caplog.clear()
    assert server.note_accept_queue_migration(str(switch)) is True
    assert caplog.text == ""
    assert server.note_accept_queue_migration(str(tmp_path / "absent")) is False  # not Linux: nothing to advise
