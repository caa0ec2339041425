"""The house measured from the source: function-local imports and the ones among them that
run back up, the largest files, the importers of pkcs11, and the doors to the token.

Used by tests/test_local_imports.py, and for the before/after table of issue 10
(docs/architecture-metrics.md)::

    python -m tests.archscan              # this checkout, as JSON
    python -m tests.archscan /tmp/before  # another checkout (e.g. the commit before issue 10)

Layers (highest first): the front ends (custody_cli, tui, and the CLI's old home
ceremonies.cli), then ceremonies, then custody. A function-local import "runs back up" when

* it imports a module of a higher layer;
* it imports one of the importer's own ancestor packages (the orchestrator in the package's
  ``__init__.py``), which stands above the modules it drives; or
* at module level it would close an import cycle: loading the target (with the package
  ``__init__`` files that loading runs) loads the importer.

All three mean that the importer sits below what it imports, and that the import was put in a
function to hide that from the import graph.
"""

from __future__ import annotations

import ast
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("custody", "ceremonies", "tui", "custody_cli", "custody_server", "custody_client")

# Higher number = higher layer. The longest prefix wins (ceremonies.cli was the CLI before
# issue 10 moved it to custody_cli).
LAYERS = {
    "custody": 0,
    "ceremonies": 1,
    "ceremonies.cli": 2,
    "tui": 2,
    "custody_cli": 2,
    "custody_server": 2,
    "custody_client": 2,
}


@dataclass(frozen=True)
class LocalImport:
    path: str  # relative to the checkout root
    line: int
    importer: str  # dotted module name of the file
    function: str  # the enclosing function (outer.inner for nested ones)
    target: str  # the module imported (the submodule, for `from P import submodule`)


@dataclass(frozen=True)
class _Source:
    root: Path
    path: Path
    rel: str
    module: str
    is_init: bool
    tree: ast.Module


