"""`tidegate demo`: start a control plane and sample services, show tidegate at work, clean up."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo",
        help="run sample services under tidegate and show what it does",
        description="Starts a control plane and sample services (all on 127.0.0.1), sends traffic, prints what happened, and stops everything.",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="traffic duration per scene (default 5)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory with the processes' logs")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not install redis-server when it is missing (by default, as root with apt-get, it is installed for the lanes scene's stream)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    import tidegate
    from tidegate.demo import brokers, flash_sale, gateway, lanes, rolling, scale_out, spread
    from tidegate.demo.cluster import Cluster, DemoError

    if args.seconds <= 0 or args.rate <= 0:
        raise SystemExit("tidegate demo: --seconds and --rate must be positive")
    console = Console()
    redis_server = brokers.redis_server(console, install=not args.no_install)  # before any process starts
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-demo-"))
    cluster = Cluster(workdir)
    failed = 0
    runtime = None
    try:
        console.print(f"control plane: {cluster.start_control()}  (logs in {workdir})")
        runtime = tidegate.connect(cluster.control_url, cluster.token, service="demo-client")
        # The services' agents log to their files; the demo's own agent keeps the screen for the scenes.
        logging.getLogger("tidegate").setLevel(logging.WARNING)
        failed += spread.run(cluster, console, args.rate, args.seconds).failed
        failed += rolling.run(cluster, console, args.rate)
        failed += flash_sale.run(cluster, console)
        failed += lanes.run(cluster, console, redis_server)
        failed += scale_out.run(cluster, console, args.rate)
        failed += gateway.run(cluster, console, args.rate)
    except DemoError as error:
        console.print(f"[red]demo failed:[/] {error}")
        return 1
    finally:
        console.print("stopping every process (services deregister, then the control plane stops)...")
        if runtime is not None and runtime.lifecycle is not None and runtime.lifecycle.watcher is not None:
            runtime.lifecycle.watcher.stop()
        cluster.stop_all()
        if args.keep:
            console.print(f"logs kept in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    console.print("[green]done[/]" if failed == 0 else f"[yellow]done, {failed} failed requests[/]")
    return 0 if failed == 0 else 1
