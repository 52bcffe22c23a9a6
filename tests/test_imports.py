"""The house rules of jsnn's imports, read from the source (nothing is imported or run):

- no import cycle between jsnn's modules;
- the orchestration floor (jsnn.runs) is imported by nothing below it: only the theory
  experiments, which train a network through it, sit above it;
- no function-local import of a jsnn module (such imports hide cycles); the function-local
  imports left load optional or heavy packages only when they are used;
- nothing imports JAX's private modules (jax._src).
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jsnn"
ABOVE_RUNS = {"jsnn.theory.experiments"}
# loaded where they are used: optional extras (NIR and the torch simulators), or heavy and needed by
# one path only (TFDS for CIFAR, scikit-learn for the digits, aedat for AEDAT4 event files)
# grain (about 1 s to import) and PIL: only a streamed tfds dataset (jsnn/data/streaming.py) needs them;
# matplotlib: only a run that draws (jsnn/plots.py), not --no-plots, --help or a refused start
LAZY_OK = {"nir", "torch", "snntorch", "norse", "nirtorch", "tensorflow_datasets", "sklearn", "aedat", "grain", "PIL",
           "absl", "matplotlib"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str, imported: str | None = None) -> str | None:
    """The jsnn module an import names (``from a.b import c``: a.b.c if that is a module, else a.b)."""
    if imported and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name if name in MODULES else None


def imports(path: pathlib.Path):
    """(target, line, function-local?) for every import in the file."""
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in local
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield (node.module, alias.name), node.lineno, id(node) in local


def graph() -> dict[str, set[str]]:
    edges = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in imports(path):
            resolved = resolve(*target) if isinstance(target, tuple) else resolve(target)
            if resolved and resolved != name:
                edges[name].add(resolved)
    return edges


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == [], cycles


def test_nothing_below_the_runs_floor_imports_it():
    upward = [(m, t) for m, targets in graph().items() for t in targets
              if t.startswith("jsnn.runs") and not m.startswith("jsnn.runs") and m not in ABOVE_RUNS]
    assert upward == []


def test_function_local_imports_are_only_lazy_optional_packages():
    found = []
    for name, path in MODULES.items():
        for target, line, local in imports(path):
            top = (target[0] if isinstance(target, tuple) else target).split(".")[0]
            if local and top not in LAZY_OK:
                found.append(f"{path.relative_to(ROOT)}:{line} {target}")
    assert found == []


def test_nothing_imports_jax_private_modules():
    found = []
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "train").glob("*.py")):
        for target, line, _ in imports(path):
            module = target[0] if isinstance(target, tuple) else target
            if module.startswith("jax._src"):
                found.append(f"{path.relative_to(ROOT)}:{line}")
    assert found == []


def test_the_rules_can_fail(tmp_path):
    """The checks see what they look for: an upward import, a local one and jax._src in one file."""
    bad = tmp_path / "bad.py"
    bad.write_text("from jsnn.runs import imp\n\ndef f():\n    from jsnn import data\n    import jax._src.clusters\n")
    found = list(imports(bad))
    assert (("jsnn.runs", "imp"), 1, False) in found
    assert (("jsnn", "data"), 4, True) in found and ("jax._src.clusters", 5, True) in found
    assert resolve("jsnn.runs", "imp") == "jsnn.runs.imp" and resolve("jsnn", "data") == "jsnn.data"
