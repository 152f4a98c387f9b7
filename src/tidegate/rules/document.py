"""The envelope every rule document shares, and the registry of kind parsers."""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from tidegate.errors import RuleError
from tidegate.rules import limits

DocumentKey = tuple[str, str, str]  # (namespace, kind, name)
KindParser = Callable[[Mapping[str, Any]], Any]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9.\-]{0,251}[a-z0-9])?$")
_parsers: dict[str, KindParser] = {}


def register_kind(kind: str, parser: KindParser) -> None:
    """Make `kind` known; `parser(document)` returns typed rules or raises RuleError."""
    _parsers[kind] = parser


def registered_kinds() -> frozenset[str]:
    return frozenset(_parsers)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader, bounded: nesting, nodes once aliases are expanded, no duplicate keys.

    Depth is checked while composing (before PyYAML's recursion could go deep),
    and an alias costs the size of what it names, so a few lines of nested
    aliases cannot expand to gigabytes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._deepest = 0
        self._nodes = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (nodes, height)

    def _charge(self, nodes: int, height: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > limits.MAX_NODES:
            raise _Refused(f"has more than {limits.MAX_NODES} nodes (YAML aliases expanded)", mark)
        self._deepest = max(self._deepest, self._depth + height)
        if self._deepest > limits.MAX_DEPTH:
            raise _Refused(f"nests mappings and lists more than {limits.MAX_DEPTH} deep", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                size = self._sizes.get(id(node))
                if size is None:
                    raise _Refused(f"alias *{event.anchor} refers to a node that contains it", event.start_mark)
                self._charge(size[0], size[1], event.start_mark)
            return super().compose_node(parent, index)
        mark = self.peek_event().start_mark
        self._depth += 1
        self._charge(1, 0, mark)
        before, deepest = self._nodes, self._deepest
        self._deepest = self._depth
        node = super().compose_node(parent, index)
        self._sizes[id(node)] = (self._nodes - before + 1, self._deepest - self._depth + 1)
        self._deepest = max(deepest, self._deepest)
        self._depth -= 1
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=False)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: PyYAML reports it
                if duplicate:
                    raise _Refused(f"has the key {key!r} twice in one mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


class _Refused(yaml.YAMLError):  # type: ignore[misc]
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _DuplicateKey(key)
        mapping[key] = value
    return mapping


def _no_constant(name: str) -> Any:
    raise RuleError(f"not valid JSON: {name} is not a JSON number")


def looks_like_json(text: str | bytes, content_type: str = "") -> bool:
    """JSON when the content type says so, or the text starts like an object or a list."""
    first = text.lstrip()[:1]
    return "json" in content_type.lower() or first in ("{", "[", b"{", b"[")


def load_documents(text: str | bytes, content_type: str = "") -> list[dict[str, Any]]:
    """Parse YAML (one or more `---` documents) or JSON (an object or a list) into documents.

    Bounded (`tidegate.rules.limits`): size, nesting depth, nodes once YAML
    aliases are expanded, documents; a key twice in one mapping is refused in
    both syntaxes. Raises RuleError saying what is wrong and where."""
    if len(text) > limits.MAX_BODY_BYTES:
        raise RuleError(f"is {len(text)} bytes; at most {limits.MAX_BODY_BYTES} are accepted")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise RuleError(f"not UTF-8 text ({bad.reason} at byte {bad.start})") from None
    loaded = _load_json(text) if looks_like_json(text, content_type) else _load_yaml(text)
    documents: list[dict[str, Any]] = []
    for item in loaded:
        items = item if isinstance(item, list) else [item]
        for doc in items:
            if not isinstance(doc, dict):
                raise RuleError(f"a rule document must be a mapping, got {type(doc).__name__}")
            documents.append(doc)
    if not documents:
        raise RuleError("no rule document in the input")
    if len(documents) > limits.MAX_DOCUMENTS_PER_REQUEST:
        raise RuleError(f"has {len(documents)} documents; at most {limits.MAX_DOCUMENTS_PER_REQUEST} are accepted at once")
    return documents


def _load_yaml(text: str) -> list[Any]:
    loader = None
    try:
        loader = _Loader(text)
        loaded = []
        while loader.check_data():
            document = loader.get_data()
            if document is not None:
                loaded.append(document)
        return loaded
    except yaml.YAMLError as bad:
        mark = getattr(bad, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(bad, "problem", None) or str(bad)
        raise RuleError(f"not valid YAML or JSON{where}: {problem}") from None
    except RecursionError:  # guarded by the depth bound; kept as a refusal all the same
        raise RuleError(f"nests mappings and lists more than {limits.MAX_DEPTH} deep") from None
    finally:
        if loader is not None:
            loader.dispose()


def _load_json(text: str) -> list[Any]:
    try:
        loaded = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RuleError:
        raise
    except json.JSONDecodeError as bad:
        raise RuleError(f"not valid JSON: {bad.msg} at line {bad.lineno}, column {bad.colno}") from None
    except _DuplicateKey as duplicate:
        raise RuleError(f"not valid rule JSON: the key {duplicate.args[0]!r} appears twice in one object") from None
    except RecursionError:
        raise RuleError(f"nests objects and arrays more than {limits.MAX_DEPTH} deep") from None
    except ValueError as bad:  # an integer of more digits than Python converts
        raise RuleError(f"not valid rule JSON: {bad}") from None
    _check_json_shape(loaded)
    return [loaded]


def _check_json_shape(value: Any) -> None:
    """Depth and node bounds of parsed JSON (its parser has no aliases; iterative, no recursion)."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > limits.MAX_NODES:
            raise RuleError(f"has more than {limits.MAX_NODES} values")
        if depth > limits.MAX_DEPTH:
            raise RuleError(f"nests objects and arrays more than {limits.MAX_DEPTH} deep")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def check_values(document: Mapping[str, Any], label: str) -> None:
    """Every value of a document within the bounds: string and key lengths, finite numbers of a
    sane magnitude, keys that are strings, JSON types (YAML dates pass, stored as text), the size."""
    stack: list[tuple[Any, str, int]] = [(document, "", 1)]
    nodes = 0
    while stack:
        value, path, depth = stack.pop()
        nodes += 1
        if depth > limits.MAX_DEPTH or nodes > limits.MAX_NODES:
            raise RuleError(f"nests more than {limits.MAX_DEPTH} deep or has more than {limits.MAX_NODES} values", document=label)
        if isinstance(value, Mapping):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise RuleError(f"keys must be strings, got {type(key).__name__} {key!r}", document=label, field=path or "(top level)")
                if len(key) > limits.MAX_KEY_CHARS:
                    raise RuleError(f"has a key of {len(key)} characters; at most {limits.MAX_KEY_CHARS}", document=label, field=path)
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(value))
        elif isinstance(value, str):
            if len(value) > limits.MAX_STRING_CHARS:
                raise RuleError(f"is {len(value)} characters long; at most {limits.MAX_STRING_CHARS}", document=label, field=path)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise RuleError(f"must be a finite number, got {value!r}", document=label, field=path)
            if abs(value) > limits.MAX_NUMBER:
                shown = f"{value:.3g}" if isinstance(value, float) else f"an integer of {len(str(abs(value)))} digits"
                raise RuleError(f"is out of range ({shown}); numbers are at most {limits.MAX_NUMBER:g} in size", document=label, field=path)
        elif isinstance(value, (datetime.date, datetime.datetime)):
            pass
        else:
            raise RuleError(f"holds a {type(value).__name__}, which a rule document cannot carry", document=label, field=path)
    size = len(dumps(document))
    if size > limits.MAX_DOCUMENT_BYTES:
        raise RuleError(f"is {size} bytes as JSON; at most {limits.MAX_DOCUMENT_BYTES} are accepted", document=label)


def document_key(document: Mapping[str, Any], default_namespace: str = "default") -> DocumentKey:
    """(namespace, kind, name) of a document whose envelope is valid."""
    metadata = document.get("metadata") or {}
    return (str(metadata.get("namespace") or default_namespace), str(document["kind"]), str(metadata["name"]))


def label_app(document: Mapping[str, Any], label: str) -> str:
    """The app OpenSergo's `metadata.labels.app` scopes the document to ("" when unset)."""
    labels = (document.get("metadata") or {}).get("labels")
    if labels is None:
        return ""
    if not isinstance(labels, Mapping):
        raise RuleError("must be a mapping of label names to values", document=label, field="metadata.labels")
    app = labels.get("app")
    if app is None:
        return ""
    if not isinstance(app, str) or not app:
        raise RuleError("must be a non-empty service name", document=label, field="metadata.labels.app")
    return app


def scoped_app(document: Mapping[str, Any], label: str, selector_app: str) -> str:
    """The one app a document applies to: `spec.selector.app` and/or `metadata.labels.app` (OpenSergo's
    way; its control plane reads only the label), which must agree when both are set; "" for every app."""
    app = label_app(document, label)
    if app and selector_app and app != selector_app:
        raise RuleError(
            f"names app {app!r} but spec.selector.app names {selector_app!r}: give one, or the same in both",
            document=label,
            field="metadata.labels.app",
        )
    return selector_app or app


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
    check_values(document, label)
    try:
        return parse_kind(document)
    except RuleError:
        raise
    except (ArithmeticError, RecursionError, TypeError, ValueError) as bad:  # a value no check above foresaw
        raise RuleError(f"cannot be read: {type(bad).__name__}: {bad}", document=label) from None


def parse_kind(document: Mapping[str, Any]) -> Any:
    """Run the kind's parser; unknown kinds are refused so typos don't pass silently."""
    kind = document["kind"]
    parser = _parsers.get(kind)
    if parser is None:
        known = ", ".join(sorted(_parsers)) or "none yet"
        raise RuleError(f"unknown kind {kind!r} (known: {known})", document=f"{kind}/{document['metadata']['name']}", field="kind")
    return parser(document)


def dumps(document: Mapping[str, Any]) -> str:
    """Compact JSON (YAML dates as ISO text)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
