"""Way (b)'s self-contained agent: `tidegate k8s copy-agent DIR` copies tidegate's package and a
private copy of the libraries its in-process agent imports, `tidegate._vendor`.

The app's venv may hold other versions of httpx, PyYAML, prometheus_client, wrapt (or none of
them); importing them from the app's site-packages would run the agent on versions it was never
tested with, and importing ours under their own names would hand the app our versions. So the
copies live under `tidegate._vendor.<name>`, and every import of a vendored name in the copied
files is rewritten to it (the `ast` finds them, so docstrings and comments stay as they are):
`import httpx` becomes `from tidegate._vendor import httpx`, `from yaml.nodes import X` becomes
`from tidegate._vendor.yaml.nodes import X`, and a module named by a string to `import_module`,
`__import__` or `importlib.resources.files` gets the prefix too (certifi finds its bundle so).
`sys.modules["httpx"]` stays the app's. Two exceptions:
- an instrumentor (`tidegate/agent/instrumentation/<lib>.py`) imports `<lib>` unrewritten: it
  patches the app's library, not ours;
- compiled extension modules are left out (wrapt and PyYAML run their pure-Python code): the
  agent image's Python need not be the app's, and wrapt's C code imports `wrapt.exceptions` by
  its plain name, which would be the app's wrapt.

No runtime shim is needed: the copy is plain Python that imports what it was rewritten to.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import re
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

#: What the in-process agent imports besides the standard library and the libraries it patches;
#: their own requirements are vendored with them (`closure`). The control plane's Starlette and
#: uvicorn, the gateway's uvloop and httptools and the CLI's rich never run in the app's process.
AGENT_REQUIREMENTS = ("httpx", "PyYAML", "prometheus_client", "wrapt", "platformdirs")
VENDOR = "tidegate._vendor"
#: httpx's command line: importing it would import the app's click, rich and pygments, if it has them.
LEFT_OUT = frozenset({"httpx/_main.py"})
#: Calls whose first argument names a module as a string (dynamic imports, package resources).
_NAMING_CALLS = frozenset({"import_module", "__import__", "files"})
_COMPILED = tuple({*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd"})


class VendorError(RuntimeError):
    """The copy cannot be made; the message says what is missing or not understood."""


def closure(requirements: Iterable[str] = AGENT_REQUIREMENTS) -> list[importlib.metadata.Distribution]:
    """The installed distributions `requirements` name, with every installed requirement of theirs
    that no extra asks for (one whose environment marker rules it out is simply not installed)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = list(requirements)
    while pending:
        name = _canonical(pending.pop())
        if name in found:
            continue
        try:
            found[name] = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if name in {_canonical(r) for r in AGENT_REQUIREMENTS}:
                raise VendorError(f"the agent needs {name}, which this Python cannot find") from None
            continue
        for requirement in found[name].requires or []:
            if "extra" not in requirement.partition(";")[2]:
                pending.append(requirement)
    return list(found.values())


def copy_agent(package: Path, target: Path) -> dict[str, str]:
    """Copy the tidegate package at `package` into `target`/tidegate with its vendored libraries,
    imports rewritten; the vendored distributions' versions by name."""
    copied = target / "tidegate"
    shutil.copytree(package, copied, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "_vendor"))
    vendor = copied / "_vendor"
    if vendor.exists():
        shutil.rmtree(vendor)  # an earlier copy's: what is vendored now replaces it whole
    vendor.mkdir()
    versions: dict[str, str] = {}
    names: set[str] = set()
    for distribution in closure():
        versions[distribution.metadata["Name"]] = distribution.version
        for file in distribution.files or []:
            path = PurePosixPath(str(file))
            top = path.parts[0]
            if top == ".." or "__pycache__" in path.parts or str(path) in LEFT_OUT or path.name.endswith(_COMPILED):
                continue
            if not top.endswith((".dist-info", ".pth")):  # the dist-info comes along for its license
                names.add(top.removesuffix(".py"))
            destination = vendor / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(str(file.locate())), destination)
    listing = "\n".join(f"    {name!r}: {version!r}," for name, version in sorted(versions.items()))
    (vendor / "__init__.py").write_text(
        f'"""What `tidegate k8s copy-agent` vendored for the in-process agent (tidegate/k8s/vendor.py)."""\n\n'
        f"VERSIONS = {{\n{listing}\n}}\n"
    )
    vendored = frozenset(names)
    for source in copied.rglob("*.py"):
        keep = frozenset({source.stem}) if source.parent == copied / "agent" / "instrumentation" else frozenset()
        text = source.read_text(encoding="utf-8")
        changed = rewrite(text, vendored - keep)
        if changed != text:
            source.write_text(changed, encoding="utf-8")
    return versions


def rewrite(source: str, names: frozenset[str]) -> str:
    """`source` with its imports of `names` (top-level module names) made imports of their copies
    under tidegate._vendor."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise VendorError(f"cannot read {error.filename or 'a file'} to rewrite its imports: {error}") from None
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    lines = source.splitlines(keepends=True)

    def offset(lineno: int, col: int) -> int:  # ast's columns count UTF-8 bytes
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())

    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _top(node.module) in names:
            start = offset(node.lineno, node.col_offset)
            found = re.compile(r"from\s+" + re.escape(node.module).replace(r"\.", r"\s*\.\s*")).match(source, start)
            if found is None:
                raise VendorError(f"cannot rewrite line {node.lineno}: {lines[node.lineno - 1].strip()}")
            edits.append((start, found.end(), f"from {VENDOR}.{node.module}"))
        elif isinstance(node, ast.Import) and any(_top(alias.name) in names for alias in node.names):
            assert node.end_lineno is not None and node.end_col_offset is not None
            text = "; ".join(_import(alias, names) for alias in node.names)
            edits.append((offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset), text))
        elif isinstance(node, ast.Call) and node.args and _called(node.func) in _NAMING_CALLS:
            named = _named_module(node.args[0])
            if named is not None and _top(named) in names:
                start = offset(node.args[0].lineno, node.args[0].col_offset)
                quote = re.compile(r"[A-Za-z]*('''|\"\"\"|'|\")").match(source, start)
                if quote is not None:
                    edits.append((quote.end(), quote.end(), VENDOR + "."))
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


def _import(alias: ast.alias, names: frozenset[str]) -> str:
    if _top(alias.name) not in names:
        return f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
    if "." not in alias.name:
        return f"from {VENDOR} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
    if alias.asname:
        return f"import {VENDOR}.{alias.name} as {alias.asname}"
    # `import a.b` imports a.b and binds a: the same for the copy, bound to the same name
    return f"import {VENDOR}.{alias.name}; from {VENDOR} import {_top(alias.name)}"


def _named_module(node: ast.expr) -> str | None:
    """The module name a string argument starts with (an f-string's literal head counts)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str) and "." in head.value:
            return head.value
    return None


def _called(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _canonical(requirement: str) -> str:
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else requirement
