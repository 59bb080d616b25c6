"""slmrec's import layers: each module imports only from its own layer or those below, and nothing imports in a
circle, so a change low down never needs the stack above it."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

from slmrec import layout

# From the ground up. A module may import its own layer and the layers before it.
LAYERS = (
    (
        "slmrec",
        "slmrec.errors",
        "slmrec.io",
        "slmrec.batching",
        "slmrec.precision",
        "slmrec.targets",
        "slmrec.layout",
        "slmrec.markdown",
    ),
    ("slmrec.data",),
    ("slmrec.metrics", "slmrec.stats", "slmrec.evaluate", "slmrec.models", "slmrec.recommend", "slmrec.export"),
    (
        "slmrec.config",
        "slmrec.rule_params",
        "slmrec.call",
        "slmrec.launch",
        "slmrec.cluster",
        "slmrec.workflow",
        "slmrec.training",
        "slmrec.provenance",
        "slmrec.report",
        "slmrec.summary",
        "slmrec.compare",
        "slmrec.__main__",
    ),
    ("slmrec.stages",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of a module: that of the longest listed name it is, or lies under."""
    found = [
        (len(name), i)
        for i, names in enumerate(LAYERS)
        for name in names
        if module == name or module.startswith(name + ".")
    ]
    if not found:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it")
    return max(found)[1]


def imports() -> dict[str, set[str]]:
    """Each slmrec module's slmrec imports (a `from slmrec.x import y` of a submodule y counts as slmrec.x.y)."""
    graph = {}
    modules = {module_name(p) for p in (ROOT / "slmrec").rglob("*.py")}
    for path in (ROOT / "slmrec").rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "slmrec":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "slmrec"}
        graph[module_name(path)] = found - {module_name(path)}
    return graph


def test_no_import_runs_back_up():
    graph = imports()
    upward = [
        f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
        for m, ds in graph.items()
        for d in ds
        if layer(d) > layer(m)
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circle():
    graph, done, path = imports(), set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        path.append(module)
        for dependency in graph.get(module, ()):
            visit(dependency)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


# Names that are also other tools' files: a Hugging Face checkpoint's own config.json, read by the presets.
FOREIGN_NAMES = {"config.json"}


def test_no_artifact_file_is_named_outside_the_layout():
    """slmrec/layout.py alone spells the artifacts' file names: any other module takes them from it (docstrings
    and messages aside)."""
    names = {*layout.SASREC_FILES.values(), *layout.LLM_FILES.values(), *layout.DATA_FILES.values()}
    names |= {layout.MANIFEST, layout.NEGATIVES, Path(layout.states("t")).name, Path(layout.table("report")).name}
    names -= FOREIGN_NAMES
    spelled = []
    for path in (ROOT / "slmrec").rglob("*.py"):
        if path.name == "layout.py":
            continue
        tree = ast.parse(path.read_text())
        documented = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documented:
                path_like = " " not in node.value  # a message may name a file; a path holds no spaces
                if path_like and any(node.value == name or node.value.endswith("/" + name) for name in names):
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not spelled, "\n".join(spelled)
