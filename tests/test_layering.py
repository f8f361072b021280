"""The import structure of the code, checked statically from its source.

Nothing of the code under test is imported here: every ``.py`` file of ``agent/``,
``drivers/``, ``protocols/`` and ``hallctl/`` is parsed with :mod:`ast` and its imports are
read from the tree. The rules:

- no import circle among those modules. Module-level and function-level imports both count
  (a function-level import that closes a circle only hides it), and so do imports under
  ``if TYPE_CHECKING:``: they never run, but a circle of types is still two modules that
  cannot be understood, or moved, one without the other.
- layers point one way, agent → drivers → protocols: ``drivers`` imports neither ``agent``
  nor ``hallctl``; ``protocols`` imports none of ``drivers``, ``agent``, ``hallctl``; and
  ``hallctl`` (central's tools) is imported by none of ``agent``, ``drivers``, ``protocols``.
- ``agent/core`` (the queue engine) is pure: only the standard library, ``agent.core``,
  ``agent.config``, ``agent.errors`` (the root exception) and ``agent.workdays`` (the
  calendar's pure date logic); no asyncio, sqlite3, fastapi,
  aiomqtt or drivers.
- what ``hall-agent run`` loads holds neither the demo and its emulators (``agent.demo``)
  nor ``hallctl``.

The layer and purity rules count ``if TYPE_CHECKING:`` imports too: a type taken from a
higher layer is still a dependency on it. Only what ``hall-agent run`` loads leaves them
out, since they are never executed.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "drivers", "protocols", "hallctl")

Graph = Mapping[str, Iterable[str]]


# -- reading the imports ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Import:
    """One imported module, as written in one module's source."""

    target: str  # the dotted module name (for ``from x import y``: ``x.y`` when that is a module)
    line: int
    function: str | None  # the enclosing function's name, None at module level
    type_only: bool  # under ``if TYPE_CHECKING:``


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files[module_name(path)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def read_imports(
    tree: ast.AST, module: str, known: Iterable[str], *, is_package: bool = False
) -> list[Import]:
    """Every import in ``tree`` (the source of ``module``), wherever it stands."""
    known = set(known)
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, function, True)
            for stmt in node.orelse:
                visit(stmt, function, type_only)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name if function is None else function
        elif isinstance(node, ast.Lambda):
            function = function or "<lambda>"
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, node.lineno, function, type_only))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, is_package)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if candidate in known else base
                found.append(Import(target, node.lineno, function, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, function, type_only)

    visit(tree, None, False)
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class Code:
    files: dict[str, Path]
    trees: dict[str, ast.Module]
    imports: dict[str, list[Import]]

    def internal(self, name: str) -> str | None:
        """The module of ours that an import of ``name`` executes last, or None."""
        while name and name not in self.files:
            name = name.rpartition(".")[0]
        return name or None


@pytest.fixture(scope="module")
def code() -> Code:
    files = source_files()
    trees = {m: ast.parse(p.read_text(encoding="utf-8"), str(p)) for m, p in files.items()}
    imports = {
        m: read_imports(trees[m], m, files, is_package=files[m].name == "__init__.py")
        for m in files
    }
    return Code(files, trees, imports)


def import_graph(code: Code) -> dict[str, set[str]]:
    """Module → the modules of ours it imports, wherever the import stands."""
    graph: dict[str, set[str]] = {m: set() for m in code.files}
    for module, imports in code.imports.items():
        for imp in imports:
            target = code.internal(imp.target)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


# -- finding circles --------------------------------------------------------------------


def find_circles(graph: Graph) -> list[list[str]]:
    """The import circles of ``graph``, each as the modules in import order with the first
    again at the end. Every module on some circle is named: a tangle of several circles
    (one strongly connected component) gives as many cycles as it takes to cover it."""
    nodes = set(graph) | {t for targets in graph.values() for t in targets}
    edges = {n: sorted(set(graph.get(n, ()))) for n in sorted(nodes)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    for start in edges:
        if start in index:
            continue
        # Tarjan's algorithm, iterative: (node, position in its edge list).
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if position < len(targets):
                work.append((node, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])

    cycles = []
    for component in components:
        uncovered = set(component)
        while uncovered:
            cycle = _cycle_through(min(uncovered), component, edges)
            uncovered -= set(cycle)
            cycles.append(cycle)
    return sorted(cycles)


def _cycle_through(start: str, component: set[str], edges: Mapping[str, list[str]]) -> list[str]:
    """A shortest cycle from ``start`` back to it, staying inside its component."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in edges[node]:
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target in component and target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"no cycle through {sorted(component)}")  # pragma: no cover


def describe_circle(cycle: list[str], code: Code | None = None) -> str:
    text = " -> ".join(cycle)
    if code is None:
        return text
    where = []
    for source, target in itertools.pairwise(cycle):
        first = next(i for i in code.imports[source] if code.internal(i.target) == target)
        how = (
            " (under TYPE_CHECKING)"
            if first.type_only
            else f" (in {first.function}())"
            if first.function
            else ""
        )
        where.append(f"  {code.files[source].relative_to(ROOT)}:{first.line} imports {target}{how}")
    return text + "\n" + "\n".join(where)


# -- the run path -----------------------------------------------------------------------


def _verb_of(test: ast.expr) -> str | None:
    """``"run"`` for ``command == "run"`` or ``args.command == "run"``, else None."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    if not isinstance(test.ops[0], ast.Eq):
        return None
    left, right = test.left, test.comparators[0]
    for name, value in ((left, right), (right, left)):
        is_command = (isinstance(name, ast.Name) and name.id == "command") or (
            isinstance(name, ast.Attribute) and name.attr == "command"
        )
        if is_command and isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
    return None


def run_path_functions(tree: ast.Module, verb: str = "run", entry: str = "main") -> set[str]:
    """The module-level functions of the CLI that serve ``verb``: from ``entry``, every
    function called, skipping the bodies of ``if command == "<another verb>":``."""
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    if entry not in functions:
        raise AssertionError(f"the CLI has no {entry}()")
    reached: set[str] = set()
    pending = [entry]
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        for called in _calls(functions[name], verb):
            if called in functions:
                pending.append(called)
    return reached


def _calls(node: ast.AST, verb: str) -> Iterator[str]:
    if isinstance(node, ast.If):
        branch = _verb_of(node.test)
        if branch is not None and branch != verb:
            for stmt in node.orelse:
                yield from _calls(stmt, verb)
            return
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        yield node.func.id
    for child in ast.iter_child_nodes(node):
        yield from _calls(child, verb)


def _run_path_imports(function: ast.AST, verb: str, module: str, known: set[str]) -> list[str]:
    """The imports inside one CLI function on the ``verb`` path."""
    targets: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If):
            if _is_type_checking(node.test):
                return
            branch = _verb_of(node.test)
            if branch is not None and branch != verb:
                for stmt in node.orelse:
                    visit(stmt)
                return
        if isinstance(node, ast.Import | ast.ImportFrom):
            wrapper = ast.Module(body=[node], type_ignores=[])
            targets.extend(i.target for i in read_imports(wrapper, module, known))
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(function)
    return targets


def run_closure(
    code: Code, cli: str = "agent.cli", extra: Iterable[str] = ("agent.daemon",)
) -> dict[str, str | None]:
    """Every module of ours that ``hall-agent run`` executes, each with the module that
    brought it in (None for the starting ones)."""
    known = set(code.files)
    cli_tree = code.trees[cli]
    served = run_path_functions(cli_tree)
    cli_functions = {
        node.name: node
        for node in cli_tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }

    def imports_of(module: str) -> list[str]:
        if module == cli:
            targets = [
                i.target for i in code.imports[cli] if i.function is None and not i.type_only
            ]
            for name in sorted(served):
                targets += _run_path_imports(cli_functions[name], "run", cli, known)
            return targets
        return [i.target for i in code.imports[module] if not i.type_only]

    brought_by: dict[str, str | None] = {}
    queue: deque[str] = deque()

    def add(module: str, by: str | None) -> None:
        # Importing a.b.c executes a and a.b first.
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in code.files and name not in brought_by:
                brought_by[name] = by
                queue.append(name)

    for start in (cli, *extra):
        add(start, None)
    while queue:
        module = queue.popleft()
        for target in imports_of(module):
            internal = code.internal(target)
            if internal is not None:
                add(internal, module)
    return brought_by


def _chain(brought_by: Mapping[str, str | None], module: str) -> str:
    chain = [module]
    while (by := brought_by[chain[-1]]) is not None:
        chain.append(by)
    return " <- ".join(chain)


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# -- the detector itself ----------------------------------------------------------------


def test_the_detector_finds_a_circle_in_a_synthetic_graph() -> None:
    graph = {
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c", "pkg.x"},
        "pkg.c": {"pkg.a"},
        "pkg.d": {"pkg.a"},
        "pkg.x": set(),
        "pkg.self": {"pkg.self"},
    }
    circles = find_circles(graph)
    assert circles == [
        ["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
        ["pkg.self", "pkg.self"],
    ]
    assert "pkg.a -> pkg.b -> pkg.c -> pkg.a" in [describe_circle(c) for c in circles]
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    # Two circles sharing a module: both are reported, so every module is named.
    assert find_circles({"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}) == [
        ["a", "b", "a"],
        ["c", "b", "c"],
    ]


def test_the_detector_counts_function_level_imports_and_skips_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import pkg.b\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.c import Thing\n"
        "def f():\n"
        "    from pkg import d\n"
    )
    found = read_imports(ast.parse(source), "pkg.a", {"pkg.a", "pkg.b", "pkg.c", "pkg.d"})
    assert [(i.target, i.function, i.type_only) for i in found if i.target != "typing"] == [
        ("pkg.b", None, False),
        ("pkg.c", None, True),
        ("pkg.d", "f", False),
    ]


def test_the_run_path_skips_other_verbs_but_not_run() -> None:
    source = (
        "def main(argv=None):\n"
        "    return _dispatch(argv)\n"
        "def _dispatch(command):\n"
        "    if command == 'demo':\n"
        "        from agent.demo import go\n"
        "        return _demo()\n"
        "    if command == 'run':\n"
        "        return _run()\n"
        "def _run():\n"
        "    from agent.daemon import serve\n"
        "def _demo():\n"
        "    pass\n"
    )
    tree = ast.parse(source)
    assert run_path_functions(tree) == {"main", "_dispatch", "_run"}
    known = {"agent.demo", "agent.daemon"}
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert _run_path_imports(functions["_dispatch"], "run", "agent.cli", known) == []
    assert _run_path_imports(functions["_run"], "run", "agent.cli", known) == ["agent.daemon"]


# -- the code ---------------------------------------------------------------------------


def test_no_import_circles(code: Code) -> None:
    circles = find_circles(import_graph(code))
    assert not circles, "import circles:\n" + "\n".join(describe_circle(c, code) for c in circles)


FORBIDDEN = {
    "drivers": ("agent", "hallctl"),
    "protocols": ("drivers", "agent", "hallctl"),
    "agent": ("hallctl",),
}


def test_layers_point_one_way(code: Code) -> None:
    wrong = []
    for module, imports in sorted(code.imports.items()):
        layer = module.split(".")[0]
        for imp in imports:
            for forbidden in FORBIDDEN.get(layer, ()):
                if _under(imp.target, forbidden):
                    where = code.files[module].relative_to(ROOT)
                    wrong.append(f"{where}:{imp.line} ({module}) imports {imp.target}")
    assert not wrong, "imports against the layers (agent -> drivers -> protocols):\n" + (
        "\n".join(wrong)
    )


# pydantic is pure validation (no I/O): the config is made of it, and the events' schemas.
CORE_ALLOWED = ("agent.core", "agent.config", "agent.errors", "agent.workdays", "pydantic")
# The config sits below the engine: it validates what the engine runs on and never needs it.
CONFIG_ALLOWED = (
    "agent.config",
    "agent.errors",
    "agent.workdays",
    "pydantic",
    "pydantic_core",
    "yaml",
)


def _imports_beyond(code: Code, rooms: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """The imports of the modules under ``rooms`` of anything but the standard library and
    ``allowed``, as ``file:line (module) imports target``."""
    wrong = []
    for module, imports in sorted(code.imports.items()):
        if not any(_under(module, room) for room in rooms):
            continue
        for imp in imports:
            top = imp.target.split(".")[0]
            if top in sys.stdlib_module_names and top not in PACKAGES:
                continue
            if any(_under(imp.target, ok) for ok in allowed):
                continue
            where = code.files[module].relative_to(ROOT)
            wrong.append(f"{where}:{imp.line} ({module}) imports {imp.target}")
    return wrong


def test_the_engine_is_pure(code: Code) -> None:
    wrong = _imports_beyond(code, ("agent.core",), CORE_ALLOWED)
    assert not wrong, (
        "agent/core may import only the standard library, agent.core, agent.config, "
        "agent.errors, agent.workdays and pydantic:\n" + "\n".join(wrong)
    )


def test_the_config_points_down_only(code: Code) -> None:
    wrong = _imports_beyond(code, ("agent.config", "agent.workdays"), CONFIG_ALLOWED)
    assert not wrong, (
        "agent/config and agent/workdays.py may import only the standard library, "
        "agent.config, agent.errors, agent.workdays, pydantic(-core) and yaml:\n" + "\n".join(wrong)
    )


@pytest.mark.parametrize("forbidden", ["agent.demo", "hallctl"])
def test_hall_agent_run_loads_no_demo_and_no_hallctl(code: Code, forbidden: str) -> None:
    closure = run_closure(code)
    assert "agent.daemon" in closure
    assert "agent.web.app" in closure  # the closure does reach the daemon's own modules
    found = sorted(m for m in closure if _under(m, forbidden))
    assert not found, f"`hall-agent run` imports {forbidden}:\n" + "\n".join(
        _chain(closure, m) for m in found
    )


def test_importing_the_cli_and_daemon_loads_no_demo_and_no_hallctl() -> None:
    program = "import agent.cli, agent.daemon, sys; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = done.stdout.split()
    assert "agent.daemon" in loaded
    found = [m for m in loaded if _under(m, "agent.demo") or _under(m, "hallctl")]
    assert not found, f"importing agent.cli and agent.daemon loads {found}"


# What `hall-agent run` may load only when the config uses it (docs/benchmarks.md, "Start
# and client commands"): the composition root imports these inside the function that
# builds the feature.
ONLY_WHEN_CONFIGURED = (
    "escpos",  # a ticket printer
    "PIL",
    "qrcode",
    "barcode",
    "agent.features.printing",
    "agent.features.documents",  # a camera or a document scanner
    "agent.features.identity",  # an ID card reader
    "cryptography",
    "agent.features.voice",  # an announcer
    "agent.features.led",  # LED strips
    "agent.features.inputs",  # ticket buttons, code scanners
    "aiomqtt",  # the central link's first connection (mqtt.url)
    "paho",
    "prometheus_client",  # the first scrape of /metrics
    "pydantic.v1",  # never: FastAPI's v1 check answers without it (agent/web/__init__.py)
)


def test_importing_the_daemon_loads_no_device_feature_and_builds_no_openapi_model() -> None:
    program = (
        "import agent.daemon, sys\n"
        "from fastapi.openapi.models import OpenAPI\n"
        "from pydantic import BaseModel\n"
        "print(OpenAPI.__pydantic_complete__, BaseModel.model_config.get('defer_build'))\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    first, *loaded = done.stdout.splitlines()
    assert "agent.web.app" in loaded
    found = [m for m in loaded if any(_under(m, name) for name in ONLY_WHEN_CONFIGURED)]
    assert not found, f"importing agent.daemon loads {found}"
    # The OpenAPI document's models are built when /openapi.json is first asked for, and
    # the deferral ended with FastAPI's import (tests/test_api.py serves the document).
    assert first == "False None"


def _wait_for_calls(source: str) -> list[int]:
    """Lines that call ``asyncio.wait_for``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "wait_for"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "asyncio"
    ]


def test_the_wait_for_finder_finds_one() -> None:
    source = "import asyncio\nasync def f(e):\n    await asyncio.wait_for(e.wait(), 1)\n"
    assert _wait_for_calls(source) == [3]
    assert _wait_for_calls("async def f(c):\n    await c.wait_for(lambda: True)\n") == []


def test_timeouts_use_asyncio_timeout_not_wait_for() -> None:
    """On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that lands as the
    awaited thing finishes, and a task asked to stop then runs on (a stop that hangs until
    systemd kills it); ``async with asyncio.timeout(...)`` does not."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _wait_for_calls(path.read_text(encoding="utf-8"))
    ]
    assert found == [], f"use `async with asyncio.timeout(...)` instead at {found}"
