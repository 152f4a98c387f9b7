"""`tidegate k8s webhook | manifests | bootstrap-dir`: tidegate's Kubernetes commands."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("k8s", help="Kubernetes: the admission webhook and the manifests")
    commands = parser.add_subparsers(dest="k8s_command", metavar="COMMAND", required=True)
    webhook = commands.add_parser("webhook", help="serve the mutating admission webhook (HTTPS)")
    webhook.add_argument("--cert", required=True, metavar="PEM", help="the serving certificate (chain)")
    webhook.add_argument("--key", required=True, metavar="PEM", help="its private key")
    webhook.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0: the API server calls it)")
    webhook.add_argument("--port", type=int, default=8443, help="port (default 8443)")
    webhook.add_argument("--control", required=True, metavar="URL", help="TIDEGATE_CONTROL for governed pods")
    webhook.add_argument("--secret", default="tidegate-agent", help="the Secret with the agent token (key agent) and CA (key ca.crt)")
    webhook.add_argument("--admin-port", type=int, default=9901, help="the agent's admin port in governed pods (default 9901)")
    webhook.add_argument("--drain-timeout", type=int, default=20, help="TIDEGATE_DRAIN_TIMEOUT for governed pods (default 20 s)")
    webhook.add_argument("--mode", choices=("installed", "copy"), default="installed", help="the default injection way")
    webhook.add_argument("--bootstrap-dir", help="way (a): where the images' tidegate keeps agent/bootstrap (`tidegate k8s bootstrap-dir`)")
    webhook.add_argument("--agent-image", default="tidegate:0.1.0", help="way (b): the image the agent is copied from")
    webhook.add_argument("--python", default="python", help="the app images' Python, for the preStop (default python)")
    webhook.set_defaults(func=_webhook)
    manifests = commands.add_parser("manifests", help="write the YAML: control plane, webhook, gateway, an example app")
    manifests.add_argument("--namespace", default="tidegate")
    manifests.add_argument("--image", default="tidegate:0.1.0", help="an image with tidegate installed")
    manifests.add_argument("--app-namespace", default="default", help="the example app's namespace (it gets the agent Secret)")
    manifests.add_argument("--output", "-o", default="-", help="file to write (default stdout); it holds tokens and keys")
    manifests.set_defaults(func=_manifests)
    where = commands.add_parser("bootstrap-dir", help="print where this tidegate's bootstrap sitecustomize is (for --bootstrap-dir)")
    where.set_defaults(func=_bootstrap_dir)
    copy = commands.add_parser(
        "copy-agent", help="way (b): copy the agent, with private copies of its libraries, into DIR (an init container's emptyDir)"
    )
    copy.add_argument("dir")
    copy.set_defaults(func=_copy_agent)


def _webhook(args: argparse.Namespace) -> int:
    import logging

    from tidegate.k8s.inject import InjectSettings
    from tidegate.k8s.webhook import WebhookServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    defaults = InjectSettings(control=args.control)
    settings = InjectSettings(
        control=args.control,
        secret=args.secret,
        admin_port=args.admin_port,
        drain_timeout_s=args.drain_timeout,
        mode=args.mode,
        bootstrap_dir=args.bootstrap_dir or defaults.bootstrap_dir,
        agent_image=args.agent_image,
        python=args.python,
    )
    try:
        server = WebhookServer(settings, args.cert, args.key, args.host, args.port)
    except (OSError, ValueError) as error:
        print(f"tidegate k8s webhook: cannot serve on {args.host}:{args.port} with {args.cert}: {error}", file=sys.stderr)
        return 2
    print(f"tidegate k8s webhook: listening on https://{args.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


def _manifests(args: argparse.Namespace) -> int:
    import yaml

    from tidegate.k8s.manifests import Options, make_credentials, objects

    options = Options(namespace=args.namespace, image=args.image, app_namespace=args.app_namespace)
    try:
        credentials = make_credentials(namespace=options.namespace)
    except RuntimeError as error:
        print(f"tidegate k8s manifests: {error}", file=sys.stderr)
        return 1
    text = yaml.safe_dump_all(objects(options, credentials), sort_keys=False)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        import os

        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # tokens and private keys
        with os.fdopen(fd, "w") as out:
            out.write(text)
        print(f"tidegate k8s manifests: wrote {args.output} (0600: it holds the tokens and the TLS keys)", file=sys.stderr)
    return 0


def _bootstrap_dir(args: argparse.Namespace) -> int:
    from tidegate.agent.command import BOOTSTRAP_DIR

    print(BOOTSTRAP_DIR)
    return 0


def _copy_agent(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tidegate.k8s.vendor import VendorError, copy_agent

    package = Path(__file__).resolve().parents[1]  # the tidegate package this command runs from
    try:
        versions = copy_agent(package, Path(args.dir))
    except (OSError, VendorError) as error:
        print(f"tidegate k8s copy-agent: cannot copy the agent into {args.dir}: {error}", file=sys.stderr)
        return 1
    vendored = ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
    print(f"tidegate k8s copy-agent: copied {package} to {Path(args.dir) / 'tidegate'}, with its own {vendored} (tidegate._vendor)")
    return 0
