"""The shape of the package: no import cycles, no oversized files, suites validate without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmark"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its file (top level, functions, TYPE_CHECKING).

    An import of ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``: those count too, except the
    packages ``module`` itself lives in (Python has started initializing them before ``module`` runs).
    """
    is_package = path.name == "__init__.py"
    own_package = module if is_package else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = own_package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    ancestors = {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
    out: set[str] = set()
    for target in targets:
        if target not in known:
            continue
        out.add(target)
        parts = target.split(".")
        out.update(p for p in (".".join(parts[:k]) for k in range(1, len(parts)))
                   if p in known and p not in ancestors and p != module)
    out.discard(module)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(p, m, known) for m, p in modules.items()}


def test_no_import_cycles_between_modules() -> None:
    graph = _graph()
    assert graph["benchmark.runner.execute"] >= {"benchmark.runner.plan", "benchmark.evaluations.base"}
    assert _cycles(graph) == []


def _room(module: str) -> str:
    """The top-level room of a module: ``benchmark.runner.plan`` -> ``runner``, ``benchmark.store`` -> ``store``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_cycles_between_packages() -> None:
    # Dependencies point down between the rooms too (suite/, evaluations/, runner/, report/, ...).
    rooms: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        rooms.setdefault(_room(module), set()).update(_room(t) for t in targets if _room(t) != _room(module))
    assert _cycles(rooms) == []
    assert "evaluations" not in rooms["suite"] or "suite" not in rooms["evaluations"]
    assert "report" not in rooms["evaluations"] and "runner" not in rooms["evaluations"]
    assert "attacks" not in rooms["report"] and "store" not in rooms["attacks"]


def test_the_cycle_check_finds_cycles(tmp_path: Path) -> None:
    # The checker itself: a function-local import that closes a circle is found.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    pkg = tmp_path / "benchmark"
    pkg.mkdir()
    (pkg / "x.py").write_text("def f():\n    from benchmark.y import g\n")
    (pkg / "y.py").write_text("from benchmark import x\n")
    known = {"benchmark", "benchmark.x", "benchmark.y"}
    assert "benchmark.y" in _imports(pkg / "x.py", "benchmark.x", known)
    assert "benchmark.x" in _imports(pkg / "y.py", "benchmark.y", known)


def test_no_file_over_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 40
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}, "split these by responsibility"


_NO_TORCH = """
import sys
from benchmark.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "torchvision", "robustbench", "pyautoattack", "autoattack", "ray", "pandas",
                           "matplotlib") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
sys.exit(rc)
"""


@pytest.mark.parametrize("args", [["validate", *map(str, sorted((ROOT / "suites").glob("*.yaml")))], ["ls"],
                                  ["ls", "evaluations"]], ids=["validate", "ls", "ls-evaluations"])
def test_validate_and_ls_import_no_torch(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY: \n" in proc.stdout, proc.stdout
    if args[0] == "validate":
        assert proc.stdout.count(": ok (") == len(args) - 1
