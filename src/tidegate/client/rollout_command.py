"""`tidegate rollout start|status|list|pause|resume|promote|abort`: rollouts from the shell.

The rollout runs in the control plane (this command only asks and shows): closing
the terminal neither stops nor orphans it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidegate.client import connection, output
from tidegate.control.tokens import Role

if TYPE_CHECKING:  # imported in the handlers, to keep `tidegate --help` fast
    from tidegate.client.control import ControlClient

#: Phases after which nothing more happens.
FINISHED = ("aborted", "completed")
WATCH_INTERVAL_S = 1.0
BAR_WIDTH = 40


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "rollout",
        help="roll a new version out step by step, judged on its metrics",
        description="Start and follow rollouts; the control plane runs them.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start",
        help="start a rollout of SERVICE to the instances tagged --tag, or the Rollout document of -f FILE",
        description="Start a rollout from flags (SERVICE --tag TAG ...) or from a Rollout document kept in Git (-f FILE).",
    )
    start.add_argument("service", nargs="?")
    start.add_argument("--tag", default=None, help="the new version's tag (its instances must be live)")
    start.add_argument("-f", "--file", default=None, help="a YAML/JSON file holding one Rollout document (instead of the flags)")
    start.add_argument("--steps", default=None, help="canary percents, increasing, ending at 100 (default 5,10,25,50,100)")
    start.add_argument("--interval", default=None, help="each step's window, e.g. 60s or 2m (default 60s)")
    start.add_argument("--analysis", default=None, help="a YAML/JSON file holding the analysis (spec.analysis of a Rollout document)")
    start.add_argument("--sticky-header", default=None, help="keep each user on one side by this request header")
    start.add_argument(
        "--keep-old", action="store_true", help="once promoted, leave the old instances for the deployer (default: drain them)"
    )
    start.add_argument("--name", default=None, help="the rollout's name (default: SERVICE-TAG)")
    start.set_defaults(func=_start)

    status = actions.add_parser("status", help="one rollout: its steps, progress and the gray-vs-base numbers of each decision")
    status.add_argument("service")
    status.add_argument("--watch", action="store_true", help="show every change until the rollout is over (Ctrl-C leaves it running)")
    status.set_defaults(func=_status)

    listing = actions.add_parser("list", help="every service's latest rollout")
    listing.set_defaults(func=_list)

    acting = []
    for action, help in (
        ("pause", "hold the rollout at its step"),
        ("resume", "go on from the step it holds"),
        ("promote", "skip to 100%% now"),
        ("abort", "send the new version no more traffic (weight 0)"),
    ):
        sub = actions.add_parser(action, help=help)
        sub.add_argument("service")
        sub.add_argument("--reason", default="", help="recorded with the decision")
        sub.set_defaults(func=_act, verb=action)
        acting.append(sub)

    for sub in (start, *acting):
        connection.add_arguments(sub, Role.ADMIN)
    for sub in (status, listing):
        connection.add_arguments(sub, Role.READ)
    for sub in (start, status, listing, *acting):
        output.add_output_argument(sub)


def document(args: argparse.Namespace) -> dict[str, Any]:
    """The `Rollout` document the flags describe (the control plane validates it, naming the field)."""
    spec: dict[str, Any] = {"service": args.service, "tag": args.tag}
    if args.steps is not None:
        try:
            spec["steps"] = [float(part) if "." in part else int(part) for part in args.steps.split(",") if part.strip()]
        except ValueError:
            raise SystemExit(_fail(f"--steps must be numbers separated by commas, got {args.steps!r}")) from None
    if args.interval is not None:
        spec["interval"] = args.interval
    if args.sticky_header:
        spec["stickyKey"] = {"header": args.sticky_header}
    if args.keep_old:
        spec["drainOld"] = False
    if args.analysis is not None:
        spec["analysis"] = _one_mapping(args.analysis, "the analysis (minRequests, metrics, ...)")
    name = args.name or f"{args.service}-{args.tag}".lower().replace("_", "-")
    return {"apiVersion": "tidegate.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name}, "spec": spec}


def _one_mapping(path: str, what: str) -> Any:
    from tidegate.errors import RuleError
    from tidegate.rules import load_documents

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(_fail(f"cannot read {path}: {error}")) from None
    try:
        loaded = load_documents(text)
    except RuleError as error:
        raise SystemExit(_fail(f"{path}: {error}")) from None
    if len(loaded) != 1:
        raise SystemExit(_fail(f"{path} must hold one mapping: {what}"))
    return loaded[0]


def _start(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.service or args.tag:
            return _fail("give SERVICE --tag TAG or -f FILE, not both")
        body = _one_mapping(args.file, "one Rollout document")
    elif not (args.service and args.tag):
        return _fail("name the service and the new version (SERVICE --tag TAG), or give -f FILE")
    else:
        body = document(args)

    def action(client: ControlClient) -> None:
        _show(client.start_rollout(body), args)

    return _with_client(args, action)


def _act(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        _show(client.rollout_action(args.service, args.verb, args.reason), args)

    return _with_client(args, action)


def _status(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        state = client.rollout(args.service)
        _show(state, args)
        if not args.watch:
            return
        seen = _fingerprint(state)
        while state["phase"] not in FINISHED:
            time.sleep(WATCH_INTERVAL_S)
            state = client.rollout(args.service)
            if _fingerprint(state) != seen:
                seen = _fingerprint(state)
                print()
                _show(state, args)

    return _with_client(args, action)


def _list(args: argparse.Namespace) -> int:
    def action(client: ControlClient) -> None:
        rollouts = client.rollouts()
        if args.output == "json":
            output.print_json(rollouts)
            return
        if not rollouts:
            print("no rollout")
            return
        table = output.table()
        for column in ("service", "tag", "phase", "weight", "step", "reason"):
            output.add_column(table, column)
        for r in rollouts:
            step = f"{r['step'] + 1}/{len(r['plan']['steps'])}"
            table.add_row(*map(output.cell, (r["service"], r["tag"], r["phase"], f"{r['weight']:g}%", step, r["reason"])))
        output.show(table)

    return _with_client(args, action)


def _fingerprint(state: Mapping[str, Any]) -> tuple[Any, ...]:
    return (state["phase"], state["step"], len(state["decisions"]), state["decisions"][-1]["at"] if state["decisions"] else 0)


def _show(state: Mapping[str, Any], args: argparse.Namespace) -> None:
    if args.output == "json":
        output.print_json(state)
        return
    print(render(state))
    sys.stdout.flush()


def render(state: Mapping[str, Any]) -> str:
    """A rollout as text: the header, a progress bar, the steps, the window and each decision's numbers."""
    steps = [float(step) for step in state["plan"]["steps"]]
    weight = float(state["weight"])
    filled = round(BAR_WIDTH * weight / 100)
    lines = [
        f"{state['service']} -> {state['tag']}: {state['phase']}, weight {weight:g}%"
        + (f" ({state['reason']})" if state["reason"] else ""),
        f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {weight:g}%",
        "steps: " + "  ".join(_step_mark(i, step, state) for i, step in enumerate(steps)),
    ]
    if state["phase"] == "progressing":
        elapsed = max(0.0, float(state["now"]) - float(state["window_start"]))
        length = float(state["window_end"]) - float(state["window_start"])
        lines.append(f"window: {elapsed:.0f} s of {length:.0f} s (interval {float(state['plan']['interval_s']):g} s)")
    for decision in state["decisions"]:
        lines.append(f"  step {decision['step'] + 1} at {decision['weight']:g}%: {decision['kind']}" + _numbers(decision["evidence"]))
        lines.extend(f"      {reason}" for reason in decision["reasons"])
    return "\n".join(output.clean(line) for line in lines)


def _step_mark(index: int, step: float, state: Mapping[str, Any]) -> str:
    phase = state["phase"]
    if phase in ("promoted", "completed") or index < state["step"]:
        return f"{step:g}% ok"
    if index == state["step"]:
        return f"{step:g}% {'ABORTED' if phase == 'aborted' else '<'}"
    return f"{step:g}%"


def _numbers(evidence: Mapping[str, Any]) -> str:
    """`gray 500 req, 1 err, p99 20.0 ms | base ...` of the rollup, when the decision was judged on numbers."""
    if "*.gray.requests" not in evidence:
        return ""

    def side(name: str) -> str:
        p99 = evidence.get(f"*.{name}.p99_ms")
        latency = f", p99 {p99:.1f} ms" if isinstance(p99, (int, float)) else ""
        return f"{name} {evidence[f'*.{name}.requests']} req, {evidence[f'*.{name}.errors']} err{latency}"

    return f" ({side('gray')} | {side('base')})"


def _with_client(args: argparse.Namespace, action: Callable[[ControlClient], None]) -> int:
    return connection.with_client(args, action, "rollout")


def _fail(message: str) -> int:
    print(f"tidegate rollout: {output.clean(message)}", file=sys.stderr)
    return 1
