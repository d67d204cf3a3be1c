"""The import graph of the project's modules, read from their source with `ast` (imports inside functions
included): no circle, and no module imports an entry script (main_*.py, benchmark.py); the entry scripts import
the library. The tests themselves are left out: they exercise the scripts."""
import ast
import os

from conftest import REPO

SKIP = {"tests", "docs", "data", "results"}


def modules():
    """{dotted name: path} of every Python module of the repository outside SKIP."""
    out = {}
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")) and d not in SKIP)
        for f in files:
            if f.endswith(".py"):
                name = os.path.relpath(os.path.join(folder, f), REPO)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = os.path.join(folder, f)
    return out


def imported(name, path, known):
    """The project modules `name` imports, each with the packages above it (importing a.b runs a first). A
    module's own packages are left out: Python has begun them before the module (a registry package's modules
    import its `register` that way)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in names:
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(known)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    return targets - own


def graph():
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycle(edges):
    """One import circle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def is_script(name):
    return name.startswith("main_") or name == "benchmark"


def test_the_walk_sees_the_project():
    edges = graph()
    assert {"main_forget", "benchmark", "unlearn", "unlearn.apply", "suite.runs", "commands.forget"} <= set(edges)
    assert "commands.forget" in edges["main_forget"] and "unlearn.apply" in edges["commands.forget"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle():
    assert cycle(graph()) is None


def test_no_module_imports_an_entry_script():
    bad = {name: sorted(filter(is_script, targets)) for name, targets in graph().items()}
    assert {name: targets for name, targets in bad.items() if targets} == {}
