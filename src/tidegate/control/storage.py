"""Durable state of the control plane: rules with their history, service names,
and the global revision counter (the tokens are files beside it: `tidegate.control.tokens`).

`Storage` is the interface a backend implements: SQLite here (the default), etcd
in `tidegate.control.etcd` (`--store etcd://...`). Instances are not stored: they are ephemeral, leased by heartbeat.
The data directory is its owner's only (0700) and so are the database files
(0600); a directory or file found open to others is closed at start, and said so.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tidegate.control.tokens import new_token as new_token  # where the demo and benches find it
from tidegate.core.rulebook import RuleKey, StoredRule

log = logging.getLogger("tidegate.control")

DATABASE = "control.sqlite3"
#: The database and the files SQLite keeps beside it (write-ahead log, shared memory).
DATABASE_FILES = (DATABASE, DATABASE + "-wal", DATABASE + "-shm", DATABASE + "-journal")
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class RuleRevision:
    """One entry of a rule's history: a write ("put") or a removal ("delete")."""

    rule: StoredRule
    op: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.rule.to_dict(), "op": self.op}


class StorageError(Exception):
    """The store cannot do what was asked: unreachable, misconfigured, or a request past
    what it takes. `status` is the HTTP status a request that met it is answered with."""

    def __init__(self, message: str, status: int = 503) -> None:
        self.status = status
        super().__init__(message)


class Storage(Protocol):
    """What the control plane persists. Every method is one atomic step; one that
    cannot reach the store raises StorageError."""

    def describe(self) -> str:
        """Which store this is, for `/v1/health` and the start-up line."""
        ...

    def problem(self) -> str | None:
        """Why the store cannot serve now, or None when it can."""
        ...

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

    def rollouts(self) -> dict[str, dict[str, Any]]:
        """Each service's saved rollout (tidegate.control.rollouts), by service."""
        ...

    def put_rollout(self, service: str, record: Mapping[str, Any] | None) -> None:
        """Save a service's rollout (None: forget it)."""
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
CREATE TABLE IF NOT EXISTS rollouts (service TEXT PRIMARY KEY, record TEXT NOT NULL);
"""


class SqliteStorage:
    """`Storage` in one SQLite file (WAL) under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        secure_data_dir(self.data_dir)
        # One connection, used from the event loop's thread only; autocommit, with
        # explicit transactions where several rows must change together.
        self._db = sqlite3.connect(self.data_dir / DATABASE, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def describe(self) -> str:
        return f"sqlite {self.data_dir / DATABASE}"

    def problem(self) -> str | None:
        return None  # a local file: its faults surface as the request's own error

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

    def rollouts(self) -> dict[str, dict[str, Any]]:
        return {row[0]: json.loads(row[1]) for row in self._db.execute("SELECT service, record FROM rollouts ORDER BY service")}

    def put_rollout(self, service: str, record: Mapping[str, Any] | None) -> None:
        if record is None:
            self._db.execute("DELETE FROM rollouts WHERE service = ?", (service,))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO rollouts (service, record) VALUES (?, ?)", (service, json.dumps(record, sort_keys=True))
            )

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


def secure_data_dir(data_dir: Path) -> None:
    """Make `data_dir` (0700) and its database file (0600) if missing; close an existing
    one that others may read or write, with a warning. SQLite gives the files it adds
    beside the database (-wal, -shm) the database file's mode."""
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=DIR_MODE)
    _restrict(data_dir, DIR_MODE, "data directory")
    database = data_dir / DATABASE
    if not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for name in DATABASE_FILES:
        path = data_dir / name
        if path.exists():
            _restrict(path, FILE_MODE, "database file")


def _restrict(path: Path, mode: int, what: str) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if not current & 0o077:
        return
    wanted = current & 0o700 | mode
    try:
        os.chmod(path, wanted)
    except OSError as error:
        log.warning("tidegate control: %s %s is open to other users (mode %04o) and could not be closed: %s", what, path, current, error)
        return
    log.warning("tidegate control: %s %s was open to other users (mode %04o); now %04o", what, path, current, wanted)


def default_data_dir() -> Path:
    """Where the control plane keeps its state unless `--data` says otherwise."""
    import platformdirs

    return Path(platformdirs.user_data_dir("tidegate"))
