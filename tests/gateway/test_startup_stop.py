"""A SIGTERM that reaches a gateway worker while it still starts is a stop, honoured once it serves.

The race itself (the signal landing between fork and the loop's own handlers) cannot be timed from
outside, so the test stands where the handler leaves the process: the start-up flag already set.
It runs in a child Python, so pytest's own signal handlers are left alone."""

from __future__ import annotations

import subprocess
import sys

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
