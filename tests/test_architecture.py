"""The layers of ARCHITECTURE.md, enforced: who may import whom, and no import loops.

Every import in the source (module level and inside functions) is read with `ast`, so a lazy import is
held to the same rules as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"allx": REPO / "allx", "allx.train": REPO / "train", "allx.convert": REPO / "convert",
                "allx.edge_runner": REPO / "edge_runner"}

GROUND = ("allx", "allx.errors", "allx.images", "allx.files", "allx.jsonio", "allx.layout", "allx.decision", "allx.dihedral",
          "allx.text", "allx.console", "allx.synthetic", "allx.evidence")
TOP = ("allx.cli", "allx.report", "allx.demo", "allx.entry", "allx.edge_runner.cli")
# What each domain package may import besides the ground floor and itself.
DOMAIN = {"allx.train": (), "allx.edge_runner": (), "allx.convert": ("allx.train", "allx.edge_runner")}
# Third-party packages the device runner may never import at all (it installs without them).
EDGE_FORBIDDEN = ("tensorflow", "keras", "sklearn", "matplotlib", "torch", "skimage", "imagehash")


def module_sources() -> dict[str, str]:
    """module name -> source, for every .py file of the installed packages (as they are named installed)."""
    sources = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "allx" and parts and f"allx.{parts[0]}" in PACKAGE_DIRS:
                continue
            sources[name] = path.read_text(encoding="utf-8")
    return sources


def imports_of(name: str, source: str, top_level_only: bool = False, known: set[str] = frozenset()) -> set[str]:
    """Absolute names imported by a module (relative imports resolved against it). `from package import
    submodule` imports the submodule: the package counts too only when some name is not a known module."""
    tree = ast.parse(source)
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: -node.level] if not name.endswith("__init__") else name.split(".")
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = {f"{module}.{alias.name}" for alias in node.names}
            found.update(names)
            if not names <= known:
                found.add(module)
    return found


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_of(name: str) -> str:
    if within(name, TOP):
        return "top"
    for domain in DOMAIN:
        if within(name, (domain,)):
            return domain
    return "ground" if name in GROUND else "other"


def violations(sources: dict[str, str]) -> list[str]:
    problems = []
    known = set(sources)
    for name, source in sources.items():
        layer = layer_of(name)
        if layer == "other":
            problems.append(f"{name}: in no layer; add it to ARCHITECTURE.md and this test")
            continue
        for imported in sorted(imports_of(name, source)):
            target = imported if imported in known else next(
                (m for m in sorted(known, key=len, reverse=True) if within(imported, (m,))), None)
            if layer == "allx.edge_runner" and within(imported, EDGE_FORBIDDEN):
                problems.append(f"{name} imports {imported}: the device runner installs without it")
            if target is None or target == name or layer == "top":
                continue
            allowed = {"ground": ("ground",), "allx.train": ("ground", "allx.train"),
                       "allx.edge_runner": ("ground", "allx.edge_runner"),
                       "allx.convert": ("ground", "allx.convert", "allx.train", "allx.edge_runner")}[layer]
            if layer_of(target) not in allowed:
                problems.append(f"{name} ({layer}) imports {target} ({layer_of(target)})")
    return problems + import_loops(sources)


def import_loops(sources: dict[str, str]) -> list[str]:
    """Cycles among module-level project imports (a loop breaks as soon as someone imports in another order)."""
    known = set(sources)
    graph = {name: {m for m in imports_of(name, src, True, known) if m in known and m != name}
             for name, src in sources.items()}
    loops, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                loops.append("import loop: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return loops


def test_the_source_keeps_its_layers():
    assert violations(module_sources()) == []


@pytest.mark.parametrize("module, planted, expected", [
    ("allx.edge_runner.model", "from allx.train import trainer\n", "allx.edge_runner.model (allx.edge_runner) imports"),
    ("allx.edge_runner.batch", "from allx.console import stdout\nfrom allx.cli import main\n", "(top)"),
    ("allx.edge_runner.quant", "import tensorflow\n", "the device runner installs without it"),
    ("allx.train.split", "from allx.convert import pipeline\n", "allx.train.split (allx.train) imports"),
    ("allx.images", "from allx.edge_runner import model\n", "allx.images (ground) imports"),
    ("allx.files", "from allx import images\n", "import loop"),
])
def test_a_planted_violation_is_caught(module, planted, expected):
    sources = module_sources()
    sources[module] = planted + sources[module]
    if expected == "import loop":  # make images import files and files import images
        sources["allx.images"] = "from allx import files\n" + sources["allx.images"]
    assert any(expected in problem for problem in violations(sources))


def test_every_package_folder_is_installed_under_allx():
    """A new subpackage missing from pyproject's package list would be left out of the wheel silently."""
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    assert all(name == "allx" or name.startswith("allx.") for name in listed)
    folders = {".".join([package, *init.parent.relative_to(folder).parts])
               for package, folder in PACKAGE_DIRS.items() for init in folder.rglob("__init__.py")}
    assert folders - listed == set()
    assert {k: v for k, v in setup["package-dir"].items()} == {
        "allx.train": "train", "allx.convert": "convert", "allx.edge_runner": "edge_runner"}
