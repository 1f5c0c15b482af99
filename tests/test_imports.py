"""Imports flow one way: no module under explorer/ imports (at any level, in any function) a module that imports
it back, directly or through others."""

import ast
from pathlib import Path

EXPLORER = Path(__file__).resolve().parent.parent / "explorer"


def _imports() -> dict[str, set[str]]:
    modules: dict[str, set[str]] = {}
    for path in EXPLORER.rglob("*.py"):
        name = ".".join(path.relative_to(EXPLORER.parent).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("explorer"):
                found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("explorer")}
        modules[name] = found
    return {name: {other for other in found if other in modules and other != name} for name, found in modules.items()}


def test_no_module_imports_one_that_imports_it_back():
    imports, circles = _imports(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(imports[module]):
            if state.get(other) == 1:
                circles.append(" -> ".join(path[path.index(other):] + [module, other]))
            elif other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in sorted(imports):
        if module not in state:
            visit(module, [])
    assert imports["explorer.guard"] >= {"explorer.config", "explorer.kv", "explorer.params"}
    assert not circles, circles
