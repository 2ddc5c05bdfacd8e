"""The package's shape: sub-packages in layers, no import circle, no oversized module."""

import ast
from pathlib import Path

import noisefind

PACKAGE = Path(noisefind.__file__).parent
MAX_LINES = 600

# Each sub-package may import only those listed (and itself); the order is the pipeline's.
LAYERS = {
    "base": set(),
    "data": {"base"},
    "decide": {"base"},
    "models": {"base", "data"},
    "training": {"base", "data", "models"},
    "signals": {"base", "data", "models", "training", "decide"},
    "scanning": {"base", "data", "models", "training", "signals", "decide"},
    "bench": {"base", "data", "models", "training", "signals", "decide", "scanning", "analyses"},
    "analyses": {"base", "data", "models", "training", "signals", "decide"},
}


def modules() -> dict[str, Path]:
    """Dotted module name (without ``noisefind.``) -> file."""
    found = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "__init__"] = file
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (deferred imports included)."""
    known = modules()
    graph = {}
    for name, file in known.items():
        deps = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "noisefind":
                    deps |= {a.name for a in node.names if a.name in known}
                elif node.module.startswith("noisefind."):
                    target = node.module.removeprefix("noisefind.")
                    deps.add(target)
                    deps |= {f"{target}.{a.name}" for a in node.names
                             if f"{target}.{a.name}" in known}
            elif isinstance(node, ast.Import):
                deps |= {a.name.removeprefix("noisefind.") for a in node.names
                         if a.name.startswith("noisefind.")}
        graph[name] = deps - {name}
    return graph


def package_of(module: str) -> str:
    return module.split(".")[0]


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


def test_no_import_circle_between_modules():
    graph = import_graph()
    assert {"training.fit", "analyses.localize", "scanning.pipeline", "cli", "api"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_sub_packages_import_only_the_layers_below():
    wrong = []
    for module, deps in import_graph().items():
        home = package_of(module)
        if home not in LAYERS:
            continue  # api, cli and the package's face sit on top
        for dep in deps:
            if package_of(dep) not in LAYERS[home] | {home}:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the layers: " + ", ".join(sorted(wrong))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_training_does_not_know_the_analyses():
    for module, deps in import_graph().items():
        if package_of(module) == "training":
            assert not [d for d in deps if package_of(d) == "analyses"], module


def test_no_module_over_600_lines():
    long = {name: n for name, file in modules().items()
            if (n := len(file.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these: {long}"


def test_no_public_name_hides_a_sub_module():
    hidden = [name for name in noisefind.__all__ if name in modules()]
    assert not hidden, f"noisefind.{hidden[0]} hides the module of that name"
