"""`tidegate control`: run the control plane (registry, rule store, watch stream)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tidegate.control.limits import FLAGS, Limits


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "control",
        help="run the control plane",
        description="Run the control plane: registry, versioned rule store, watch stream.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=7070, help="port to listen on (default 7070; 0 picks a free one)")
    parser.add_argument("--data", type=Path, default=None, help="data directory (default: the user data dir for tidegate)")
    parser.add_argument(
        "--token", default=None, help="bearer token for the API (default: $TIDEGATE_TOKEN, else DATA/token, else generated)"
    )
    parser.add_argument("--open-reads", action="store_true", help="let reads (services, rules, watch) through without the token")
    parser.add_argument(
        "--instance-ttl", type=float, default=15.0, metavar="SECONDS", help="an instance silent this long is removed (default 15)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host is NAME (a DNS name or proxy in front; '*.example.com' for every name under it;"
        " repeatable). Other names are refused with 421 (DNS rebinding)",
    )
    limits = parser.add_argument_group("limits (a request past one is refused with 429 or 413 naming it)")
    for field, flag in FLAGS.items():
        limits.add_argument(flag, type=_positive, default=getattr(Limits(), field), metavar="N", help=_LIMIT_HELP[field])
    parser.set_defaults(func=run)


_LIMIT_HELP = {
    "max_instances": "live instances in the registry (default %(default)s)",
    "max_services": "service names remembered (default %(default)s)",
    "max_metadata_bytes": "one instance's metadata, as JSON (default %(default)s)",
    "max_watchers": "open watch streams (default %(default)s)",
    "watcher_backlog_bytes": "changes one watcher may have pending before it is cut off and resumes (default %(default)s)",
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    from tidegate.control.server import serve
    from tidegate.control.storage import SqliteStorage, default_data_dir, new_token

    if args.instance_ttl <= 0:
        print("tidegate control: --instance-ttl must be positive")
        return 2
    data_dir = args.data or default_data_dir()
    storage = SqliteStorage(data_dir)
    token = args.token or os.environ.get("TIDEGATE_TOKEN") or storage.load_token()
    if not token:
        token = new_token()
        storage.save_token(token)
        print(f"tidegate control: generated an access token, stored in {data_dir / 'token'}:\n  {token}", flush=True)
    limits = Limits(**{field: getattr(args, field) for field in FLAGS})
    serve(
        storage,
        token,
        host=args.host,
        port=args.port,
        open_reads=args.open_reads,
        instance_ttl=args.instance_ttl,
        limits=limits,
        allowed_hosts=tuple(args.allowed_host),
    )
    return 0
