"""`tidegate rules apply|list|history|rollback|delete`: the rule store from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.client import connection, output
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
    delete = actions.add_parser(
        "delete",
        help="delete a rule, or every rule a file's documents name",
        description="Delete one rule (KIND NAME), or what `apply -f FILE` wrote (-f FILE), rules before the strategies they use.",
    )
    delete.add_argument("kind", nargs="?")
    delete.add_argument("name", nargs="?")
    delete.add_argument("--namespace", default="default")
    delete.add_argument("-f", "--file", default=None, help="file with the documents to delete; '-' reads stdin")
    delete.add_argument("--cascade", action="store_true", help="also delete the rules that still use a deleted strategy")
    delete.set_defaults(func=_delete)

    for action, needs in ((apply, Role.ADMIN), (listing, Role.READ), (history, Role.READ), (rollback, Role.ADMIN), (delete, Role.ADMIN)):
        connection.add_arguments(action, needs)
    for action in (listing, history):
        output.add_output_argument(action)


def _read(path: str) -> str | None:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"cannot read {path}: {error}")
        return None


def _apply(args: argparse.Namespace) -> int:
    text = _read(args.file)
    if text is None:
        return 1

    def action(client: ControlClient) -> None:
        for rule in client.apply_rules_answer(text):
            print(f"{rule['kind']}/{rule['name']} (namespace {rule['namespace']}) at revision {rule['revision']}")
            for warning in rule.get("warnings", ()):
                print(f"tidegate rules: warning: {warning}", file=sys.stderr)

    return _with_client(args, action)


def _list(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        rules = client.rules(args.namespace, args.kind)
        if args.output == "json":
            output.print_json([rule.to_dict() for rule in rules])
            return
        if not rules:
            print("no rule in force")
            return
        table = output.table()
        for column in ("namespace", "kind", "name", "revision", "spec"):
            output.add_column(table, column)
        for rule in rules:
            table.add_row(*map(output.cell, (rule.namespace, rule.kind, rule.name, rule.revision, _spec(rule.document))))
        output.show(table)

    return _with_client(args, action)


def _history(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        entries = client.history(args.namespace, args.kind, args.name)
        if args.output == "json":
            output.print_json([{**rule.to_dict(), "op": "put" if rule.document else "delete"} for rule in entries])
            return
        table = output.table(f"{args.namespace}/{args.kind}/{args.name}")
        for column in ("revision", "op", "spec"):
            output.add_column(table, column)
        for rule in entries:
            deleted = not rule.document
            table.add_row(*map(output.cell, (rule.revision, "delete" if deleted else "put", "" if deleted else _spec(rule.document))))
        output.show(table)

    return _with_client(args, action)


def _rollback(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        rule = client.rollback(args.namespace, args.kind, args.name, args.revision)
        print(f"{rule.kind}/{rule.name} rolled back to revision {args.revision}'s document, now at revision {rule.revision}")

    return _with_client(args, action)


def _delete(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.kind or args.name:
            return _fail("give KIND NAME or -f FILE, not both")
        text = _read(args.file)
        if text is None:
            return 1

        def from_file(client: ControlClient) -> None:
            answer = client.delete_rules(text, cascade=args.cascade)
            for rule in answer["deleted"]:
                print(f"{rule.kind}/{rule.name} (namespace {rule.namespace}) deleted at revision {rule.revision}")
            for key in answer["not_in_force"]:
                print(f"{key} was not in force")

        return _with_client(args, from_file)
    if not (args.kind and args.name):
        return _fail("name the rule (KIND NAME), or give -f FILE")

    def one(client: ControlClient) -> None:
        for rule in client.delete_rule(args.namespace, args.kind, args.name, cascade=args.cascade):
            print(f"{rule.kind}/{rule.name} (namespace {rule.namespace}) deleted at revision {rule.revision}")

    return _with_client(args, one)


def _with_client(args: argparse.Namespace, action: Callable[[ControlClient], None]) -> int:
    return connection.with_client(args, action, "rules")


def _spec(document: object) -> str:
    spec = document.get("spec", {}) if isinstance(document, dict) else {}
    return json.dumps(spec, separators=(",", ":"), sort_keys=True)


def _fail(message: str) -> int:
    print(f"tidegate rules: {output.clean(message)}", file=sys.stderr)
    return 1
