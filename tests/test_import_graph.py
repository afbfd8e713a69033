"""The package's module graph has no cycles.

Every import of a ``survey_ml`` module is an edge of the graph, wherever it is written: at
module level or inside a function (a lazy import still runs the imported module, only later),
relative or absolute. The graph is read from the source with :mod:`ast`, never by importing,
and its strongly connected components (Tarjan) must all be single modules.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

PACKAGE = "survey_ml"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name of every ``.py`` file under `root` (``pkg/a/__init__.py`` is ``pkg.a``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """Which modules of `package` each of its modules imports, read with :mod:`ast`.

    Parameters
    ----------
    root : Path
        The package's directory (the one holding its ``__init__.py``).
    package : str
        Its dotted name.

    Returns
    -------
    dict of str to dict of str to int
        ``graph[a][b]`` is the first line of ``a``'s source that imports ``b``. Edges are
        every ``import`` / ``from ... import`` of a module of `package`, module-level or
        inside a function. ``from .a import b`` is an edge to ``a`` and, if ``b`` is a
        submodule, to ``a.b``; ``from . import x`` goes to the submodule ``x`` or, when
        ``x`` is a name, to the package's ``__init__``. Importing ``p.a.b`` also runs the
        package ``p.a``: an edge too, unless ``p.a`` encloses the importer (a module's own
        packages are already imported when it runs). Self-imports are dropped.

    Examples
    --------
    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp()) / "pkg"
    >>> (tmp / "sub").mkdir(parents=True)
    >>> _ = (tmp / "__init__.py").write_text("__version__ = '1'\\n")
    >>> _ = (tmp / "a.py").write_text("def f():\\n    from .sub import b\\n")
    >>> _ = (tmp / "sub" / "__init__.py").write_text("")
    >>> _ = (tmp / "sub" / "b.py").write_text("from .. import __version__\\nimport pkg.a\\n")
    >>> import_graph(tmp, "pkg")["pkg.a"], import_graph(tmp, "pkg")["pkg.sub.b"]
    ({'pkg.sub': 2, 'pkg.sub.b': 2}, {'pkg': 1, 'pkg.a': 2})
    """
    modules = module_names(root, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        # the package a relative import starts from: a package's __init__ is its own package
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        enclosing = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}

        def add(target: str, line: int) -> None:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the target and the packages it runs
                module = ".".join(parts[:i])
                if module in modules and module != name and (module == target or module not in enclosing):
                    edges.setdefault(module, line)

        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{anchor}.{base}" if base else anchor
                if base != package and not base.startswith(package + "."):
                    continue
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                if base not in enclosing or len(submodules) < len(node.names):
                    add(base, node.lineno)  # runs base, or takes names from an enclosing package
                for module in submodules:
                    add(module, node.lineno)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components of `graph`, iteratively (no recursion limit).

    >>> strongly_connected({"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1}})
    [['a', 'b'], ['c']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through every edge that lies on a cycle, each as ``[a, b, ..., a]``.

    >>> cycles({"a": {"b": 1}, "b": {"a": 1, "c": 2}, "c": {"b": 1}})
    [['a', 'b', 'a'], ['b', 'c', 'b']]
    """
    found = set()
    for component in strongly_connected(graph):
        members = set(component)
        for source in component:
            for target in sorted(set(graph[source]) & members):
                # shortest path target -> source inside the component closes source -> target
                previous = {target: None}
                queue = deque([target])
                while source not in previous:
                    node = queue.popleft()
                    for child in sorted(set(graph[node]) & members):
                        if child not in previous:
                            previous[child] = node
                            queue.append(child)
                path, node = [], source
                while node is not None:
                    path.append(node)
                    node = previous[node]
                ring = [source, *reversed(path)][:-1]  # source, target, ..., (not source again)
                turn = ring.index(min(ring))
                found.add(tuple(ring[turn:] + ring[:turn]))
    return [[*ring, ring[0]] for ring in sorted(found)]


def describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    """``a -> b -> a`` and, under it, where each edge is written."""
    root = ROOT.parent
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        lines.append(f"    {a} -> {b}: {modules[a].relative_to(root)}:{graph[a][b]}")
    return "\n".join(lines)


def test_graph_sees_the_package():
    graph = import_graph()
    assert f"{PACKAGE}.cluster.client" in graph[f"{PACKAGE}.cli.main"]
    assert f"{PACKAGE}.core.spectra" in graph[f"{PACKAGE}.tasks.spectra_inputs"]


def test_module_graph_has_no_cycles():
    graph = import_graph()
    modules = module_names(ROOT)
    found = cycles(graph)
    assert not found, f"{len(found)} import cycles in {PACKAGE}:\n" + "\n".join(
        describe(cycle, graph, modules) for cycle in found)


#: The package's layers, top first: data flows down this list and imports point the same
#: way (a module may import its own layer or any below it, never one above).
LAYERS = (
    ("__main__", "cli"),                         # the command line: thin layers over the API
    ("dask",),                                   # the catalog as a Dask graph: blocks, lazy frame, runner
    ("report",),                                 # what a run shows: HTML report, progress
    ("tasks",),                                  # the Task contract and every task
    ("train", "store", "simulate"),              # training, the release store, mock releases
    ("catalog", "relations"),                    # catalog parts on disk; scaling relations
    ("cluster",),                                # where work runs: connect, run_blocks, HPC, MPI
    ("core", "models"),                          # per-block numpy/torch functions; the networks
    ("io", "config", "_version", "__init__"),    # file formats; release specs; the version
)


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module``'s first-level package (``survey_ml`` itself: ``__init__``)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: its package {top!r} is in no layer of LAYERS; place it")


def test_imports_point_down_the_layers():
    graph = import_graph()
    modules = module_names(ROOT)
    upward = [f"{a} -> {b}: {modules[a].relative_to(ROOT.parent)}:{line}"
              for a, edges in sorted(graph.items()) for b, line in sorted(edges.items())
              if a != PACKAGE and b != PACKAGE and layer_of(b) < layer_of(a)]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_models_do_not_import_core():
    """Same layer, one direction: the networks are plain torch modules (core loads them)."""
    graph = import_graph()
    assert not [(a, b) for a, edges in graph.items() for b in edges
                if a.startswith(f"{PACKAGE}.models") and b.startswith(f"{PACKAGE}.core")]


def test_importing_the_cluster_package_does_not_load_the_cli_or_the_engine():
    code = f"import sys, {PACKAGE}.cluster; print(sorted(m for m in sys.modules if m.startswith('{PACKAGE}')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(result.stdout.strip().splitlines()[-1])
    assert f"{PACKAGE}.cluster.client" in loaded
    assert not [m for m in loaded if m.split(".")[1:2] in (["cli"], ["dask"], ["tasks"], ["store"])], loaded
