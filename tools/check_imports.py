"""`make lint`: no import cycle, no private name of another package, import-linter's contracts.

A cycle is a set of modules that import each other, directly or through others, counting the
imports inside functions (a lazy import that only hides a cycle is still a cycle) and not
those under ``if TYPE_CHECKING:`` (annotations only). The contracts are in pyproject.toml
(``[tool.importlinter]``): the core imports no plotting, the bottom layers import no frame.
A private name (``_x``) or private module (``_mod``) may be imported only from inside the
package that owns it (``rtnb._net`` by anything in rtnb; ``rtnb.sources._runner`` only by
``rtnb.sources``; ``rtnb.windows.keys._x`` only by ``rtnb.windows``).
"""

from __future__ import annotations

import ast
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


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def private_imports(root: Path) -> list[str]:
    """``from a._b import c`` or ``from a.b import _c`` reaching into another package."""
    found = []
    for path in sorted(root.rglob("*.py")):
        me = _module(path, root)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module
                    and _inside(node.module, root.name)):
                continue
            segments = node.module.split(".")
            owner = next((".".join(segments[:i]) for i, s in enumerate(segments)
                          if s.startswith("_") and not s.startswith("__")), None)
            where = f"{path}:{node.lineno}: {me} imports"
            if owner is not None and not _inside(me, owner):
                found.append(f"{where} {node.module}, private to {owner}")
                continue
            source = root.parent.joinpath(*segments)
            for alias in node.names:
                name = alias.name
                if not name.startswith("_") or name.startswith("__"):
                    continue
                is_module = (source / name).is_dir() or (source / f"{name}.py").exists()
                package = node.module if source.is_dir() or is_module else \
                    node.module.rsplit(".", 1)[0]
                if not _inside(me, package):
                    found.append(f"{where} {node.module}.{name}, private to {package}")
    return found


def main() -> int:
    """Print the cycles and the contracts; exit 1 if any is broken."""
    found = cycles("rtnb")
    for component in found:
        print(f"import cycle between {len(component)} modules: {', '.join(component)}")
    if not found:
        print("no import cycle between rtnb's modules")
    private = private_imports(Path(__file__).resolve().parents[1] / "rtnb")
    for line in private:
        print(line)
    if not private:
        print("no module imports another package's private name")
    lint = Path(sys.executable).with_name("lint-imports")
    contracts = subprocess.run([str(lint), "--no-cache"], check=False)
    return 1 if found or private or contracts.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
