"""Where the CLI finds the control plane, the token a command needs and the CA to trust, when not told.

Each command says which role's token it needs (`tidegate status` and the listings:
read; `tidegate rules apply|rollback|delete`: admin). The token comes from
`--token-file`, `--token`, `$TIDEGATE_TOKEN_FILE` or `$TIDEGATE_TOKEN`, else from
the local control plane's `DATA/tokens/<role>` when this user can read it. An
`https://` control plane is verified with `--ca` / `$TIDEGATE_CA` (else httpx's
default bundle, certifi's).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from tidegate.control.tokens import Role, TokenError, given_token, read_token_file

if TYPE_CHECKING:
    from tidegate.client.control import ControlClient

DEFAULT_CONTROL = "http://127.0.0.1:7070"

_USE = {
    Role.READ: "a read token is enough (the agent's and admin's work too)",
    Role.AGENT: "the agent token (or admin)",
    Role.ADMIN: "this needs the admin token",
}


def control_url(given: str | None) -> str:
    return given or os.environ.get("TIDEGATE_CONTROL") or DEFAULT_CONTROL


def token(args: argparse.Namespace) -> str | None:
    """The token for this command: the flags, then the env, then the local control plane's file for
    the role the command needs. A bad token (too short, unreadable file) ends the command (exit 2)."""
    try:
        given = given_token(args.token, args.token_file, os.environ, _warn)
    except TokenError as error:
        print(f"tidegate: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if given is not None:
        return given
    from tidegate.control.storage import default_data_dir
    from tidegate.control.tokens import TokenFiles

    path = TokenFiles(default_data_dir()).path(args.needs)
    try:
        return read_token_file(path, f"the local control plane's {args.needs.label} token", _warn) if path.exists() else None
    except TokenError:  # not ours to read, or not a token: the server will say what it needs
        return None


def with_client(args: argparse.Namespace, action: Callable[[ControlClient], None], command: str) -> int:
    """Run `action` with the command's client: 0, or 1 after one line `tidegate COMMAND: why` when
    the control plane refused or could not be reached (a ControlPlaneError)."""
    from tidegate.client.output import clean
    from tidegate.errors import ControlPlaneError

    try:
        with client(args) as control:
            action(control)
    except ControlPlaneError as error:
        print(f"tidegate {command}: {clean(str(error))}", file=sys.stderr)
        return 1
    return 0


def client(args: argparse.Namespace) -> ControlClient:
    """A `ControlClient` for the command's control plane, token and CA."""
    from tidegate.client.control import ControlClient

    return ControlClient(control_url(args.control), token(args), ca=args.ca)


def add_arguments(parser: argparse.ArgumentParser, needs: Role) -> None:
    """`--control`, `--token-file`, `--token` and `--ca`, for a command that needs a `needs` token."""
    parser.set_defaults(needs=needs)
    parser.add_argument(
        "--control", default=None, metavar="URL", help=f"control plane URL (default $TIDEGATE_CONTROL or {DEFAULT_CONTROL})"
    )
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help=f"bearer token, read from FILE: {_USE[needs]} (default $TIDEGATE_TOKEN_FILE, $TIDEGATE_TOKEN,"
        f" else the local control plane's DATA/tokens/{needs.label})",
    )
    parser.add_argument("--token", default=None, help="the bearer token itself (readable by any local user in `ps`: prefer --token-file)")
    parser.add_argument(
        "--ca", default=None, metavar="PEM", help="CA certificate(s) to verify an https:// control plane with (default $TIDEGATE_CA)"
    )


def _warn(message: str) -> None:
    print(f"tidegate: warning: {message}", file=sys.stderr)
