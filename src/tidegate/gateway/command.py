"""`tidegate gateway`: flags and environment -> `server.Config`, then `server.run`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tidegate.client import connection
from tidegate.control.tokens import Role


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "gateway",
        help="run the ingress gateway",
        description="The ingress: routes by GatewayRoute documents to service instances, colors lanes, splits canaries, "
        "holds limits and never routes to a draining instance.",
    )
    parser.add_argument("--host", default=os.environ.get("TIDEGATE_GATEWAY_HOST", "127.0.0.1"), help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("TIDEGATE_GATEWAY_PORT", "8080")), help="listen port (default 8080)")
    parser.add_argument("--admin-port", type=int, default=0, help="admin port for /metrics, /ready (default: any free port; -1 = none)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the port with SO_REUSEPORT (default 1)")
    parser.add_argument("--service", default="gateway", help="the service name the gateway registers under (default gateway)")
    parser.add_argument(
        "--routes", default="", metavar="FILE", help="rule documents (GatewayRoute, TrafficLane, ...) when there is no control plane"
    )
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT[,HOST:PORT][@TAG]",
        help="static instances of a service (repeatable)",
    )
    parser.add_argument(
        "--snapshot",
        default="",
        metavar="FILE",
        help="where the last known instances and rules are kept (served when the control plane is unreachable)",
    )
    parser.add_argument("--cert", default="", help="TLS certificate chain (PEM): serve HTTPS")
    parser.add_argument("--key", default="", help="TLS private key (PEM)")
    parser.add_argument("--access-log", default="", metavar="FILE", help="JSON lines per request ('-' = stdout; default off)")
    parser.add_argument("--advertise", default="", metavar="HOST", help="the host registered for this gateway (default --host)")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="seconds for a request head to arrive (408 after; default 10)")
    parser.add_argument("--idle-timeout", type=float, default=60.0, help="seconds a keep-alive client connection may idle (default 60)")
    parser.add_argument("--connect-timeout", type=float, default=3.0, help="default upstream connect timeout, seconds (default 3)")
    parser.add_argument(
        "--response-timeout", type=float, default=60.0, help="default wait for an upstream response head, seconds (504; default 60)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=0.0, help="default bound on a whole exchange, seconds (504; default 0 = none)"
    )
    parser.add_argument("--max-body", type=int, default=100 * 1024 * 1024, help="largest request body, bytes (413; default 100 MiB)")
    parser.add_argument("--max-header-bytes", type=int, default=32768, help="most header bytes (431; default 32768)")
    parser.add_argument("--max-url-bytes", type=int, default=8192, help="longest request target (414; default 8192)")
    parser.add_argument(
        "--drain-timeout", type=float, default=20.0, help="seconds a draining gateway waits for in-flight requests (default 20)"
    )
    parser.add_argument(
        "--drain-idle",
        type=float,
        default=5.0,
        help="seconds a draining gateway keeps an idle keep-alive connection open for its client's next request"
        " or close (at least the clients' keep-alive expiry; default 5)",
    )
    parser.add_argument("--log-level", default=os.environ.get("TIDEGATE_LOG_LEVEL", "INFO"), help="log level (default INFO)")
    connection.add_arguments(parser, Role.AGENT)  # --control, --token-file, --token, --ca: as the agent and the CLI
    parser.set_defaults(func=run)


def parse_upstream(text: str) -> tuple[str, list[tuple[str, int, str]]]:
    """`orders=127.0.0.1:9001,127.0.0.1:9002@v2` -> ("orders", [(host, port, tag), ...]); ValueError names the problem."""
    service, eq, rest = text.partition("=")
    if not eq or not service.strip() or not rest.strip():
        raise ValueError(f"--upstream {text!r}: expected SERVICE=HOST:PORT[,HOST:PORT...]")
    members = []
    for item in rest.split(","):
        address, _, tag = item.strip().partition("@")
        host, colon, port = address.rpartition(":")
        if not colon or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--upstream {text!r}: {address!r} is not HOST:PORT")
        members.append((host.strip("[]"), int(port), tag))
    return service.strip(), members


def run(args: argparse.Namespace) -> int:
    from tidegate.gateway.config import Config, Limits
    from tidegate.gateway.server import run as run_gateway

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    upstreams: dict[str, list[tuple[str, int, str]]] = {}
    try:
        for text in args.upstream:
            service, members = parse_upstream(text)
            upstreams.setdefault(service, []).extend(members)
    except ValueError as error:
        print(f"tidegate gateway: {error}", file=sys.stderr)
        return 2
    if bool(args.cert) != bool(args.key):
        print("tidegate gateway: --cert and --key go together", file=sys.stderr)
        return 2
    control = args.control or os.environ.get("TIDEGATE_CONTROL", "")
    limits = Limits(
        header_timeout_s=args.header_timeout,
        idle_timeout_s=args.idle_timeout,
        connect_timeout_s=args.connect_timeout,
        response_timeout_s=args.response_timeout,
        request_timeout_s=args.request_timeout,
        max_body_bytes=args.max_body,
        max_header_bytes=args.max_header_bytes,
        max_url_bytes=args.max_url_bytes,
        drain_timeout_s=args.drain_timeout,
        drain_idle_s=args.drain_idle,
    )
    config = Config(
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        workers=max(1, args.workers),
        service=args.service,
        control=control,
        # The token as the CLI reads it (--token-file, --token, $TIDEGATE_TOKEN_FILE, $TIDEGATE_TOKEN,
        # else the local control plane's DATA/tokens/agent); the CA as every client verifies with.
        token=connection.token(args) if control else None,
        ca=args.ca,
        routes_file=args.routes,
        upstreams=upstreams,
        snapshot=args.snapshot,
        cert=args.cert,
        key=args.key,
        access_log=args.access_log,
        advertise=args.advertise,
        limits=limits,
    )
    return run_gateway(config)
