"""`tidegate run`: start a program with the agent loaded, without changing its code.

It validates the agent settings, exports them as env (so a container can set the
same env instead), puts `agent/bootstrap/` first on PYTHONPATH so Python imports
our `sitecustomize` at start-up, and execs the program: the server becomes this
very process, so signals reach it directly. Before the exec it checks that the
program's Python can import tidegate (`tidegate.agent.interpreter`), and stops
with what to install where when it cannot (`--allow-ungoverned` starts it anyway).

The token reaches the program only as a file path (`TIDEGATE_TOKEN_FILE`): a token
given in clear (`--token`, `$TIDEGATE_TOKEN`) is written to a private temporary
file first (removed when the program exits), so neither the program's environment
nor that of any process it starts holds it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

BOOTSTRAP_DIR = str(Path(__file__).resolve().parent / "bootstrap")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run",
        help="run a program with the tidegate agent loaded",
        description="Run COMMAND with the tidegate agent loaded. Every flag may be set through its env variable instead.",
    )
    parser.add_argument("--service", help="service name to register as (env TIDEGATE_SERVICE)")
    parser.add_argument("--tag", help="instance tag, i.e. its lane (env TIDEGATE_TAG)")
    parser.add_argument("--control", help="control plane URL (env TIDEGATE_CONTROL, default http://127.0.0.1:7070)")
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="the agent token (DATA/tokens/agent of the control plane; admin works too), read from FILE (env TIDEGATE_TOKEN_FILE)",
    )
    parser.add_argument("--token", help="the token itself (readable in `ps`: prefer --token-file; env TIDEGATE_TOKEN)")
    parser.add_argument("--ca", metavar="PEM", help="CA certificate(s) to verify an https:// control plane with (env TIDEGATE_CA)")
    parser.add_argument("--admin-port", help="admin endpoint port, 0 = ephemeral (env TIDEGATE_ADMIN_PORT)")
    parser.add_argument(
        "--admin-host",
        help="address the admin endpoint binds, default 127.0.0.1; a pod's IP (or 0.0.0.0) lets probes and other hosts' agents reach it (env TIDEGATE_ADMIN_HOST)",
    )
    parser.add_argument(
        "--allow-ungoverned",
        action="store_true",
        help="start the program even when its Python cannot import tidegate (it then runs without the agent)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the program to run, after --")
    parser.set_defaults(func=run)


def agent_env(base: Mapping[str, str], overrides: Mapping[str, str | None]) -> dict[str, str]:
    """The environment the program runs with: `base` plus flags, agent switched on."""
    env = dict(base)
    for name, value in overrides.items():
        if value is not None:
            env[name] = value
    env["TIDEGATE_AGENT"] = "1"
    env["PYTHONPATH"] = _prepend_path(BOOTSTRAP_DIR, env.get("PYTHONPATH", ""))
    return env


def pass_token_as_file(env: MutableMapping[str, str], flag_token: str | None, flag_file: str | None) -> None:
    """Leave the token in `env` only as `TIDEGATE_TOKEN_FILE`: a given file as it is, a token given
    in clear written to a private temporary file that the program removes at exit.
    Raises TokenError for a token that cannot be used."""
    from tidegate.agent.config import TEMPORARY_TOKEN_ENV
    from tidegate.control.tokens import TOKEN_ENV, TOKEN_FILE_ENV, given_token, write_private

    token = given_token(flag_token, flag_file, env, _warn)
    if flag_file is not None:
        env[TOKEN_FILE_ENV] = os.path.abspath(flag_file)
    elif token is not None and (flag_token is not None or not env.get(TOKEN_FILE_ENV, "").strip()):
        folder = Path(tempfile.mkdtemp(prefix="tidegate-token-"))  # 0700
        write_private(folder / "token", token + "\n")
        env[TOKEN_FILE_ENV] = str(folder / "token")
        env[TEMPORARY_TOKEN_ENV] = f"{os.getpid()}:{folder / 'token'}"  # exec keeps the pid: the program is this process
    env.pop(TOKEN_ENV, None)


def _remove_temporary_token(env: Mapping[str, str]) -> None:
    from tidegate.agent.config import TEMPORARY_TOKEN_ENV, remove_temporary_token

    remove_temporary_token(env.get(TEMPORARY_TOKEN_ENV, ""))


def _warn(message: str) -> None:
    print(f"tidegate run: warning: {message}", file=sys.stderr)


def _prepend_path(entry: str, path: str) -> str:
    rest = [p for p in path.split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry, *rest])


def run(args: argparse.Namespace) -> int:
    from tidegate.agent.config import AgentConfig, AgentConfigError
    from tidegate.control.tokens import TokenError

    command: Sequence[str] = args.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("tidegate run: give the program to run after --, e.g. tidegate run --service orders -- uvicorn app:app", file=sys.stderr)
        return 2
    env: MutableMapping[str, str] = agent_env(
        os.environ,
        {
            "TIDEGATE_SERVICE": args.service,
            "TIDEGATE_TAG": args.tag,
            "TIDEGATE_CONTROL": args.control,
            "TIDEGATE_CA": args.ca,
            "TIDEGATE_ADMIN_PORT": args.admin_port,
            "TIDEGATE_ADMIN_HOST": args.admin_host,
        },
    )
    try:
        pass_token_as_file(env, args.token, args.token_file)
        AgentConfig.from_env(env)
    except (AgentConfigError, TokenError) as error:
        print(f"tidegate run: {error}", file=sys.stderr)
        _remove_temporary_token(env)
        return 2
    if not _governable(command, env, allow=args.allow_ungoverned):
        _remove_temporary_token(env)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as error:
        print(f"tidegate run: cannot start {command[0]!r}: {error.strerror or error}", file=sys.stderr)
        _remove_temporary_token(env)
        return 127
    return 0  # not reached: exec replaced this process


def _governable(command: Sequence[str], env: Mapping[str, str], allow: bool) -> bool:
    """Whether the program may start: its Python can import tidegate (or that cannot be told),
    or `--allow-ungoverned` says to start it anyway (with a warning)."""
    from tidegate.agent.interpreter import refusal

    problem = refusal(command, env)
    if problem is None:
        return True
    if allow:
        print(problem.splitlines()[0] + " (--allow-ungoverned: starting it without the agent)", file=sys.stderr)
        return True
    print(problem, file=sys.stderr)
    return False
