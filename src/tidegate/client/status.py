"""`tidegate status`: services and their instances, as the control plane sees them."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tidegate.client import connection, output
from tidegate.control.tokens import Role


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help="show services and instances", description="Show services and their instances.")
    connection.add_arguments(parser, Role.READ)
    output.add_output_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tidegate.errors import ControlPlaneError

    url = connection.control_url(args.control)
    unreadable: dict[str, str] = {}
    try:
        with connection.client(args) as client:
            services = client.services()
            instances = {}
            for service in services:
                try:
                    instances[service["name"]] = client.instances(service["name"])
                except ControlPlaneError as error:  # one bad entry (a name stored before names were checked) spoils no other
                    if error.status is None:
                        raise
                    instances[service["name"]] = []
                    unreadable[service["name"]] = str(error)
            revision = client.health()["revision"]
    except (TypeError, KeyError, AttributeError) as error:  # an answer of another shape than tidegate's API
        print(
            f"tidegate status: {url} answered something that is not a tidegate control plane's API"
            f" ({type(error).__name__}: {output.clean(error)}); is --control pointing at the right address?",
            file=sys.stderr,
        )
        return 1
    except ControlPlaneError as error:
        print(f"tidegate status: {output.clean(error)}", file=sys.stderr)
        if error.status is None:
            print(
                f"is the control plane running? start it with `tidegate control`, or point --control at it (tried {url})", file=sys.stderr
            )
        return 1
    if args.output == "json":
        output.print_json(
            {
                "control": url,
                "revision": revision,
                "services": [
                    {
                        **_service_fields(service),
                        "instances": [i.to_dict() for i in sorted(instances[service["name"]], key=lambda i: i.id)],
                        **({"error": unreadable[service["name"]]} if service["name"] in unreadable else {}),
                    }
                    for service in services
                ],
            }
        )
        return 0
    console = Console()
    if not services:
        output.say(console, f"no service registered yet at {url} (revision {revision})")
        return 0
    table = output.table(f"tidegate at {url} (revision {revision})")
    for column in ("service", "instance", "address", "tag", "state", "weight", "age"):
        output.add_column(table, column)
    now = time.time()
    for service in services:
        name = service["name"]
        if name in unreadable:
            table.add_row(output.cell(name), "-", "-", "-", output.cell(f"unreadable: {unreadable[name]}"), "-", "-")
        elif not instances[name]:
            table.add_row(output.cell(name), "-", "-", "-", "no instance", "-", "-")
        for instance in sorted(instances[name], key=lambda i: i.id):
            age = _age(now - instance.registered_at) if instance.registered_at else "-"
            table.add_row(
                *map(
                    output.cell,
                    (name, instance.id, instance.address, instance.tag or "(base)", instance.state, instance.weight, age),
                )
            )
    output.show(table, console)
    return 0


def _service_fields(service: dict[str, Any]) -> dict[str, Any]:
    return {"name": service["name"], "tags": service.get("tags", [])}


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
