"""Lossless offline: drain this instance before its server stops, and act at once when others drain.

- `drain.py`: `LosslessOffline`, the capability (the drain, the recent consumers,
  the admin writes `/offline`, `/online`, `/drain-notice`) and what server hooks call;
- `notices.py`: `DrainNotices`, the consumer side (notices heard, passive ejection);
- `board.py`: how a server's workers and its socket owner share drain news, through files;
- `pools.py`: dropping idle keep-alive connections to draining instances from HTTP clients' pools.

Imports the runtime, the capability base, `forking` and `tidegate.core` (the
control-plane client lazily); no other capability, no instrumentation.
"""

from tidegate.agent.offline.drain import LosslessOffline, drain_before_stop, drain_on_signal, install, note_consumer

__all__ = ["LosslessOffline", "drain_before_stop", "drain_on_signal", "install", "note_consumer"]
