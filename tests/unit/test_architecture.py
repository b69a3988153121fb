"""Structural rules of ``airflow_provider_p2psms``, checked by reading its source (nothing is imported).

The rules protect a layout where a reader finds each concept by its file name: modules stay one concept
(no module grows past ``MAX_MODULE_LINES``), modules do not import each other in circles, and whatever
differs between SMS gateways lives behind one interface (gateway names appear only under ``hooks/`` and
``sandbox/``, and the hook interface does not import the registry that picks a gateway).

Modules are found by walking the package, so the rules follow it through restructuring. Every helper takes
the package directory; the self-tests at the bottom point them at throwaway packages in ``tmp_path`` to
show that each rule reports a known violation.
"""

from __future__ import annotations

import ast
import itertools
import re
import textwrap
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

PACKAGE_DIR: Final = Path(__file__).resolve().parents[2] / "airflow_provider_p2psms"

MAX_MODULE_LINES: Final = 420

GATEWAY_NAMES: Final = ("bitel", "ippanel")
# Where gateway-specific code may name its gateway: directories relative to the package, and the files
# that register gateways.
GATEWAY_HOMES: Final = ("hooks", "sandbox")
GATEWAY_REGISTRY_FILES: Final = ("get_provider_info.py",)

# Module -> modules (or packages) it must not import at runtime. The hook interface knows nothing of the
# registry that maps connection types to gateway hooks.
#: The hook interface knows nothing of the set of gateways (the registry picks a hook class per
#: connection type); it may read its own gateway's declared facts from ``get_provider_info``.
FORBIDDEN_IMPORTS: Final[Mapping[str, tuple[str, ...]]] = {
    "airflow_provider_p2psms.hooks.base": ("airflow_provider_p2psms.hooks.factory",),
}


# --- helpers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportEdge:
    """``source`` runs ``target`` through the import statement at ``file:line``."""

    source: str
    target: str
    file: str
    line: int
    implied: bool  # target is a parent package of the module named in the statement: its __init__ runs

    @property
    def site(self) -> str:
        return f"{self.file}:{self.line}" + (" (parent package __init__ runs)" if self.implied else "")


@dataclass(frozen=True)
class ImportGraph:
    modules: dict[str, Path]
    edges: list[ImportEdge]

    def adjacency(self) -> dict[str, dict[str, list[ImportEdge]]]:
        adjacency: dict[str, dict[str, list[ImportEdge]]] = {module: {} for module in self.modules}
        for edge in self.edges:
            adjacency[edge.source].setdefault(edge.target, []).append(edge)
        return adjacency


def discover_modules(package_dir: Path) -> dict[str, Path]:
    """Every module under ``package_dir`` by dotted name; a package is the module of its ``__init__.py``."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent).with_suffix("")
        if "__pycache__" in relative.parts:
            continue
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        modules[".".join(parts)] = path
    return modules


def _display(path: Path, package_dir: Path) -> str:
    return path.relative_to(package_dir.parent).as_posix()


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _parents(module: str) -> Iterator[str]:
    parts = module.split(".")
    for end in range(len(parts) - 1, 0, -1):
        yield ".".join(parts[:end])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements at any depth (functions and methods too), except under ``if TYPE_CHECKING:``.

    ``importlib.import_module("...")`` and ``__import__`` calls name their module in a string; they are
    deliberately not followed (the hook registry loads gateway hooks that way).
    """
    yield from _runtime_imports_among(ast.iter_child_nodes(node))


