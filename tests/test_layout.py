"""The package tree is the data flow: lower layers never import higher ones, and no module
imports itself back through others. Read from the source (ast), function-level imports
included, so a lazy import cannot hide a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import drivesegrt

PACKAGE = Path(drivesegrt.__file__).parent
VOCAB = {"frame", "timing", "labels", "meta", "files", "preprocess"}
# Top-level module or package -> what it may import (besides itself). The vocabulary first,
# then capture / publish / models / data, deploy, engines, infer, and the entry points.
ALLOWED = {
    **{v: VOCAB for v in VOCAB},
    "capture": VOCAB, "publish": VOCAB, "models": VOCAB, "data": VOCAB,
    "deploy": VOCAB | {"models"},
    "engines": VOCAB | {"models", "deploy"},
    "infer": VOCAB | {"engines"},
    "pipeline": VOCAB | {"capture", "infer", "publish"},
    "deadline": VOCAB,
    "multicam": VOCAB | {"deadline", "infer", "pipeline"},
    "config": VOCAB | {"engines", "infer", "publish"},
    "train": VOCAB | {"config", "data", "engines", "infer", "models"},
    "bench": VOCAB | {"deploy", "engines", "infer", "models"},
    "assemble": VOCAB | {"capture", "config", "infer", "publish"},
    "run_cameras": VOCAB | {"assemble", "capture", "config", "deadline", "infer", "multicam",
                            "pipeline", "publish"},
    "run": VOCAB | {"assemble", "capture", "config", "infer", "pipeline", "publish",
                    "run_cameras"},
    "batch": VOCAB | {"assemble", "capture", "config", "infer", "pipeline", "publish", "run"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """drivesegrt modules imported anywhere in ``path`` (``from x import name`` counts as
    ``x.name`` when that is a module)."""
    mod = module_name(path)
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[:len(base) - node.level + 1]
                                  + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "drivesegrt":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "drivesegrt"}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: imports(p) for m, p in MODULES.items()}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_lower_layers_never_import_higher_ones():
    bad = []
    for mod, deps in GRAPH.items():
        allowed = ALLOWED.get(top(mod))
        if allowed is None:                 # cli, __main__, the package root: entry points
            continue
        bad += [f"{mod} -> {d}" for d in sorted(deps)
                if top(d) != top(mod) and top(d) not in allowed]
    assert bad == []


def test_the_rules_of_the_layout():
    for low in ("capture", "publish", "engines"):
        assert not ALLOWED[low] & {"infer", "pipeline"}
    assert "infer" not in ALLOWED["deploy"]
    assert set(ALLOWED) | {"cli", "__main__", ""} == {top(m) for m in MODULES}


def test_no_import_cycles():
    state: dict[str, int] = {}
    path: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if d not in GRAPH:
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert cycles == []


def test_only_infer_imports_the_cuda_segmenter():
    users = sorted(m for m, deps in GRAPH.items() if "drivesegrt.infer.cuda.segmenter" in deps)
    assert users == ["drivesegrt.infer.build"]
