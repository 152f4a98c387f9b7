"""`tidegate rules apply|list|history|rollback|delete`: the rule store from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.client import connection
from tidegate.control.tokens import Role

if TYPE_CHECKING:  # imported in the handlers, to keep `tidegate --help` fast
    from tidegate.client.control import ControlClient


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "rules", help="apply, list, roll back rule documents", description="Manage rule documents in the control plane."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    apply = actions.add_parser("apply", help="apply YAML/JSON rule documents (all or nothing)")
    apply.add_argument("-f", "--file", required=True, help="file with one or more documents; '-' reads stdin")
    apply.set_defaults(func=_apply)

    listing = actions.add_parser("list", help="rules in force")
    listing.add_argument("--kind", default=None)
    listing.add_argument("--namespace", default=None)
    listing.set_defaults(func=_list)

    def one_rule(action: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        """An action on one rule, named by kind and name (and namespace)."""
        parser = actions.add_parser(action, help=help)
        parser.add_argument("kind")
        parser.add_argument("name")
        parser.add_argument("--namespace", default="default")
        parser.set_defaults(func=func)
        return parser

    history = one_rule("history", "every revision of one rule, newest first", _history)
    rollback = one_rule("rollback", "write an old revision again, as a new revision", _rollback)
    rollback.add_argument("revision", type=int)
    delete = one_rule("delete", "delete a rule", _delete)

    for action, needs in ((apply, Role.ADMIN), (listing, Role.READ), (history, Role.READ), (rollback, Role.ADMIN), (delete, Role.ADMIN)):
        connection.add_arguments(action, needs)


def _apply(args: argparse.Namespace) -> int:
    if args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.file).read_text()
        except (OSError, UnicodeDecodeError) as error:
            return _fail(f"cannot read {args.file}: {error}")

    def action(client: ControlClient) -> None:
        for rule in client.apply_rules(text):
            print(f"{rule.kind}/{rule.name} (namespace {rule.namespace}) at revision {rule.revision}")

    return _with_client(args, action)


def _list(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        from rich.console import Console
        from rich.table import Table

        rules = client.rules(args.namespace, args.kind)
        if not rules:
            print("no rule in force")
            return
        table = Table()
        for column in ("namespace", "kind", "name", "revision", "spec"):
            table.add_column(column)
        for rule in rules:
            table.add_row(rule.namespace, rule.kind, rule.name, str(rule.revision), _spec(rule.document))
        Console().print(table)

    return _with_client(args, action)


def _history(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{args.namespace}/{args.kind}/{args.name}")
        for column in ("revision", "op", "spec"):
            table.add_column(column)
        for rule in client.history(args.namespace, args.kind, args.name):
            deleted = not rule.document
            table.add_row(str(rule.revision), "delete" if deleted else "put", "" if deleted else _spec(rule.document))
        Console().print(table)

    return _with_client(args, action)


def _rollback(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        rule = client.rollback(args.namespace, args.kind, args.name, args.revision)
        print(f"{rule.kind}/{rule.name} rolled back to revision {args.revision}'s document, now at revision {rule.revision}")

    return _with_client(args, action)


def _delete(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        client.delete_rule(args.namespace, args.kind, args.name)
        print(f"{args.kind}/{args.name} deleted")

    return _with_client(args, action)


def _with_client(args: argparse.Namespace, action: Callable[[ControlClient], None]) -> int:
    from tidegate.errors import ControlPlaneError

    try:
        with connection.client(args) as client:
            action(client)
    except ControlPlaneError as error:
        return _fail(str(error))
    return 0


def _spec(document: object) -> str:
    spec = document.get("spec", {}) if isinstance(document, dict) else {}
    return json.dumps(spec, separators=(",", ":"), sort_keys=True)


def _fail(message: str) -> int:
    print(f"tidegate rules: {message}", file=sys.stderr)
    return 1
