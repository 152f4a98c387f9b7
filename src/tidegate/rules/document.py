"""The envelope every rule document shares, and the registry of kind parsers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from tidegate.errors import RuleError

DocumentKey = tuple[str, str, str]  # (namespace, kind, name)
KindParser = Callable[[Mapping[str, Any]], Any]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9.\-]{0,251}[a-z0-9])?$")
_parsers: dict[str, KindParser] = {}


def register_kind(kind: str, parser: KindParser) -> None:
    """Make `kind` known; `parser(document)` returns typed rules or raises RuleError."""
    _parsers[kind] = parser


def registered_kinds() -> frozenset[str]:
    return frozenset(_parsers)


def load_documents(text: str | bytes) -> list[dict[str, Any]]:
    """Parse YAML (one or more `---` documents) or JSON (an object or a list)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise RuleError(f"not UTF-8 text ({bad.reason} at byte {bad.start})") from None
    try:
        loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as bad:
        mark = getattr(bad, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(bad, "problem", None) or str(bad)
        raise RuleError(f"not valid YAML or JSON{where}: {problem}") from None
    documents: list[dict[str, Any]] = []
    for item in loaded:
        items = item if isinstance(item, list) else [item]
        for doc in items:
            if not isinstance(doc, dict):
                raise RuleError(f"a rule document must be a mapping, got {type(doc).__name__}")
            documents.append(doc)
    if not documents:
        raise RuleError("no rule document in the input")
    return documents


def document_key(document: Mapping[str, Any], default_namespace: str = "default") -> DocumentKey:
    """(namespace, kind, name) of a document whose envelope is valid."""
    metadata = document.get("metadata") or {}
    return (str(metadata.get("namespace") or default_namespace), str(document["kind"]), str(metadata["name"]))


def check_api_version(document: Mapping[str, Any], api_version: str) -> str:
    """For a kind's parser: the document's label (`kind/name`) once its apiVersion is `api_version`."""
    label = f"{document['kind']}/{document['metadata']['name']}"
    if document["apiVersion"] != api_version:
        raise RuleError(f"must be {api_version!r} for {document['kind']}", document=label, field="apiVersion")
    return label


def validate(document: Any) -> Any:
    """Check a document; return its typed form (None for kinds without a parser).

    Raises RuleError naming the document, the field and the reason."""
    if not isinstance(document, Mapping):
        raise RuleError(f"a rule document must be a mapping, got {type(document).__name__}")
    kind = document.get("kind")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    label = f"{kind or '?'}/{name or '?'}"
    if not isinstance(document.get("apiVersion"), str) or not document["apiVersion"]:
        raise RuleError("must be a non-empty string", document=label, field="apiVersion")
    if not isinstance(kind, str) or not kind:
        raise RuleError("must be a non-empty string", document=label, field="kind")
    if not isinstance(metadata, Mapping):
        raise RuleError("must be a mapping with a name", document=label, field="metadata")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleError(
            "must be lower-case letters, digits, '-' or '.', starting and ending with a letter or digit",
            document=label,
            field="metadata.name",
        )
    namespace = metadata.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not _NAME.match(namespace)):
        raise RuleError("must be a DNS-style name", document=label, field="metadata.namespace")
    if "spec" in document and not isinstance(document["spec"], Mapping):
        raise RuleError("must be a mapping", document=label, field="spec")
    return parse_kind(document)


def parse_kind(document: Mapping[str, Any]) -> Any:
    """Run the kind's parser; unknown kinds are refused so typos don't pass silently."""
    kind = document["kind"]
    parser = _parsers.get(kind)
    if parser is None:
        known = ", ".join(sorted(_parsers)) or "none yet"
        raise RuleError(f"unknown kind {kind!r} (known: {known})", document=f"{kind}/{document['metadata']['name']}", field="kind")
    return parser(document)


def dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
