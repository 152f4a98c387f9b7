"""Imported by Python at start-up because `tidegate run` put this directory first on PYTHONPATH.

It boots the tidegate agent, then runs the `sitecustomize` this one shadows (the
next one on sys.path), so a program's own site customization still runs. It must
never stop the program: every failure is logged and start-up goes on.
"""

import importlib.machinery
import importlib.util
import logging
import os
import sys


def _boot() -> None:
    if os.environ.get("TIDEGATE_AGENT") != "1":
        return
    try:
        from tidegate.agent import boot

        boot.start()
    except Exception:  # the agent must never break the program it is loaded into
        logging.getLogger("tidegate").exception("tidegate: agent failed to boot; the program runs without it")


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


_boot()
_chain()
