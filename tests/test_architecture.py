"""The layer rules of ARCHITECTURE.md, read from the code's imports (``ast``), so they stay true.

Every ``import`` / ``from … import`` in every module counts, including those inside functions (a lazy
import is still a dependency). Checked: no import cycle between modules; no private name (leading
underscore) imported from another package; a stage or plug-in package imports another stage only through
the public entry points listed in ARCHITECTURE.md, and the ground floor imports no stage at all.
The checks are plain functions run once on the real graph and once on a synthetic violating one, so a
check that silently passes everything fails here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = "modelprint"

GROUND = {"fingerprints", "models", "prompts", "decoding", "wordlist", "seeds", "config", "io", "plugins",
          "errors", "log", "matching", "prefix_cache", "sparsity", "testing", "configs", "data"}
STAGES = {"generate", "embed", "verify", "merge", "registry", "evaluation", "schemes", "export"}
ORCHESTRATION = {"stress", "licensing", "serve", "sweep"}
# everything else (cli, */cli.py, demo, serve_cli, benchmarks) is the CLI layer: it may import anything public


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(src: Path = SRC) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """``{module: imported modelprint modules}`` and every ``(module, target module, imported name)``."""
    files = {module_name(p, src): p for p in src.joinpath(PKG).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    names: list[tuple[str, str, str]] = []
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PKG:
                        graph[mod].add(_existing(alias.name, files))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != PKG:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    dest = sub if sub in files else _existing(target, files)
                    graph[mod].add(dest)
                    names.append((mod, dest, alias.name))
    for mod in graph:
        graph[mod].discard(mod)
    return graph, names


def _existing(name: str, files) -> str:
    while name not in files and "." in name:
        name = name.rpartition(".")[0]
    return name


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def area(module: str) -> str:
    """The top-level part of modelprint a module belongs to (``modelprint.verify.core`` → ``verify``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> str:
    a = area(module)
    if a in GROUND or module == PKG:
        return "ground"
    if module.endswith(".cli"):
        return "cli"
    if a in STAGES:
        return "stage"
    if a in ORCHESTRATION:
        return "orchestration"
    return "cli"


def private_imports(names: list[tuple[str, str, str]]) -> list[str]:
    """``from other_package import _private`` (dunders such as ``__version__`` are public)."""
    bad = []
    for mod, dest, name in names:
        private = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
        if private and area(mod) != area(dest):
            bad.append(f"{mod} imports {name} from {dest}")
    return bad


def layer_violations(graph: dict[str, set[str]], public: set[str]) -> list[str]:
    """Imports that break the layer rule of ARCHITECTURE.md."""
    bad = []
    for mod, targets in sorted(graph.items()):
        for dest in sorted(targets):
            if area(dest) == area(mod) or layer(dest) == "ground":
                continue
            src_layer, dest_layer = layer(mod), layer(dest)
            if src_layer == "ground":
                bad.append(f"ground-floor {mod} imports {dest}")
            elif src_layer in ("stage", "orchestration") and dest_layer in ("stage", "orchestration"):
                if dest not in public:
                    bad.append(f"{mod} imports {dest}, which is no public entry point")
                elif src_layer == "stage" and dest_layer == "orchestration":
                    bad.append(f"stage {mod} imports orchestration {dest}")
            elif src_layer != "cli" and dest_layer == "cli":
                bad.append(f"{mod} imports the CLI module {dest}")
    return bad


def public_entry_points() -> set[str]:
    """The modules listed under "Public entry points" in ARCHITECTURE.md."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Public entry points", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(modelprint(?:\.\w+)*)`", section, flags=re.M))


GRAPH, NAMES = import_graph()


def test_graph_sees_every_module():
    assert len(GRAPH) > 80 and all(m.startswith(PKG) for m in GRAPH)


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_no_private_name_from_another_package():
    assert private_imports(NAMES) == []


def test_public_entry_points_exist():
    public = public_entry_points()
    assert public and public <= set(GRAPH), sorted(public - set(GRAPH))


def test_stages_meet_only_through_public_entry_points():
    assert layer_violations(GRAPH, public_entry_points()) == []


def test_checks_catch_a_synthetic_violating_graph():
    """Each rule, fed a graph that breaks it, reports it (a check that passes everything would fail here)."""
    graph = {
        "modelprint.generate.registry": {"modelprint.generate.strategies", "modelprint.schemes"},
        "modelprint.generate.strategies": {"modelprint.generate.registry"},  # a cycle
        "modelprint.schemes": set(),
        "modelprint.verify.core": {"modelprint.generate.registry"},  # a stage's internals
        "modelprint.wordlist": {"modelprint.generate.keys"},  # the ground floor reaching up
        "modelprint.generate.keys": set(),
        "modelprint.embed.recipe": {"modelprint.verify"},  # allowed: a public entry point
        "modelprint.verify": set(),
        "modelprint.registry.store": {"modelprint.licensing"},  # a stage reaching up into orchestration
        "modelprint.licensing": set(),
    }
    assert cycles(graph) == [["modelprint.generate.registry", "modelprint.generate.strategies"]]
    found = layer_violations(graph, {"modelprint.verify", "modelprint.licensing"})
    assert found == ["modelprint.generate.registry imports modelprint.schemes, which is no public entry point",
                     "stage modelprint.registry.store imports orchestration modelprint.licensing",
                     "modelprint.verify.core imports modelprint.generate.registry, which is no public entry point",
                     "ground-floor modelprint.wordlist imports modelprint.generate.keys"]
    names = [("modelprint.embed.data", "modelprint.wordlist", "_lines"),
             ("modelprint.stress.compare", "modelprint.stress.report", "_clean"),  # same package: allowed
             ("modelprint.demo", "modelprint", "__version__")]
    assert private_imports(names) == ["modelprint.embed.data imports _lines from modelprint.wordlist"]


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from modelprint.generate import keys\n", {"modelprint.generate.keys"}),
    ("from .. import io\n", {"modelprint.io"}),
    ("import modelprint.verify.core as c\n", {"modelprint.verify.core"}),
])
def test_graph_reads_lazy_relative_and_plain_imports(tmp_path, source, expected):
    pkg = tmp_path / PKG
    for sub in ("", "generate", "verify", "stress"):
        (pkg / sub).mkdir(exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    for mod in ("io.py", "generate/keys.py", "verify/core.py"):
        (pkg / mod).write_text("")
    (pkg / "stress" / "probe.py").write_text(source)
    graph, _ = import_graph(tmp_path)
    assert graph["modelprint.stress.probe"] == expected
