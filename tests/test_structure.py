"""The package's shape: no module imports, however indirectly, a module that imports it."""

import ast
from pathlib import Path

import noisefind

PACKAGE = Path(noisefind.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at any depth (deferred imports included)."""
    modules = {f.stem for f in PACKAGE.glob("*.py")}
    graph = {}
    for module in sorted(modules):
        deps = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "noisefind":
                    deps |= {a.name for a in node.names if a.name in modules}
                elif node.module.startswith("noisefind."):
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names
                         if a.name.startswith("noisefind.")}
        graph[module] = deps - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_circle():
    graph = import_graph()
    assert {"train", "localize", "scan", "cli"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_training_does_not_know_the_layer_analyses():
    assert "localize" not in import_graph()["train"]
