"""The package layout is the architecture (docs/architecture.md): every public name comes from the top level,
imports between layers only point down, and no two modules import each other (directly or in a circle)."""
import ast
import importlib
from pathlib import Path

import sashimi_core

PACKAGE = Path(sashimi_core.__file__).parent
# layer -> the layers it may import (itself included). Function-level (lazy) imports count too.
ALLOWED = {
    "ops": {"ops"},
    "nn": {"ops", "nn"},
    "data": {"ops", "data"},
    "checkpoint": {"ops", "nn", "checkpoint"},
    "reference": {"ops", "nn", "checkpoint", "reference"},
    "generation": {"ops", "nn", "generation"},
    "evaluate": {"ops", "nn", "data", "checkpoint", "generation", "evaluate"},
    "train": {"ops", "nn", "data", "checkpoint", "generation", "evaluate", "train"},
}
RESEARCH_NAMES = ("S4Kernel", "S4Block", "Backbone", "cauchy", "backbone_from_reference", "WaveNet", "WaveNetConfig",
                  "SampleRNN", "SampleRNNConfig", "SaShiMi", "SaShiMiConfig", "PRESETS", "generate", "load_model",
                  "save_model", "mu_law_encode", "mu_law_decode")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of sashimi_core that `path` imports (absolute or relative, at any depth of the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sashimi_core"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("sashimi_core"):
                continue
            for alias in node.names:  # `from pkg import module` names a module
                sub = f"{module}.{alias.name}"
                found.add(sub if importlib.util.find_spec(module) and _is_module(sub) else module)
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):
        return False


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    return {_module_name(p): {m for m in _imports(p) if m != "sashimi_core"} for p in files}


def test_every_public_name_imports_from_the_top_level():
    for name in sashimi_core.__all__:
        assert getattr(sashimi_core, name) is not None, name
    missing = [n for n in RESEARCH_NAMES if n not in sashimi_core.__all__]
    assert not missing, f"export these from sashimi_core: {missing}"
    namespace = {}
    exec("from sashimi_core import *", namespace)  # noqa: S102 - what a user's star import gets
    assert set(sashimi_core.__all__) <= set(namespace)


def test_imports_point_down_the_layers():
    wrong = []
    for module, imported in _graph().items():
        layer = _layer(module)
        if layer == "__init__":
            continue
        assert layer in ALLOWED, f"{module}: a new top-level entry needs its place in ALLOWED and the docs"
        wrong += [f"{module} -> {m}" for m in imported if _layer(m) not in ALLOWED[layer]]
    assert not wrong, "imports that point up a layer:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    graph = _graph()
    graph = {m: {i for i in deps if i in graph and not m.startswith(i + ".")} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_playground_reaches_the_core_only_through_its_service_layer():
    ui = [p for p in (PACKAGE.parent / "playground").glob("ui_*.py")] + [PACKAGE.parent / "playground" / "app.py"]
    offenders = [p.name for p in ui if "sashimi_core" in p.read_text()]
    assert not offenders, f"UI modules that import sashimi_core directly: {offenders}"
