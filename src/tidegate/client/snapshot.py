"""The on-disk copy of what the watch stream delivered: instances and rules.

Written atomically (temp file, then rename) so a crash never leaves half a
file; read at start when the control plane cannot be reached.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tidegate.core.directory import ServiceDirectory
from tidegate.core.rulebook import RuleBook, StoredRule


def write_snapshot(path: Path, directory: ServiceDirectory, rulebook: RuleBook, revision: int) -> None:
    data = {
        "revision": revision,
        "directory": directory.to_snapshot(),
        "rules": [rule.to_dict() for rule in rulebook.all()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def load_snapshot(path: Path, directory: ServiceDirectory, rulebook: RuleBook) -> int:
    """Apply the file to `directory` and `rulebook`; returns its revision.

    Raises ValueError (with the path) when the file is not a snapshot."""
    try:
        data: Any = json.loads(path.read_text())
        rules = [StoredRule.from_dict(item) for item in data["rules"]]
        revision = int(data["revision"])
        directory_data = data["directory"]
        if not isinstance(directory_data, dict):
            raise TypeError("'directory' is not an object")
        directory.load_snapshot(directory_data)  # parses every instance before applying any
    except (OSError, ValueError, KeyError, TypeError) as bad:
        raise ValueError(f"snapshot {path} is unreadable: {bad!r}") from None
    rulebook.replace(rules)
    return revision
