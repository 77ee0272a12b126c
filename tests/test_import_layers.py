"""The import graph of `pvdm`: layers point one way and no module imports itself back.

Every `import` counts, also those inside functions (a function-local import is how a cycle
hides). `from pvdm.pkg import name` is an edge to `pvdm.pkg.name` when that is a module, else
to the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pvdm

SRC = Path(pvdm.__file__).parent

# inference and the layers below it: they must never reach the training code or the apps
LOWER = ("pvdm.models", "pvdm.diffusion", "pvdm.metrics", "pvdm.data", "pvdm.convert")
BOTTOM = (
    "pvdm.runtime",
    "pvdm.runs",
    "pvdm.seeds",
    "pvdm.atomic",
    "pvdm.errors",
    "pvdm.config",
    "pvdm.jsonl",
    "pvdm.weights",
    "pvdm.charts",
)
UPPER = ("pvdm.train", "pvdm.cli", "pvdm.demo", "pvdm.presets", "pvdm.serve")
ENTRY = ("pvdm", "pvdm.__main__")  # the package itself and `python -m pvdm`


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the pvdm modules it imports anywhere in its source."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                    for a in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_import_graph_sees_local_imports() -> None:
    graph = import_graph()
    assert "pvdm.models.unet" in graph["pvdm.models"]  # a package import of its submodule
    assert "pvdm.train.autoencoder" in graph["pvdm.cli.train"]  # imported inside a function


def test_every_module_sits_in_one_layer() -> None:
    # a module in no layer escapes every check below
    layers = {"bottom": BOTTOM, "lower": LOWER, "upper": UPPER}
    for module in import_graph():
        if module in ENTRY:
            continue
        found = [layer for layer, prefixes in layers.items() if _in(module, prefixes)]
        assert len(found) == 1, f"{module} is in layers {found}; put it in exactly one"


def test_lower_layers_never_import_training_or_apps() -> None:
    graph = import_graph()
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _in(m, LOWER + BOTTOM)
        for t in targets
        if _in(t, UPPER)
    )
    assert not bad, "inference code imports training or app code: " + ", ".join(bad)


def test_inference_commands_never_import_training_code() -> None:
    # `pvdm sample/continue/reconstruct/eval` once imported pvdm.train for its device check
    graph = import_graph()
    for module in ("pvdm.cli.generate", "pvdm.cli.evaluate"):
        bad = sorted(t for t in graph[module] if _in(t, ("pvdm.train",)))
        assert not bad, f"{module} imports {', '.join(bad)}"


def test_bottom_layer_imports_only_the_bottom_layer() -> None:
    graph = import_graph()
    bad = sorted(
        f"{m} -> {t}" for m in graph if _in(m, BOTTOM) for t in graph[m] if not _in(t, BOTTOM)
    )
    assert not bad, ", ".join(bad)


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_packages() -> None:
    # pvdm.diffusion <-> pvdm.train was one: the pipeline imported training helpers
    packages: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        top = ".".join(module.split(".")[:2])
        packages.setdefault(top, set()).update(".".join(t.split(".")[:2]) for t in targets)
    for top, targets in packages.items():
        targets.discard(top)
    cycle = find_cycle(packages)
    assert cycle is None, "package import cycle: " + " -> ".join(cycle)


def torch_distributed_importers() -> list[str]:
    """The pvdm modules that import `torch.distributed` (in any form) anywhere in their source."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            if any(n == "torch.distributed" or n.startswith("torch.distributed.") for n in names):
                found.append(_module_name(path))
                break
    return found


def test_only_the_runtime_talks_to_torch_distributed() -> None:
    # the process-group helpers exist once (pvdm.runtime); metrics and training call them
    assert torch_distributed_importers() == ["pvdm.runtime"]


def test_training_modules_export_only_their_own_names() -> None:
    # a re-export (pvdm.train.distributed once offered pvdm.runtime's names) is a second path
    # to one helper; import it from where it lives
    import importlib

    foreign = []
    for path in sorted((SRC / "train").glob("*.py")):
        name = _module_name(path)
        module = importlib.import_module(name)
        for export in getattr(module, "__all__", []):
            home = getattr(getattr(module, export), "__module__", name)
            if home != name and not home.startswith(name + "."):
                foreign.append(f"{name}.{export} (from {home})")
    assert not foreign, "re-exported: " + ", ".join(foreign)
