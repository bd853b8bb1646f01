"""The package's shape: no import cycles (imports inside functions included) and a one-way
pipeline (no stage module imports a later stage's module).

The import graph is read from the source with ``ast``, so nothing is imported or executed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "helpers"

# The notebook each pipeline module belongs to. A module may import modules of its own stage or
# earlier ones; utilities that are not listed (paths, config, progress, hub, qa, conditions,
# templates, chat, models, scoring, generate, engine, ...) are free to be imported by any stage,
# but they take part in the cycle check like every other module.
STAGE = {
    "data": 1,
    "decompose": 2,
    "traces": 3, "teacher_stage": 3,
    "sft": 4, "krsl": 4,
    "evaluate": 5,
    "stats": 6, "figures": 6,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)  # "" for the package itself


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(importer: str, is_pkg: bool, level: int, module: str | None) -> list[str]:
    """The package-relative module an import statement names (``""`` = the package)."""
    base = importer.split(".") if importer else []
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return base + (module.split(".") if module else [])


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules it imports}}`` over the helpers package, every ``import`` and
    ``from ... import`` anywhere in a module (top level, functions, ``TYPE_CHECKING`` blocks)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}

    def known(parts: list[str]) -> str | None:
        # the longest prefix that is a module of the package
        for k in range(len(parts), -1, -1):
            name = ".".join(parts[:k])
            if name in mods:
                return name
        return None

    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[list[str]] = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    if not (node.module or "").startswith("helpers"):
                        continue
                    parts = (node.module or "").split(".")[1:]
                else:
                    parts = _resolve(name, is_pkg, node.level, node.module)
                # `from . import x` / `from .pkg import mod`: x may be a submodule
                for alias in node.names:
                    targets.append(parts + [alias.name])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "helpers" or alias.name.startswith("helpers."):
                        targets.append(alias.name.split(".")[1:])
            for parts in targets:
                dep = known(parts)
                if dep is not None and dep != name and dep != "":
                    graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _stage_of(module: str) -> int | None:
    return STAGE.get(module.split(".")[0])


def test_the_graph_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The scanner itself: a late import inside a function is an edge, and a two-module loop is
    reported as a cycle (a scanner that missed either would pass the real checks vacuously)."""
    pkg = tmp_path / "helpers"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n    return c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def g():\n    from .. import a\n    import helpers.b\n")
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    g = import_graph()
    assert g["a"] == {"b"} and g["b"] == {"sub.c"} and g["sub.c"] == {"a", "b"}
    assert cycles(g) == [["a", "b", "sub.c"]]


def test_the_package_has_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (imports inside functions count): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_no_stage_imports_a_later_stage():
    bad = []
    for mod, deps in import_graph().items():
        s = _stage_of(mod)
        if s is None:
            continue
        for d in sorted(deps):
            t = _stage_of(d)
            if t is not None and t > s:
                bad.append(f"{mod} (stage {s}) imports {d} (stage {t})")
    assert not bad, "the pipeline flows one way; " + "; ".join(bad)


@pytest.mark.parametrize("module", sorted(STAGE))
def test_stage_modules_exist(module):
    assert (PKG / f"{module}.py").is_file(), f"STAGE names {module}, which is not in the package"
