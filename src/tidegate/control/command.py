"""`tidegate control`: run the control plane (registry, rule store, watch stream)."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
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
        "--token-file",
        default=None,
        metavar="FILE",
        help="the admin token, read from FILE (default: $TIDEGATE_TOKEN_FILE, else $TIDEGATE_TOKEN, else DATA/tokens/admin,"
        " generated on first start; agent and read tokens are always DATA/tokens/agent and DATA/tokens/read)",
    )
    parser.add_argument("--token", default=None, help="the admin token itself (readable by any local user in `ps`: prefer --token-file)")
    parser.add_argument("--cert", default=None, metavar="PEM", help="serve HTTPS with this certificate (chain) file; needs --key")
    parser.add_argument("--key", default=None, metavar="PEM", help="the private key of --cert")
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
    from tidegate.control.storage import SqliteStorage, default_data_dir
    from tidegate.control.tokens import Role, TokenError, TokenFiles, given_token

    if args.instance_ttl <= 0:
        print("tidegate control: --instance-ttl must be positive", file=sys.stderr)
        return 2
    refused = _tls_refusal(args.cert, args.key)
    if refused:
        print(f"tidegate control: {refused}", file=sys.stderr)
        return 2
    data_dir = args.data or default_data_dir()
    try:
        admin = given_token(args.token, args.token_file, os.environ, _warn)
        storage = SqliteStorage(data_dir)
        files = TokenFiles(data_dir)
        tokens, made = files.ensure(admin, _warn)
    except TokenError as error:
        print(f"tidegate control: {error}", file=sys.stderr)
        return 2
    # Only where each token is: a token printed would end up in service logs.
    for role, use in ((Role.ADMIN, "rules, rollouts, any instance"), (Role.AGENT, "for agents"), (Role.READ, "for status and the console")):
        where = _admin_source(args) if role == Role.ADMIN and admin is not None else str(files.path(role))
        print(f"tidegate control: {role.label} token ({use}): {where}{' (generated now)' if role in made else ''}", flush=True)
    limits = Limits(**{field: getattr(args, field) for field in FLAGS})
    serve(
        storage,
        tokens,
        host=args.host,
        port=args.port,
        open_reads=args.open_reads,
        instance_ttl=args.instance_ttl,
        limits=limits,
        allowed_hosts=tuple(args.allowed_host),
        cert=args.cert,
        key=args.key,
    )
    return 0


def _warn(message: str) -> None:
    print(f"tidegate control: warning: {message}", file=sys.stderr, flush=True)


def _admin_source(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        return f"from --token-file {args.token_file}"
    if args.token is not None:
        return "from --token"
    return "from $TIDEGATE_TOKEN_FILE" if os.environ.get("TIDEGATE_TOKEN_FILE", "").strip() else "from $TIDEGATE_TOKEN"


def _tls_refusal(cert: str | None, key: str | None) -> str | None:
    """Why `--cert`/`--key` cannot serve TLS, or None (also when neither is given)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        return "--cert and --key go together: give both (PEM files) to serve HTTPS"
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        return f"cannot serve TLS with --cert {cert} --key {key}: {getattr(error, 'strerror', None) or error}"
    return None
