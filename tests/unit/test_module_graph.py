"""The node's modules import one way (issue 9): no import circle among offchain's modules, the
producer, repairer and alarm centre never import the Node (not even for type checking), and
each of them imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "chain", "store", "node", "camera", "evidence", "monitor", "ops")
PARTS = ("producer", "repair", "alarm_centre", "peer_client")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def resolve(current: str, is_package: bool, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = current.split(".") if is_package else current.split(".")[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in known else target)
    return [m for m in out if m in known]


def statements(body: list[ast.stmt], *, runtime_only: bool, nested: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements of a module body: at top level (inside try/if too), skipping
    `if TYPE_CHECKING:` blocks when `runtime_only`; with `nested`, also those inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found.append(stmt)
        elif isinstance(stmt, ast.If):
            if not (runtime_only and is_type_checking(stmt)):
                found += statements(stmt.body, runtime_only=runtime_only, nested=nested)
            found += statements(stmt.orelse, runtime_only=runtime_only, nested=nested)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *[h.body for h in stmt.handlers]):
                found += statements(block, runtime_only=runtime_only, nested=nested)
        elif nested and isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found += statements(stmt.body, runtime_only=runtime_only, nested=nested)
    return found


def graph(*, runtime_only: bool = True, nested: bool = False) -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / "offchain" / pkg).rglob("*.py")}
    files["offchain"] = ROOT / "offchain" / "__init__.py"
    known = set(files)
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        imports = statements(tree.body, runtime_only=runtime_only, nested=nested)
        edges[name] = {m for i in imports for m in resolve(name, path.name == "__init__.py", i, known) if m != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_circle_among_offchain_modules():
    edges = graph()
    assert "offchain.node.producer" in edges["offchain.node.node"]  # the graph sees real edges
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("part", PARTS)
def test_node_parts_never_import_the_node(part):
    edges = graph(runtime_only=False, nested=True)  # type-checking and function-local imports too
    assert "offchain.node.node" not in edges[f"offchain.node.{part}"]


@pytest.mark.parametrize("part", PARTS)
def test_each_part_imports_alone(part):
    done = subprocess.run([sys.executable, "-c", f"import offchain.node.{part}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
