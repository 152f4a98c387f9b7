"""`tidegate offline` (`python -m tidegate offline`): drain the local instance, for a preStop hook.

Kubernetes' `httpGet` hooks cannot send a token, so the injected preStop is an
`exec` of this. It finds the agent's admin endpoint and the credential its
writes take in `<state dir>/<service>.admin.json` (written by the agent; it
holds the admin URL and the first instance's lease secret, which works from
any peer, the pod's own address included), else in the environment
(`TIDEGATE_ADMIN_HOST`/`TIDEGATE_ADMIN_PORT` and the agent token, which the
endpoint takes from loopback only). It posts `/offline`, which answers once
drained, and exits 0 when drained, 1 with one line saying why otherwise (the
kubelet then sends SIGTERM all the same, and SIGTERM drains too).
Only the standard library and `agent.config`: it runs in the app's image.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: How much longer than the drain timeout the call waits for the answer.
ANSWER_MARGIN_S = 5.0
DEFAULT_DRAIN_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Target:
    url: str  # the admin endpoint, e.g. http://10.1.2.3:9901
    secret: str  # the bearer credential (a lease secret or the agent token)
    source: str  # where both came from, for messages


class OfflineError(Exception):
    """Why the drain could not be asked for or did not finish; the message is the command's one line."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "offline",
        help="drain this host's instance of a service (a preStop hook)",
        description="Drain the local instance through its agent's admin endpoint; exit 0 once drained.",
    )
    parser.add_argument("--service", help="the service (env TIDEGATE_SERVICE)")
    parser.add_argument(
        "--admin", metavar="URL", help="the admin endpoint, e.g. http://127.0.0.1:9901 (default: from the agent's state file)"
    )
    parser.add_argument("--timeout", type=float, help="seconds to wait for the drain (default TIDEGATE_DRAIN_TIMEOUT + 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    env = os.environ
    try:
        target = find_target(args.service or env.get("TIDEGATE_SERVICE", "").strip(), args.admin, env)
        wait = args.timeout if args.timeout is not None else _drain_timeout(env) + ANSWER_MARGIN_S
        answer = drain(target, wait, env.get("TIDEGATE_CA", "").strip())
    except OfflineError as error:
        print(f"tidegate offline: {error}", file=sys.stderr)
        return 1
    print(f"tidegate offline: drained ({target.url}): {json.dumps(answer)}")
    return 0


def find_target(service: str, admin: str | None, env: Mapping[str, str]) -> Target:
    """Where to post `/offline` and with what: the agent's state file first, then the environment."""
    from tidegate.agent.config import state_dir

    if not service:
        raise OfflineError("no service named: give --service or set TIDEGATE_SERVICE")
    path = state_dir() / f"{service}.admin.json"
    record = _record(path)
    if record is not None:
        return Target(admin or record["url"], record["lease_secret"], str(path))
    token = _token(env)
    if admin is None:
        port = env.get("TIDEGATE_ADMIN_PORT", "").strip()
        if not port or port == "0":
            raise OfflineError(
                f"no {path} (is the agent running, with the same TIDEGATE_STATE_DIR?) and no fixed TIDEGATE_ADMIN_PORT to find it by"
            )
        host = env.get("TIDEGATE_ADMIN_HOST", "").strip() or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        admin = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    if not token:
        raise OfflineError(f"no {path} and no agent token (TIDEGATE_TOKEN_FILE) to authorize the drain with")
    return Target(admin, token, "the environment")


def drain(target: Target, wait_s: float, ca: str = "") -> dict[str, object]:
    """POST /offline and wait for its answer: the drain's progress once DRAINED, else OfflineError."""
    request = urllib.request.Request(
        target.url.rstrip("/") + "/offline",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {target.secret}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=ca or None) if target.url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=wait_s, context=context) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raise OfflineError(
            f"{target.url} refused the drain ({error.code}): {_error_text(error)} (credential from {target.source})"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise OfflineError(f"cannot reach the agent's admin endpoint at {target.url}: {reason}") from None
    except ValueError:
        raise OfflineError(f"{target.url} answered something that is not JSON") from None
    phase = answer.get("phase") if isinstance(answer, dict) else None
    if phase != "DRAINED":
        raise OfflineError(f"not drained: the agent answered {json.dumps(answer)}")
    return answer


def _record(path: Path) -> dict[str, str] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("url"), str) or not isinstance(record.get("lease_secret"), str):
        return None
    return record


def _token(env: Mapping[str, str]) -> str:
    from tidegate.control.tokens import TokenError, given_token

    try:
        return given_token(None, None, env, lambda message: None) or ""
    except TokenError as error:
        raise OfflineError(str(error)) from None


def _drain_timeout(env: Mapping[str, str]) -> float:
    text = env.get("TIDEGATE_DRAIN_TIMEOUT", "").strip()
    try:
        return float(text) if text else DEFAULT_DRAIN_TIMEOUT_S
    except ValueError:
        return DEFAULT_DRAIN_TIMEOUT_S


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read() or b"{}")
    except (OSError, ValueError):
        return str(error.reason)
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)
