"""`make lint`: no import cycle between rtnb's modules, then import-linter's layer contracts.

A cycle is a set of modules that import each other, directly or through others, counting the
imports inside functions (a lazy import that only hides a cycle is still a cycle) and not
those under ``if TYPE_CHECKING:`` (annotations only). The contracts are in pyproject.toml
(``[tool.importlinter]``): the core imports no plotting, the bottom layers import no frame.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp


def cycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True)
    adjacency = {m: sorted(x for x in graph.find_modules_directly_imported_by(m)
                           if x == package or x.startswith(package + "."))
                 for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
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

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for module in adjacency:
        if module not in index:
            visit(module)
    return found


def main() -> int:
    """Print the cycles and the contracts; exit 1 if any is broken."""
    found = cycles("rtnb")
    for component in found:
        print(f"import cycle between {len(component)} modules: {', '.join(component)}")
    if not found:
        print("no import cycle between rtnb's modules")
    lint = Path(sys.executable).with_name("lint-imports")
    contracts = subprocess.run([str(lint), "--no-cache"], check=False)
    return 1 if found or contracts.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
