"""The architecture of docs/architecture.md, checked: imports point down the layers only,
there is no import cycle inside ``mlrunner/`` (lazy imports inside functions included), no
module is over the size limit, and no module re-exports through a module ``__getattr__``."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PKG = ROOT / "mlrunner"
MAX_LINES = 520

# Lowest first. A module may import its own package, anything in a lower layer, and the
# leaves; never a higher layer, nor a sibling package of its own layer.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "status", "events", "procs", "logtext"),  # leaves: may import each other, acyclically
    ("spec",),
    ("plan",),
    ("ledger", "snapshot", "expdir", "resources", "envinfo", "notify"),  # storage, files, side by side
    ("backends",),
    ("examine",),
    ("run",),
    ("ui",),
    ("cli",),
]
LEAVES = LAYERS[0]


def module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_of(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every mlrunner module ``name`` imports, wherever the import stands in the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t == "mlrunner" or t.startswith("mlrunner."):
                while t not in known and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in known and t != name:
                    found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(name: str) -> int:
    t = top(name)
    for i, group in enumerate(LAYERS):
        if t in group:
            return i
    raise AssertionError(f"{name}: package '{t}' is in no layer of tests/test_architecture.py")


def test_every_module_has_a_layer() -> None:
    for name in modules():
        if name not in ("mlrunner", "mlrunner.__main__"):
            layer(name)


def test_imports_point_down_only() -> None:
    wrong = []
    for name, deps in graph().items():
        if name in ("mlrunner", "mlrunner.__main__"):
            continue
        for dep in deps:
            if dep == "mlrunner" or top(dep) == top(name):
                continue
            up = layer(dep) > layer(name)
            sideways = layer(dep) == layer(name) and layer(name) != 0
            if up or sideways:
                wrong.append(f"{name} imports {dep} ({'up' if up else 'sideways'})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    g = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g[n]):
            # a package's __init__ re-exporting its own modules is not a cycle of design
            if n == d.rsplit(".", 1)[0]:
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_the_cli() -> None:
    for name, deps in graph().items():
        if top(name) != "cli" and name != "mlrunner.__main__":
            assert not any(top(d) == "cli" for d in deps), name


def test_no_reexport_shims() -> None:
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        shims = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
        assert not shims, f"{name} has a module __getattr__"


def test_modules_are_small_enough_to_read_whole() -> None:
    long = {name: n for name, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_command_modules_keep_their_annotations_evaluated() -> None:
    """typer reads every command's signature at each start; a string annotation (from
    ``from __future__ import annotations``) costs a compile and an eval there."""

    def imports_from(name: str) -> list[ast.ImportFrom]:
        tree = ast.parse((PKG / "cli" / f"{name}.py").read_text())
        return [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]

    registered = {
        alias.name for node in imports_from("app") if node.module == "mlrunner.cli" for alias in node.names
    }
    assert registered >= {"cancel", "failures", "recover", "results", "ui"}
    lazy = [
        name
        for name in sorted(registered | {"app"})
        if any(n.module == "__future__" for n in imports_from(name))
    ]
    assert not lazy, f"string annotations slow every start: {lazy}"
