"""The architecture, read from the source: every import of every module in engine/ and
app/ (module level and inside functions, parsed with ast), checked against the layers
that engine/__init__.py describes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A module may import modules of its own layer or of a lower one, never a higher one.
LAYERS = {
    "engine": 0,
    "engine.resources": 0,
    "engine.media": 1,
    "engine.cameras": 1,
    "engine.model": 2,
    "engine.runtime": 3,
    "engine.training": 4,
    "engine.commands": 5,
    "app": 6,
}
# What the app may import from the engine: these whole modules, and the packages'
# public names (their __all__), never their inner modules.
APP_MAY_IMPORT_MODULES = {"engine.media", "engine.cameras", "engine.resources"}
APP_MAY_IMPORT_PACKAGES = {"engine.runtime", "engine.model"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    files = [*(ROOT / "engine").rglob("*.py"), *(ROOT / "app").rglob("*.py")]
    return {module_name(path): path for path in files}


def imports_of(path: Path, modules: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import of one of `modules`;
    `from package import module` counts as importing that module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [
                (alias.name, []) for alias in node.names if alias.name.split(".")[0] in ("engine", "app")
            ]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the layers test reads absolute ones)"
            if node.module is None or node.module.split(".")[0] not in ("engine", "app"):
                continue
            names = [alias.name for alias in node.names]
            bound = names_bound_by(node.module)

            def is_module(name: str, package: str = node.module, bound: set[str] = bound) -> bool:
                # `from engine.runtime import render` is the function the package binds,
                # not the module of the same name.
                return f"{package}.{name}" in modules and name not in bound

            submodules = [f"{node.module}.{name}" for name in names if is_module(name)]
            found += [(module, []) for module in submodules]
            plain = [name for name in names if not is_module(name)]
            if plain or not submodules:
                found.append((node.module, plain))
    return found


def names_bound_by(package: str) -> set[str]:
    """The names a package's __init__.py imports or assigns (empty for a plain module)."""
    init = ROOT.joinpath(*package.split("."), "__init__.py")
    if not init.is_file():
        return set()
    bound = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Assign):
            bound |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    return bound


def layer_of(module: str) -> int:
    owner = max((name for name in LAYERS if module == name or module.startswith(name + ".")), key=len)
    return LAYERS[owner]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None; depth-first with colours."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, list[str]]]]:
    modules = our_modules()
    return {name: imports_of(path, set(modules)) for name, path in modules.items()}


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_module_belongs_to_a_layer(graph):
    assert all(any(m == n or m.startswith(n + ".") for n in LAYERS) for m in graph), sorted(graph)


def test_no_import_cycles(graph):
    edges = {module: {target for target, _ in imports} for module, imports in graph.items()}
    assert find_cycle(edges) is None


def test_modules_import_only_their_own_layer_or_lower_ones(graph):
    upward = [
        f"{module} imports {target}"
        for module, imports in graph.items()
        for target, _ in imports
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_the_app_uses_only_the_engines_public_api(graph):
    import importlib

    wrong = []
    for module, imports in graph.items():
        if not module.startswith("app"):
            continue
        for target, names in imports:
            if not target.startswith("engine") or target in APP_MAY_IMPORT_MODULES:
                continue
            if target not in APP_MAY_IMPORT_PACKAGES:
                wrong.append(f"{module} imports {target}")
                continue
            public = set(importlib.import_module(target).__all__)
            wrong += [
                f"{module} imports {target}.{name} (not public)" for name in names if name not in public
            ]
    assert wrong == []


def test_the_runtime_never_imports_training_and_the_app_never_imports_commands(graph):
    # Implied by the layers; stated for the two rules the brief names.
    runtime_to_training = [
        (m, t)
        for m, imports in graph.items()
        for t, _ in imports
        if m.startswith("engine.runtime") and t.startswith("engine.training")
    ]
    app_to_commands = [
        (m, t)
        for m, imports in graph.items()
        for t, _ in imports
        if m.startswith("app") and t.startswith(("engine.training", "engine.commands"))
    ]
    assert runtime_to_training == [] and app_to_commands == []


# Flat builders: one widget, menu entry or option after another, read top to bottom.
LONG_BUILDERS = {"build_parser", "_build_widgets", "_build_menus"}
MAX_FUNCTION_LINES = 60


def test_functions_are_short():
    long = []
    for folder in ("engine", "app", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and node.name not in LONG_BUILDERS
                ):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
