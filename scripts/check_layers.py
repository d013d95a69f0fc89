"""The layers contract of ``autolabel/`` (ARCHITECTURE.md), checked with the standard library's ``ast``.

    python scripts/check_layers.py        # exit 1 and one line per violation

Every import counts, module-level or inside a function: a function-level import hides a cycle
from Python, not from this check. Three rules:

1. No import cycle between two modules of the package.
2. No import from a lower layer to a higher one (``LAYERS``, lowest first; a module's layer is
   the first pattern that matches its dotted name).
3. No module over ``MAX_LINES`` lines.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

PACKAGE = "autolabel"
MAX_LINES = 500

# lowest first; a module may import its own layer and the ones below it
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["errors", "detections", "progress", "runtime"]),
    ("formats and settings", ["formats", "formats.*", "config", "recipe", "ontology", "images", "preview"]),
    ("state", ["store", "runs", "studio.state", "studio.records", "workspace", "registry"]),
    ("stages", ["*"]),  # proposers, students, sampling, studio, train, evaluate, export, ...
    ("orchestration", ["loop", "loop_steps", "status", "report", "report_html"]),
    ("cli", ["cli", "cli.*"]),
]


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts]) if parts else PACKAGE


def _resolve(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, name: str, modules: set[str]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, name, is_package)
            # ``from autolabel.studio import state`` imports the module ``autolabel.studio.state``
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name and target != PACKAGE:
                yield Import(name, target, node.lineno)


def layer_of(name: str) -> int:
    short = name.removeprefix(PACKAGE + ".")
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch(short, p) for p in patterns if p != "*"):
            return index
    return next(i for i, (_, patterns) in enumerate(LAYERS) if "*" in patterns)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
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


def violations(root: Path) -> list[str]:
    shown = root.parent
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    problems: list[str] = []
    for name, path in files.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            problems.append(f"{path.relative_to(shown)}: {lines} lines (at most {MAX_LINES})")
        for imp in sorted(set(imports_of(path, name, modules)), key=lambda i: (i.line, i.target)):
            graph[name].add(imp.target)
            if layer_of(imp.target) > layer_of(name):
                problems.append(
                    f"{path.relative_to(shown)}:{imp.line}: {name} ({LAYERS[layer_of(name)][0]}) imports {imp.target} "
                    f"({LAYERS[layer_of(imp.target)][0]}), a higher layer"
                )
    for component in _cycles(graph):
        problems.append("import cycle: " + " <-> ".join(component))
    return problems


def main() -> int:
    root = Path(__file__).resolve().parents[1] / PACKAGE
    problems = violations(root)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
