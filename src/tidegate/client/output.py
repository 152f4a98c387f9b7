"""How the CLI's listings print: a table for people, `--output json` for scripts.

Everything printed comes from the control plane, so from whoever could write
to it: every cell is plain text (rich markup in a name prints literally) with
control characters removed (an ANSI escape in a name cannot reach the
terminal). When stdout is not a terminal a table is as wide as its content:
no identifier, address or spec is cut or folded to fit 80 columns.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported when something is printed, to keep `tidegate --help` fast
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

#: C0 and C1 controls, DEL, and the Unicode bidirectional overrides and isolates
#: (which reorder what a terminal shows: "Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(value: object) -> str:
    """`value` as text a terminal shows as it is: control characters removed."""
    return _UNPRINTABLE.sub("", str(value))


def cell(value: object) -> Text:
    """A table cell (or title) that rich prints literally: no markup, no control characters."""
    from rich.text import Text

    return Text(clean(value))


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or json: one JSON document on stdout, for scripts",
    )


def print_json(data: Any) -> None:
    """One JSON document on stdout (ASCII: every control character escaped)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n")


def table(title: object = None) -> Table:
    """A table whose columns never cut a cell short with an ellipsis (long cells fold on a terminal)."""
    from rich.table import Table

    return Table(title=cell(title) if title is not None else None)


def add_column(grid: Table, header: str, justify: str = "left") -> None:
    grid.add_column(header, overflow="fold", justify=justify)  # type: ignore[arg-type]


def show(renderable: RenderableType, console: Console | None = None) -> None:
    """Print `renderable`; to something other than a terminal, at its full width."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update(max_width=10**7), renderable).maximum
        console = Console(width=max(width, 80), file=console.file, color_system=None, soft_wrap=False)
    console.print(renderable)


def say(console: Console, *parts: object) -> None:
    """A line of plain text (no markup read in it)."""
    from rich.text import Text

    console.print(Text(" ".join(clean(part) for part in parts)))
