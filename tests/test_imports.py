"""The package's import graph: data flows loading -> measure -> experiments -> store -> figures/report -> cli,
and no import runs back up that chain or closes a cycle (parsed with ast; nothing is imported).

Every import counts, including those inside functions: a lazy import up the chain is still a
dependency in the wrong direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lmsat"

# Layer of each part of the package, lowest first. A module may import its own layer or any lower one.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("lmsat", "lmsat.errors", "lmsat.progress", "lmsat.store", "lmsat.device", "lmsat.assets")),  # foundations
    (1, ("lmsat.loading", "lmsat.synth")),  # models, corpora, tokenizers, token samples; synthetic languages
    (2, ("lmsat.measure", "lmsat.nn")),  # pure measurements and model pieces
    (3, ("lmsat.kinds",)),  # record schemas (typed views of the store)
    (4, ("lmsat.training",)),  # producing models
    (5, ("lmsat.experiments", "lmsat.executor")),  # measurements of models and data, written to the store
    (6, ("lmsat.figures",)),  # figures and CSV drawn from stored records
    (7, ("lmsat.report",)),  # the report, from stored records
    (8, ("lmsat.pipelines",)),  # commands composed (demo, diagnose)
    (9, ("lmsat.cli", "lmsat.__main__")),  # the command line
]


def layer_of(module: str) -> int:
    best, rank = "", None
    for r, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, rank = p, r
    assert rank is not None, f"module {module} has no layer: add it to LAYERS in {__file__}"
    return rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The lmsat modules ``path`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lmsat")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "lmsat":
                continue
            subs = [f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}")]
            out.update(subs if subs else [base])
    out.discard(me)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_runs_back_up_the_chain():
    bad = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
           for m, deps in graph().items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def test_no_import_cycles():
    g = graph()
    # A package's __init__ re-exporting its own submodules is not a cycle with them.
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and d in g)} for m, deps in g.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [m, d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_back_import(tmp_path):
    """The parser resolves ``from pkg import module`` and lazy imports inside functions."""
    f = PACKAGE / "measure" / "spectrum.py"
    tree_imports = imports_of(f)
    assert all(layer_of(d) <= layer_of("lmsat.measure.spectrum") for d in tree_imports)
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from lmsat.report import diagnosis\n")
    src = ast.parse(fake.read_text())
    node = next(n for n in ast.walk(src) if isinstance(n, ast.ImportFrom))
    assert is_module(f"{node.module}.{node.names[0].name}")
