"""The layering docs/architecture.md states, held by parsing every module (imports inside functions included).

A module may import only its own layer and the layers below (never up), no two packages import each other (no
circle, however long), and nothing outside the Sticker World imports it: the world is an application beside the
library and plugs in through config (`_target_`s and conf defaults), as a user's data and judges do.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from style_tailoring.config import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "style_tailoring"
LAYERS = {  # the package (or top-level module) -> its layer
    "config": 0, "plan": 0, "io": 0, "provenance": 0,
    "models": 1, "data": 1, "runtime": 1,
    "training": 2, "sampling": 2, "evaluation": 2, "alpha": 2, "animation": 2,
    "curation": 3, "hitl": 3,
    "recipe": 4, "train": 4, "evaluate": 4, "animate": 4, "collect": 4, "bench": 4, "analysis": 4, "cli": 4,
}
COMMAND_LAYER = 4  # a package's __main__ is its command
BESIDE = {"world"}  # applications beside the library: may import it; it never imports them


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports, wherever in the file the import is."""
    found = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base) if node.level else node.module
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found[name] |= {t for t in targets if t and t.startswith("style_tailoring.") and is_module(t)}
        found.setdefault(name, set())
    return found


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def layer(module: str) -> int:
    if module.endswith(".__main__"):
        return COMMAND_LAYER
    return LAYERS[room(module)]


def test_every_room_has_a_layer():
    rooms = {room(m) for m in imports()} - {"(package)"}
    assert rooms - BESIDE <= set(LAYERS), f"rooms without a layer in docs/architecture.md: {rooms - set(LAYERS)}"


def test_no_import_points_up_a_layer():
    upward = sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
                    for a, targets in imports().items() for b in targets
                    if room(a) not in BESIDE and room(b) not in BESIDE and layer(b) > layer(a))
    assert not upward, "\n".join(upward)


def test_nothing_outside_the_world_imports_it():
    reaching = sorted(f"{a} imports {b}" for a, targets in imports().items() for b in targets
                      if room(b) in BESIDE and room(a) not in BESIDE)
    assert not reaching, "\n".join(reaching)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan)."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_circle_between_packages_or_between_the_worlds_modules():
    edges = imports()
    packages = defaultdict(set)
    for a, targets in edges.items():
        packages[room(a)] |= {room(b) for b in targets if room(b) != room(a)}
    assert not circles(packages), f"packages import each other: {circles(packages)}"
    world = {a: {b for b in targets if room(b) == "world"} for a, targets in edges.items() if room(a) == "world"}
    assert not circles(world), f"the world's modules import each other: {circles(world)}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The rule is only as good as its parser: a lazy import inside a function counts like a top-level one."""
    found = imports()
    assert "style_tailoring.world.judges" in found["style_tailoring.world.styleforge"]  # a function-level import
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
