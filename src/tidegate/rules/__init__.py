"""Rule documents (OpenSergo-shaped YAML/JSON) <-> the core's typed rules.

`load_documents(text)` parses YAML or JSON text into documents; `validate(doc)`
checks a document's envelope and, for a registered kind, its spec, raising
`RuleError` naming the document, the field and the reason. Kind parsers are
registered with `register_kind` by the modules that own each kind; this package
imports them all (`kinds.py`) before any of its modules is used, so `document`
never imports a kind module back (no import cycle).
"""

from tidegate.rules import kinds  # noqa: F401  (every built-in kind registers itself)
from tidegate.rules.document import (
    DocumentKey,
    document_key,
    load_documents,
    parse_kind,
    register_kind,
    registered_kinds,
    validate,
)

__all__ = [
    "DocumentKey",
    "document_key",
    "load_documents",
    "parse_kind",
    "register_kind",
    "registered_kinds",
    "validate",
]
