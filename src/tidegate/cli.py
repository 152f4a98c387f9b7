"""`tidegate` command line: one subcommand per part, each defined beside its part.

Each module in `_COMMANDS` has `register(subparsers)`, which adds its parser and
sets `func(args) -> int` as the handler. Modules keep heavy imports inside the
handler so `tidegate --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_COMMANDS = (
    "tidegate.control.command",  # tidegate control
    "tidegate.agent.command",  # tidegate run
    "tidegate.agent.offline_command",  # tidegate offline (a preStop hook)
    "tidegate.client.status",  # tidegate status
    "tidegate.client.rules_command",  # tidegate rules ...
    "tidegate.client.rollout_command",  # tidegate rollout ...
    "tidegate.demo.command",  # tidegate demo
    "tidegate.gateway.command",  # tidegate gateway
    "tidegate.k8s.command",  # tidegate k8s ...
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidegate",
        description="Microservice governance for Python services, with no code changes.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
