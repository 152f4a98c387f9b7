"""Where the CLI finds the control plane and its token when not told."""

from __future__ import annotations

import argparse
import os

DEFAULT_CONTROL = "http://127.0.0.1:7070"


def control_url(given: str | None) -> str:
    return given or os.environ.get("TIDEGATE_CONTROL") or DEFAULT_CONTROL


def token(given: str | None) -> str | None:
    """--token, else $TIDEGATE_TOKEN, else the token a local control plane stored."""
    if given:
        return given
    if os.environ.get("TIDEGATE_TOKEN"):
        return os.environ["TIDEGATE_TOKEN"]
    from tidegate.control.storage import default_data_dir

    path = default_data_dir() / "token"
    try:
        return path.read_text().strip() or None
    except OSError:  # no local control plane, or not ours to read
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control", default=None, metavar="URL", help=f"control plane URL (default $TIDEGATE_CONTROL or {DEFAULT_CONTROL})"
    )
    parser.add_argument("--token", default=None, help="bearer token (default $TIDEGATE_TOKEN, else the local control plane's token file)")
