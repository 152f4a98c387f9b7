"""`tidegate status`: services and their instances, as the control plane sees them."""

from __future__ import annotations

import argparse
import sys
import time

from tidegate.client import connection
from tidegate.control.tokens import Role


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help="show services and instances", description="Show services and their instances.")
    connection.add_arguments(parser, Role.READ)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tidegate.errors import ControlPlaneError

    url = connection.control_url(args.control)
    console = Console()
    try:
        with connection.client(args) as client:
            services = client.services()
            instances = {s["name"]: client.instances(s["name"]) for s in services}
            revision = client.health()["revision"]
    except ControlPlaneError as error:
        print(f"tidegate status: {error}", file=sys.stderr)
        if error.status is None:
            print(
                f"is the control plane running? start it with `tidegate control`, or point --control at it (tried {url})", file=sys.stderr
            )
        return 1
    table = Table(title=f"tidegate at {url} (revision {revision})")
    for column in ("service", "instance", "address", "tag", "state", "weight", "age"):
        table.add_column(column, overflow="fold")
    now = time.time()
    for service in services:
        name = service["name"]
        if not instances[name]:
            table.add_row(name, "-", "-", "-", "no instance", "-", "-")
        for instance in sorted(instances[name], key=lambda i: i.id):
            age = _age(now - instance.registered_at) if instance.registered_at else "-"
            table.add_row(name, instance.id, instance.address, instance.tag or "(base)", str(instance.state), str(instance.weight), age)
    if not services:
        console.print(f"no service registered yet at {url} (revision {revision})")
    else:
        console.print(table)
    return 0


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