def _runtime_imports_among(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _runtime_imports_among(node.orelse)  # the ``else:`` branch does run
        else:
            yield from runtime_imports(node)


def _named_modules(
    node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: Mapping[str, Path]
) -> list[str]:
    """Dotted names the statement imports: ``from p import m`` names submodule ``p.m`` if it exists, else ``p``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        if node.level > len(package):
            return []  # beyond the top-level package: not importable anyway
        base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def build_import_graph(package_dir: Path) -> ImportGraph:
    """The modules of the package under ``package_dir`` and every import between them that really executes.

    Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so those are edges as well,
    except for the importer's own parent packages: they are already imported before the importer runs.
    An explicit import of a parent package (``from a.b import name``) is kept: it needs that ``__init__``
    to have finished.
    """
    top = package_dir.name
    modules = discover_modules(package_dir)
    edges: list[ImportEdge] = []
    seen: set[tuple[str, str, int]] = set()

    def add(source: str, target: str, file: str, line: int, implied: bool) -> None:
        if target in modules and target != source and (source, target, line) not in seen:
            seen.add((source, target, line))
            edges.append(ImportEdge(source, target, file, line, implied))

    for source, path in modules.items():
        file = _display(path, package_dir)
        # importlib.import_module() names its module in a string: such dynamic imports are not edges here.
        for node in runtime_imports(_parse(path)):
            for target in _named_modules(node, source, path, modules):
                if not _is_within(target, top):
                    continue
                add(source, target, file, node.lineno, implied=False)
                for parent in _parents(target):
                    if not _is_within(source, parent):
                        add(source, parent, file, node.lineno, implied=True)
    edges.sort(key=lambda edge: (edge.file, edge.line, edge.target))
    return ImportGraph(modules, edges)


def strongly_connected_components(adjacency: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in adjacency.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(adjacency):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(start: str, adjacency: Mapping[str, Iterable[str]], within: set[str]) -> list[str]:
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(adjacency.get(node, ())):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if successor in within and successor not in previous:
                previous[successor] = node
                queue.append(successor)
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def find_cycles(graph: ImportGraph) -> list[list[str]]:
    """The shortest cycle through each module of every import cycle, as ``[a, b, a]``, without repeats."""
    adjacency = graph.adjacency()
    cycles: dict[tuple[str, ...], list[str]] = {}
    for component in strongly_connected_components(adjacency):
        if len(component) < 2:
            continue
        for start in sorted(component):
            cycle = _shortest_cycle(start, adjacency, component)
            ring = cycle[:-1]
            first = ring.index(min(ring))
            key = tuple(ring[first:] + ring[:first])
            cycles.setdefault(key, [*key, key[0]])
    return sorted(cycles.values())


def describe_cycle(cycle: list[str], graph: ImportGraph) -> str:
    adjacency = graph.adjacency()
    lines = [" -> ".join(cycle)]
    for source, target in itertools.pairwise(cycle):
        sites = ", ".join(edge.site for edge in adjacency[source][target])
        lines.append(f"    {source} -> {target}: {sites}")
    return "\n".join(lines)


def oversized_modules(package_dir: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    violations = []
    for path in discover_modules(package_dir).values():
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > limit:
            violations.append(f"{_display(path, package_dir)}: {count} lines")
    return violations


def _docstrings(tree: ast.Module) -> set[ast.AST]:
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.add(first.value)
    return found


def _code_texts(node: ast.AST, docstrings: set[ast.AST]) -> Iterator[tuple[str, str]]:
    """(kind, text) of every identifier, import path and non-docstring string literal in ``node`` itself."""
    if isinstance(node, ast.Name):
        yield "name", node.id
    elif isinstance(node, ast.Attribute):
        yield "attribute", node.attr
    elif isinstance(node, ast.alias):
        yield "import", node.name
        if node.asname:
            yield "import alias", node.asname
    elif isinstance(node, ast.ImportFrom) and node.module:
        yield "import from", node.module
    elif isinstance(node, ast.arg):
        yield "argument", node.arg
    elif isinstance(node, ast.keyword) and node.arg:
        yield "keyword argument", node.arg
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield "definition", node.name
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
        for name in node.names:
            yield "name", name
    elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
        yield "name", node.name
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in docstrings:
        yield "string literal", node.value


def gateway_name_leaks(
    package_dir: Path,
    names: Iterable[str] = GATEWAY_NAMES,
    homes: Iterable[str] = GATEWAY_HOMES,
    registry_files: Iterable[str] = GATEWAY_REGISTRY_FILES,
) -> list[str]:
    """Code outside the gateway homes and registry that names a gateway (docstrings and comments may)."""
    pattern = re.compile("|".join(re.escape(name) for name in names), re.IGNORECASE)
    allowed_dirs = tuple(f"{home.strip('/')}/" for home in homes)
    registry = set(registry_files)
    leaks: set[tuple[str, int, str, str]] = set()
    for path in discover_modules(package_dir).values():
        relative = path.relative_to(package_dir).as_posix()
        if relative.startswith(allowed_dirs) or relative in registry:
            continue
        tree = _parse(path)
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            for kind, text in _code_texts(node, docstrings):
                if pattern.search(text):
                    leaks.add((_display(path, package_dir), getattr(node, "lineno", 0), kind, text))
    return [f"{file}:{line}: {kind} {text!r}" for file, line, kind, text in sorted(leaks)]


def forbidden_imports(graph: ImportGraph, rules: Mapping[str, Iterable[str]]) -> list[str]:
    violations = []
    for module, forbidden in rules.items():
        if module not in graph.modules:
            violations.append(f"{module}: no such module any more; update FORBIDDEN_IMPORTS")
            continue
        for edge in graph.edges:
            if edge.source == module and not edge.implied:
                for target in forbidden:
                    if _is_within(edge.target, target):
                        violations.append(f"{edge.site}: {module} imports {edge.target} (forbidden: {target})")
    return violations


def _fail_on(violations: list[str], heading: str) -> None:
    if violations:
        pytest.fail(f"{heading} ({len(violations)}):\n" + "\n".join(violations), pytrace=False)


# --- the rules, on the real package ---------------------------------------------------------------------


def test_package_is_found() -> None:
    assert (PACKAGE_DIR / "__init__.py").is_file()
    assert len(discover_modules(PACKAGE_DIR)) > 1


def test_no_import_cycles() -> None:
    graph = build_import_graph(PACKAGE_DIR)
    cycles = [describe_cycle(cycle, graph) for cycle in find_cycles(graph)]
    _fail_on(cycles, "Import cycles between package modules; move what both sides need into a third module")


def test_modules_stay_under_line_limit() -> None:
    _fail_on(oversized_modules(PACKAGE_DIR), f"Modules over {MAX_MODULE_LINES} lines; split each by concept")


def test_gateway_names_stay_in_hooks_and_sandbox() -> None:
    _fail_on(
        gateway_name_leaks(PACKAGE_DIR),
        f"Gateway names {GATEWAY_NAMES} in code outside {GATEWAY_HOMES} and {GATEWAY_REGISTRY_FILES}; "
        "go through the hook interface instead",
    )


def test_hook_interface_does_not_import_its_registry() -> None:
    _fail_on(
        forbidden_imports(build_import_graph(PACKAGE_DIR), FORBIDDEN_IMPORTS),
        "Forbidden imports (see FORBIDDEN_IMPORTS)",
    )


# --- self-tests: each helper reports a known violation in a throwaway package ---------------------------


def _write_package(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``files`` (paths relative to ``root``, e.g. ``pkg/a.py``) and return ``root / "pkg"``."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root / "pkg"


def test_cycle_check_reports_function_level_and_relative_imports(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import run\n",
            "pkg/b.py": "def run():\n    from . import a\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    graph = build_import_graph(package)
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert describe_cycle(["pkg.a", "pkg.b", "pkg.a"], graph) == (
        "pkg.a -> pkg.b -> pkg.a\n    pkg.a -> pkg.b: pkg/a.py:1\n    pkg.b -> pkg.a: pkg/b.py:2"
    )


def test_cycle_check_ignores_type_checking_imports(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import run\n",
            "pkg/b.py": """\
                import typing
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg.a import Thing
                if typing.TYPE_CHECKING:
                    import pkg.a

                def run(thing: Thing) -> None: ...
            """,
        },
    )
    graph = build_import_graph(package)
    assert [(edge.source, edge.target) for edge in graph.edges] == [("pkg.a", "pkg.b")]
    assert find_cycles(graph) == []


def test_cycle_check_counts_parent_packages_that_really_run(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            # Re-exporting from submodules is no cycle: a submodule's own parents are imported before it runs.
            "pkg/sub/__init__.py": "from pkg.sub.a import A\nfrom pkg.sub import b\n",
            "pkg/sub/a.py": "from pkg.sub.b import B\nA = B\n",
            "pkg/sub/b.py": "B = 1\n",
            # Importing pkg.sub.b from outside runs pkg/sub/__init__.py, which imports pkg.x back.
            "pkg/x.py": "from pkg.sub.b import B\nX = B\n",
            "pkg/sub/c.py": "from pkg.x import X\n",
            "pkg/y.py": "from pkg.sub import c\n",
        },
    )
    graph = build_import_graph(package)
    assert ("pkg.sub", "pkg.sub.b") in {(edge.source, edge.target) for edge in graph.edges}
    assert find_cycles(graph) == []

    (package / "sub" / "__init__.py").write_text("from pkg.sub.a import A\nfrom pkg.sub.c import X\n")
    assert find_cycles(build_import_graph(package)) == [["pkg.sub", "pkg.sub.c", "pkg.x", "pkg.sub"]]
    sites = [edge.site for edge in build_import_graph(package).edges if edge.target == "pkg.sub"]
    assert sites == ["pkg/x.py:1 (parent package __init__ runs)", "pkg/y.py:1 (parent package __init__ runs)"]


def test_line_limit_check_reports_a_long_module(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/short.py": "x = 1\n" * MAX_MODULE_LINES,
            "pkg/deep/long.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
        },
    )
    assert oversized_modules(package) == [f"pkg/deep/long.py: {MAX_MODULE_LINES + 1} lines"]


def test_gateway_check_reports_names_in_code_only(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": '"""Sends through Bitel or IPPanel."""\n',
            "pkg/get_provider_info.py": 'HOOK = "pkg.hooks.bitel.BitelHook"\n',
            "pkg/hooks/bitel.py": "class BitelHook: ...\n",
            "pkg/sandbox/ippanel.py": 'ROUTE = "/ippanel"\n',
            "pkg/operator.py": '''\
                """Module docstring naming Bitel is fine."""
                from pkg.hooks.bitel import BitelHook  # a comment naming IPPanel is fine


                class Operator:
                    """Class docstring: IPPanel."""

                    def send(self, ippanel_token: str) -> None:
                        """Function docstring: Bitel."""
                        self.use_bitel = True
                        call(conn_type="IPPANEL", sms_Bitel=1)
                        print(f"via ippanel {ippanel_token}")
            ''',
        },
    )
    assert gateway_name_leaks(package) == [
        "pkg/operator.py:2: import 'BitelHook'",
        "pkg/operator.py:2: import from 'pkg.hooks.bitel'",
        "pkg/operator.py:8: argument 'ippanel_token'",
        "pkg/operator.py:10: attribute 'use_bitel'",
        "pkg/operator.py:11: keyword argument 'sms_Bitel'",
        "pkg/operator.py:11: string literal 'IPPANEL'",
        "pkg/operator.py:12: name 'ippanel_token'",
        "pkg/operator.py:12: string literal 'via ippanel '",
    ]


def test_forbidden_import_check_reports_function_level_import(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/hooks/__init__.py": "",
            "pkg/hooks/factory.py": "",
            "pkg/registry.py": "",
            "pkg/hooks/base.py": """\
                def hint():
                    from pkg.hooks.factory import gateways


                def widgets():
                    from .. import registry
            """,
        },
    )
    rules = {"pkg.hooks.base": ("pkg.hooks.factory", "pkg.registry"), "pkg.gone": ("pkg.registry",)}
    assert forbidden_imports(build_import_graph(package), rules) == [
        "pkg/hooks/base.py:2: pkg.hooks.base imports pkg.hooks.factory (forbidden: pkg.hooks.factory)",
        "pkg/hooks/base.py:6: pkg.hooks.base imports pkg.registry (forbidden: pkg.registry)",
        "pkg.gone: no such module any more; update FORBIDDEN_IMPORTS",
    ]


def test_forbidden_import_check_ignores_type_checking_imports(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/hooks/__init__.py": "",
            "pkg/hooks/factory.py": "",
            "pkg/hooks/base.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg.hooks.factory import Registry
                else:
                    Registry = None
            """,
        },
    )
    assert forbidden_imports(build_import_graph(package), {"pkg.hooks.base": ("pkg.hooks.factory",)}) == []
