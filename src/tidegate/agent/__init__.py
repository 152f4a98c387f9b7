"""The agent: loaded into a Python web service unmodified, it owns the instance's lifecycle.

- `command.py` (`tidegate run`) and `bootstrap/sitecustomize.py` load it into
  the program; `otel_bridge.py` does the same under `opentelemetry-instrument`
  (both through `sitecustomize.boot_agent`).
- `boot.py` builds the process's `AgentRuntime` (`runtime.py`), registers the
  capabilities on it, gives it its lifecycle, builds the one outbound call
  pipeline from them and applies the instrumentors.
- `runtime.py`: the runtime and the protocols of what a request uses (the
  router's `Router` and `Route` among them, shared with the outbound pipeline);
  `capability.py`: the `Capability` base, its hooks and their arguments;
  `config.py`: the settings; `forking.py`: forks wait for agent threads.
- `lifecycle/`: registration, heartbeat, deregistration (by the process that
  owns the listening socket) and the admin endpoint; calls every capability's hooks.
- Capabilities, one package each: `offline/` (lossless offline: drain, notices,
  worker board, pools), `online/` (lossless online: prewarm, warm-up, called
  services), `stability/` (the Governor, events, saturation, blocked
  responses), `metrics/` (statistics, per-worker files), `lanes.py` (coloring
  and lane routing rules).
- `outbound/`: routing of calls to service names (`router.py`), the sans-I/O
  call pipeline every HTTP client drives (`call.py`, its loop `drive.py`) and
  the library-compatible errors (`errors.py`).
- `instrumentation/`: the `Instrumentor` base (`base.py`) and one instrumentor
  per patched library (servers, frameworks, HTTP clients, gRPC, SQL, message
  queues, threads); each registers its library's prewarm step with lossless online.

What may import what: `runtime`, `capability`, `config` and `forking` are
leaves (the runtime imports only `tidegate.core` and `config`); the capability
packages import those leaves, `tidegate.core` and `tidegate.rules`, never each
other; `lifecycle` and `outbound` import no capability package; `instrumentation`
may import all of them; only `boot` imports `instrumentation`, and it wires it all.
"""
