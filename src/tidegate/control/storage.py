"""Durable state of the control plane: rules with their history, service names,
and the global revision counter (the tokens are files beside it: `tidegate.control.tokens`).

`Storage` is the interface a backend implements (SQLite here; an etcd backend
can follow). Instances are not stored: they are ephemeral, leased by heartbeat.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tidegate.control.tokens import new_token as new_token  # where the demo and benches find it
from tidegate.core.rulebook import RuleKey, StoredRule


@dataclass(frozen=True, slots=True)
class RuleRevision:
    """One entry of a rule's history: a write ("put") or a removal ("delete")."""

    rule: StoredRule
    op: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.rule.to_dict(), "op": self.op}


class Storage(Protocol):
    """What the control plane persists. Every method is one atomic step."""

    def revision(self) -> int: ...

    def next_revision(self) -> int:
        """Increment the global revision counter and return the new value."""
        ...

    def services(self) -> list[str]: ...

    def add_service(self, name: str) -> None: ...

    def rules(self) -> list[StoredRule]: ...

    def rule(self, key: RuleKey) -> StoredRule | None: ...

    def history(self, key: RuleKey) -> list[RuleRevision]:
        """Newest first."""
        ...

    def put_rules(self, documents: list[tuple[RuleKey, Mapping[str, Any]]]) -> list[StoredRule]:
        """Write every document as a new revision, all or nothing."""
        ...

    def delete_rule(self, key: RuleKey) -> StoredRule:
        """Remove the rule in force; the returned rule carries the deletion's revision."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
INSERT OR IGNORE INTO counter (id, revision) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS services (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS rules (
    namespace TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    revision INTEGER NOT NULL, document TEXT NOT NULL,
    PRIMARY KEY (namespace, kind, name)
);
CREATE TABLE IF NOT EXISTS rule_history (
    namespace TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    revision INTEGER NOT NULL, op TEXT NOT NULL, document TEXT NOT NULL,
    PRIMARY KEY (namespace, kind, name, revision)
);
"""


class SqliteStorage:
    """`Storage` in one SQLite file (WAL) under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # One connection, used from the event loop's thread only; autocommit, with
        # explicit transactions where several rows must change together.
        self._db = sqlite3.connect(self.data_dir / "control.sqlite3", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def revision(self) -> int:
        return int(self._db.execute("SELECT revision FROM counter WHERE id = 1").fetchone()[0])

    def next_revision(self) -> int:
        row = self._db.execute("UPDATE counter SET revision = revision + 1 WHERE id = 1 RETURNING revision").fetchone()
        return int(row[0])

    def services(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM services ORDER BY name")]

    def add_service(self, name: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO services (name) VALUES (?)", (name,))

    def rules(self) -> list[StoredRule]:
        rows = self._db.execute("SELECT namespace, kind, name, revision, document FROM rules ORDER BY namespace, kind, name")
        return [_rule(row) for row in rows]

    def rule(self, key: RuleKey) -> StoredRule | None:
        row = self._db.execute(
            "SELECT namespace, kind, name, revision, document FROM rules WHERE namespace = ? AND kind = ? AND name = ?", key
        ).fetchone()
        return _rule(row) if row else None

    def history(self, key: RuleKey) -> list[RuleRevision]:
        rows = self._db.execute(
            "SELECT namespace, kind, name, revision, document, op FROM rule_history"
            " WHERE namespace = ? AND kind = ? AND name = ? ORDER BY revision DESC",
            key,
        )
        return [RuleRevision(_rule(row[:5]), row[5]) for row in rows]

    def put_rules(self, documents: list[tuple[RuleKey, Mapping[str, Any]]]) -> list[StoredRule]:
        written: list[StoredRule] = []
        with self._transaction():
            for key, document in documents:
                revision = self.next_revision()
                text = json.dumps(document, sort_keys=True)
                self._db.execute(
                    "INSERT OR REPLACE INTO rules (namespace, kind, name, revision, document) VALUES (?, ?, ?, ?, ?)",
                    (*key, revision, text),
                )
                self._db.execute(
                    "INSERT INTO rule_history (namespace, kind, name, revision, op, document) VALUES (?, ?, ?, ?, 'put', ?)",
                    (*key, revision, text),
                )
                written.append(StoredRule(*key, revision=revision, document=json.loads(text)))
        return written

    def delete_rule(self, key: RuleKey) -> StoredRule:
        with self._transaction():
            current = self.rule(key)
            if current is None:
                raise KeyError(key)
            revision = self.next_revision()
            self._db.execute("DELETE FROM rules WHERE namespace = ? AND kind = ? AND name = ?", key)
            self._db.execute(
                "INSERT INTO rule_history (namespace, kind, name, revision, op, document) VALUES (?, ?, ?, ?, 'delete', ?)",
                (*key, revision, json.dumps(current.document, sort_keys=True)),
            )
        return StoredRule(*key, revision=revision, document=current.document)

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._db.execute("COMMIT" if error is None else "ROLLBACK")


def _rule(row: tuple[Any, ...]) -> StoredRule:
    namespace, kind, name, revision, document = row
    return StoredRule(namespace, kind, name, revision=int(revision), document=json.loads(document))


def default_data_dir() -> Path:
    """Where the control plane keeps its state unless `--data` says otherwise."""
    import platformdirs

    return Path(platformdirs.user_data_dir("tidegate"))
