"""Every bound a rule document is held to, in one place (the README's "Limits" table lists them).

The control plane refuses what passes them (413 for a body, 400 for text that
is no documents, 422 naming the document and field otherwise); agents hold
stored documents to the same bounds, so nothing in force can exceed them.
"""

from __future__ import annotations

from tidegate.core import regex

#: Largest rule request body (YAML or JSON), in bytes: `POST` and `DELETE /v1/rules`.
MAX_BODY_BYTES = 1024 * 1024
#: Most documents in one request.
MAX_DOCUMENTS_PER_REQUEST = 500
#: Most documents in force in the store.
MAX_DOCUMENTS_IN_FORCE = 5000
#: Largest document, as stored (compact JSON), in bytes.
MAX_DOCUMENT_BYTES = 256 * 1024
#: Deepest nesting of mappings and lists in a body (a document's top level is 1).
MAX_DEPTH = 32
#: Most nodes (mappings, lists, scalars) in a body once YAML aliases are expanded.
MAX_NODES = 100_000
#: Longest string value, and longest mapping key, in characters.
MAX_STRING_CHARS = 8192
MAX_KEY_CHARS = 256
#: Largest magnitude of any number in a document (integers beyond it lose precision as JSON).
MAX_NUMBER = 1e15
#: Largest threshold, count or capacity a strategy may set.
MAX_QUANTITY = 1e9
#: Durations: zero, or from MIN_DURATION_S to MAX_DURATION_S.
MIN_DURATION_S = 1e-6
MAX_DURATION_S = 7 * 24 * 3600.0

# The regex engine's bounds (tidegate.core.regex), repeated here so the list is whole.
MAX_REGEX_CHARS = regex.MAX_PATTERN_CHARS
MAX_REGEX_REPEAT = regex.MAX_REPEAT
MAX_REGEX_NFA_NODES = regex.MAX_NFA_NODES
MAX_REGEX_INPUT_CHARS = regex.MAX_INPUT_CHARS
