"""`tidegate gateway`: the ingress that colors lanes, splits canaries, holds limits and never routes to a draining instance.

- `command.py`: the subcommand (flags -> `server.Config`);
- `server.py`: `Gateway` (one worker's engine) and the process model (workers sharing the port, the drain);
- `proxy.py`: the client side (one asyncio protocol per connection, httptools, one `Exchange` per request);
- `upstream.py`: connections to instances and their keep-alive pool;
- `routes.py`: GatewayRoute documents (`tidegate.rules.gateway`) compiled into the matcher;
- `edge.py`: the trust boundary, coloring and the route's canary;
- `protection.py`: flow control, hot-spot limits and breakers through the core Governor;
- `sources.py`: the watch stream, the routes file, static upstreams, the gateway's registration;
- `metrics.py`, `access_log.py`, `admin.py`: what the gateway tells about itself.

May import `tidegate.core`, `tidegate.rules`, `tidegate.client`, and of the agent
only what is pure enough to share (`agent.outbound`, `agent.lanes`,
`agent.offline.notices`) — never `agent.lifecycle` or `agent.instrumentation`
(the layer contract in pyproject.toml). uvloop and httptools are imported here only.
"""
