"""The package's layers (docs/architecture.md): no import cycles, light modules stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gped_search"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> gped_search modules it imports at run time, at the top or inside functions."""
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for top in ast.walk(tree) if isinstance(top, ast.If)
                       and getattr(top.test, "id", getattr(top.test, "attr", None)) == "TYPE_CHECKING"
                       for n in ast.walk(top)}  # annotations only: not imported at run time
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t.startswith("gped_search") and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    # package __init__ files only re-export their own submodules: an edge into a package's own
    # __init__ from its submodules is how Python resolves relative imports, not a layer crossing
    for m in list(graph):
        graph[m] = {n for n in graph[m] if not (m.startswith(n + ".") and n != "gped_search")}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_bottom_layers_import_nothing_above_them():
    graph = import_graph()
    assert graph["gped_search.errors"] == set() and graph["gped_search.choices"] == set()
    assert graph["gped_search.seeds"] == set() and graph["gped_search.files"] == set()
    # the config package imports only the bottom modules and itself; the search space is part of it
    config = {m for m in graph if m == "gped_search.config" or m.startswith("gped_search.config.")}
    below = {"gped_search.errors", "gped_search.choices"}
    for m in config:
        assert graph[m] <= below | config, (m, graph[m] - below - config)
    assert graph["gped_search.config.schema_chain"] <= below
    assert graph["gped_search.config.study_files"] <= {"gped_search.errors"}
    assert graph["gped_search.search.space"] <= below | config
    for m in ("gped_search.posterior.result", "gped_search.posterior.artifact", "gped_search.posterior.sgld"):
        assert not any(n.startswith(("gped_search.distill", "gped_search.search", "gped_search.engine"))
                       for n in graph[m]), (m, graph[m])
    # the command line calls library functions: nothing in the library imports it
    assert not any("gped_search.cli" in deps for deps in graph.values())


def test_configs_and_the_space_need_neither_optuna_nor_torch():
    code = ("import sys\nfrom gped_search.config import load_study\nfrom gped_search.config.space import parse_space\n"
            "cfg = load_study('studies/mnist_mlp.yaml')\nparse_space(cfg.search.space)\n"
            "print(sorted(m for m in ('optuna', 'torch', 'pandas') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_only_the_storage_adapter_touches_private_optuna_api():
    private = ("._storage", "._trial_id", "._all_grids", "optuna.storages._")
    users = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                   if any(s in p.read_text() for s in private))
    assert users == ["search/storage.py"], users


def test_no_module_imports_a_private_name_of_another():
    """A name that starts with ``_`` belongs to its module: another module that needs it gets a public one."""
    found = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gped_search")):
                found += [f"{path.relative_to(PKG)}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


def test_no_module_is_over_400_lines():
    """One concern a module: past 400 lines a module is split (docs/architecture.md says where)."""
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
