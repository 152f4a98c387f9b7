"""The agent: loaded into a Python web service unmodified, it owns the instance's lifecycle.

- `command.py` (`tidegate run`) and `bootstrap/sitecustomize.py` load it into
  the program; `otel_bridge.py` does the same under `opentelemetry-instrument`.
- `boot.py` builds the process's `AgentRuntime` (`runtime.py`) and applies the
  instrumentors (`instrumentation/`: server hooks, inbound middleware, HTTP
  clients).
- `lifecycle.py`: registration, heartbeat and deregistration, done by the
  process that owns the listening socket; `admin.py` its loopback endpoint.
- `metrics.py` and `metrics_files.py`: per-process statistics, summed across
  workers for the one admin endpoint; `forking.py` keeps forks safe.
- `lanes.py`: the lane rules in force (coloring at the inbound middleware,
  lane routing in `routing.py`); the lane follows threads (`threads.py`), gRPC
  and message queues (`instrumentation/grpc.py`, `redis_streams.py`, `aio_pika.py`).
"""