def source_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> Iterator[Path]:
    for pkg in packages:
        if (root / pkg).is_dir():
            yield from sorted(p for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _sources(root: Path, packages: tuple[str, ...] = PACKAGES) -> Iterator[_Source]:
    for path in source_files(root, packages):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield _Source(
            root,
            path,
            str(path.relative_to(root)),
            ".".join(parts),
            path.name == "__init__.py",
            ast.parse(path.read_text(encoding="utf-8"), str(path)),
        )


def _is_module(root: Path, dotted: str) -> bool:
    p = root.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _targets(src: _Source, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement loads (a `from P import name` loads P.name when that
    is a module, else P)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        mod = node.module or ""
    else:
        base = src.module.split(".")
        drop = node.level - 1 if src.is_init else node.level  # a package's __init__ is itself
        base = base[: len(base) - drop] if drop else base
        mod = ".".join([*base, node.module] if node.module else base)
    out = []
    for a in node.names:
        sub = f"{mod}.{a.name}"
        out.append(sub if _is_module(src.root, sub) else mod)
    return out


def _visit_local(src: _Source, node: ast.AST, func: str | None, found: list[LocalImport]) -> None:
    for child in ast.iter_child_nodes(node):
        name = func
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = child.name if func is None else f"{func}.{child.name}"
        if func is not None and isinstance(child, ast.Import | ast.ImportFrom):
            for t in _targets(src, child):
                found.append(LocalImport(src.rel, child.lineno, src.module, func, t))
        _visit_local(src, child, name, found)


def local_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[LocalImport]:
    """Every import inside a function body in the first-party packages (one per name)."""
    found: list[LocalImport] = []
    for src in _sources(root, packages):
        _visit_local(src, src.tree, None, found)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _visit_module_level(src: _Source, body: list[ast.stmt], edges: set[str]) -> None:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            edges.update(_targets(src, node))
        elif isinstance(node, ast.If) and not _is_type_checking(node.test):
            _visit_module_level(src, node.body, edges)
            _visit_module_level(src, node.orelse, edges)
        elif isinstance(node, ast.Try):
            _visit_module_level(src, node.body, edges)
            for h in node.handlers:
                _visit_module_level(src, h.body, edges)
            _visit_module_level(src, node.orelse, edges)
            _visit_module_level(src, node.finalbody, edges)


def _ancestors(mod: str) -> set[str]:
    parts = mod.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def load_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """What loading each first-party module loads first-party: its module-level imports (not
    those under ``if TYPE_CHECKING:`` or in functions), plus the package ``__init__`` files
    that importing ``a.b.c`` runs (``a`` and ``a.b``), except the importer's own packages,
    which are loaded already."""
    raw: dict[str, set[str]] = {}
    for src in _sources(root, packages):
        _visit_module_level(src, src.tree.body, raw.setdefault(src.module, set()))
    mods = set(raw)
    return {
        k: {m for t in v for m in {t} | _ancestors(t)} & mods - _ancestors(k) - {k}
        for k, v in raw.items()
    }


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def _layer(mod: str) -> int | None:
    best: tuple[int, int] | None = None
    for prefix, layer in LAYERS.items():
        if mod == prefix or mod.startswith(prefix + "."):
            cand = (prefix.count("."), layer)
            best = cand if best is None or cand > best else best
    return None if best is None else best[1]


def runs_back_up(imp: LocalImport, graph: dict[str, set[str]]) -> str | None:
    """Why this function-local import points up, or None. *graph*: :func:`load_graph`."""
    lo, hi = _layer(imp.importer), _layer(imp.target)
    if lo is not None and hi is not None and hi > lo:
        return f"layer {lo} imports layer {hi}"
    if imp.importer.startswith(imp.target + "."):
        return "a module imports its own package's orchestrator (__init__)"
    loads = ({imp.target} | _ancestors(imp.target)) - _ancestors(imp.importer) - {imp.importer}
    if any(_reaches(graph, t, imp.importer) for t in loads if t in graph):
        return "at module level it would close an import cycle"
    return None


def per_package(imports: list[LocalImport]) -> dict[str, int]:
    """Function-local import statements counted per package (the importer's folder)."""
    c: Counter[str] = Counter(str(Path(p).parent) for p, _ in {(i.path, i.line) for i in imports})
    return dict(sorted(c.items()))


def largest_files(root: Path, n: int = 10) -> list[tuple[str, int]]:
    sizes = [
        (str(p.relative_to(root)), len(p.read_text(encoding="utf-8").splitlines()))
        for p in source_files(root)
    ]
    return sorted(sizes, key=lambda s: (-s[1], s[0]))[:n]


def pkcs11_importers(root: Path) -> list[str]:
    """The modules that import python-pkcs11."""
    return importers_of(root, "pkcs11")


def importers_of(root: Path, top: str) -> list[str]:
    """The first-party modules that import the top-level package *top* (or a submodule)."""
    out = []
    for src in _sources(root):
        for node in ast.walk(src.tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and any(
                t == top or t.startswith(top + ".")
                for t in (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""] * (node.level == 0)
                )
            ):
                out.append(src.rel)
                break
    return out


def token_doors(root: Path) -> dict[str, list[str]]:
    """The ways in to the token: functions named open_hsm and Deployment.open; the files
    outside custody/hsm that call the PKCS#11 adapter's open_hsm themselves; and the front
    ends' own _open helpers."""
    defs: list[str] = []
    direct: list[str] = []
    helpers: list[str] = []
    for src in _sources(root):
        for node in ast.walk(src.tree):
            if isinstance(node, ast.ClassDef) and node.name == "Deployment":
                defs += [
                    f"{src.rel}:Deployment.open"
                    for f in node.body
                    if isinstance(f, ast.FunctionDef) and f.name == "open"
                ]
            elif isinstance(node, ast.FunctionDef) and node.name == "open_hsm":
                defs.append(f"{src.rel}:open_hsm")
            elif (
                isinstance(node, ast.FunctionDef)
                and node.name == "_open"
                and src.rel.startswith(("custody_cli/", "ceremonies/cli/", "tui/"))
            ):
                helpers.append(f"{src.rel}:_open")
        text = src.path.read_text(encoding="utf-8")
        uses_adapter = "pkcs11_adapter" in text or "pkcs11.adapter" in text
        if not src.rel.startswith("custody/hsm/") and uses_adapter and "open_hsm(" in text:
            direct.append(src.rel)
    return {
        "open_hsm and Deployment.open definitions": defs,
        "files outside custody/hsm calling the adapter's open_hsm": direct,
        "front-end _open helpers": helpers,
    }


def report(root: Path) -> dict[str, object]:
    imps = local_imports(root)
    graph = load_graph(root)
    return {
        "house": str(root),
        "packages": [p for p in PACKAGES if (root / p).is_dir()],
        "largest_files": largest_files(root),
        "function_local_import_statements": len({(i.path, i.line) for i in imps}),
        "function_local_imports_per_package": per_package(imps),
        "function_local_imports_that_run_back_up": [
            f"{i.path}:{i.line} {i.function}() -> {i.target}: {why}"
            for i in imps
            if (why := runs_back_up(i, graph))
        ],
        "pkcs11_importers": pkcs11_importers(root),
        "sqlite3_importers": importers_of(root, "sqlite3"),
        "token_doors": token_doors(root),
    }


if __name__ == "__main__":
    print(json.dumps(report(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()), indent=2))
