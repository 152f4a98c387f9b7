"""Imported by Python at start-up because `tidegate run` put this directory first on PYTHONPATH.

It boots the tidegate agent, then runs the `sitecustomize` this one shadows (the
next one on sys.path), so a program's own site customization still runs. It must
never stop the program: every failure is logged and start-up goes on.

`boot_agent` is also how `tidegate.agent.otel_bridge` boots under
`opentelemetry-instrument`; importing this module under its package name (as
the bridge does) runs nothing. It imports only the standard library, so a
process the agent is off in pays nothing for it.
"""

import importlib.machinery
import importlib.util
import logging
import os
import sys


def boot_agent(where: str) -> None:
    """Boot the agent when `tidegate run` switched it on (TIDEGATE_AGENT=1); a failure is logged, never raised."""
    if os.environ.get("TIDEGATE_AGENT") != "1" or running_tidegate_command():
        return
    try:
        from tidegate.agent import boot

        boot.start()
    except ModuleNotFoundError as missing:
        log = logging.getLogger("tidegate")
        if missing.name == "tidegate":
            # `tidegate run` refuses this before the exec (unless --allow-ungoverned), so it is seen
            # only then, or in another Python the program started: one line, no traceback.
            log.error(
                "tidegate: agent not loaded %s: this Python (%s) cannot import tidegate; the program runs without it", where, sys.executable
            )
        else:
            log.exception("tidegate: agent failed to boot %s; the program runs without it", where)
    except Exception:  # the agent must never break the program it is loaded into
        logging.getLogger("tidegate").exception("tidegate: agent failed to boot %s; the program runs without it", where)


#: `python -m NAME` of the tidegate command (`tidegate.demo.services.*` are apps: they are governed).
_COMMAND_MODULES = frozenset({"tidegate", "tidegate.__main__", "tidegate.cli"})


def running_tidegate_command(argv: list[str] | None = None) -> bool:
    """Whether this process is the `tidegate` command itself (`python -m tidegate ...` or the
    `tidegate` script), from the interpreter's own command line (`sys.orig_argv`). In an injected
    pod its environment carries the agent's switch to whatever runs there, the preStop's `python -m
    tidegate offline` or an operator's `tidegate status` too; the command is never governed."""
    args = list(sys.orig_argv if argv is None else argv)[1:]
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--check-hash-based-pycs":
            index += 1  # its value
            continue
        if arg.startswith("--") and arg != "--":
            continue
        if arg == "--" or not arg.startswith("-") or arg == "-":
            script = arg if arg != "--" else (args[index] if index < len(args) else "")
            return os.path.basename(script) == "tidegate"
        letters = arg[1:]
        for position, letter in enumerate(letters):
            rest = letters[position + 1 :]
            if letter == "m":
                module = rest or (args[index] if index < len(args) else "")
                return module in _COMMAND_MODULES
            if letter == "c":
                return False
            if letter in "XW":  # an option with a value, attached or next
                index += 0 if rest else 1
                break
    return False


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[__name__] = module  # the shadowed module is the program's `sitecustomize` from now on
        spec.loader.exec_module(module)
    except Exception:  # a broken sitecustomize would have been reported by Python; report it likewise
        logging.getLogger("tidegate").exception("tidegate: the next sitecustomize on sys.path failed")


if __name__ == "sitecustomize":  # Python's start-up, not `otel_bridge` importing `boot_agent`
    boot_agent("at start-up")
    _chain()
