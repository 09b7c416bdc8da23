"""The code's map holds: no import cycles, modules small enough to read in one sitting (or saying why not), one
privacy convention, and a docstring at the top of every module saying what it owns (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "modelrouter"
MAX_LINES = 400
# Said in a module's docstring when it is longer than MAX_LINES, followed by the reason.
LONG_MARKER = "Why this module is long:"
# The only leading-underscore modules: the version file, the compiled helpers' stub, and Python's own.
UNDERSCORED = {"__init__", "__main__", "_version", "_speedups"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    for path in SRC.rglob("*.c"):  # compiled helpers: importable, import nothing of ours
        found[".".join(path.relative_to(SRC.parent).with_suffix("").parts)] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _imports(module: str, path: Path) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its text (functions included), except under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # "from pkg import name": the submodule pkg.name if there is one, else pkg itself
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    graph = {m: (_imports(m, p) if p.suffix == ".py" else set()) for m, p in MODULES.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    """The check above can fail: a cycle through three modules, and one through a local import, are found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("def f():\n    from .b import x\n")
    assert any(isinstance(node, ast.ImportFrom) for node in ast.walk(tree))  # local imports are walked


@pytest.mark.parametrize("module", sorted(m for m, p in MODULES.items() if p.suffix == ".py"))
def test_module_says_what_it_owns_and_is_short_or_says_why(module: str) -> None:
    path = MODULES[module]
    text = path.read_text()
    docstring = ast.get_docstring(ast.parse(text)) or ""
    if path.name == "__init__.py" and not text.strip():
        pytest.fail(f"{module}: an empty package __init__ (say what the package holds)")
    assert docstring.strip(), f"{module}: no module docstring"
    lines = text.count("\n")
    if lines > MAX_LINES:
        assert LONG_MARKER in docstring, f"{module}: {lines} lines, and its docstring does not say why"


def test_one_privacy_convention() -> None:
    """No ``_private`` modules: a package's modules are named for what they hold, and its ``__init__`` says what
    it offers."""
    underscored = sorted(m for m, p in MODULES.items() if p.stem.startswith("_") and p.stem not in UNDERSCORED)
    assert underscored == []
