"""The project's import graph: no cycles, and no imports hidden inside functions.

Every module of the given packages is parsed (never imported) and its
``import``/``from`` statements collected, at module level (class bodies and
``if`` blocks included) and inside functions. Imports of project modules
outside the packages are followed too, so a cycle that leaves the packages and
comes back is still found. A function-level import of a project module is how
a cycle hides, so inside the checked packages there must be none (imports of
third-party modules inside functions are allowed).

Checked so far: ``CHECKED_PACKAGES``; add a package there once it is clean.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The packages held to these rules (a package covers its subpackages).
CHECKED_PACKAGES = ["tasks", "tasks.live", "tasks.auth", "accounts", "operations"]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the project module imported
    line: int
    in_function: bool
    # Inside an AppConfig's ready(): Django's place for imports that need the app
    # registry, so not counted as a hidden import.
    in_app_ready: bool = False

    def __str__(self) -> str:
        where = "inside a function" if self.in_function else "at module level"
        return f"{self.source}:{self.line} imports {self.target} {where}"


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's top-level packages (directories with ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for init in sorted(root.glob("*/__init__.py")):
        package_dir = init.parent
        if package_dir.name.startswith("."):
            continue
        for path in sorted(package_dir.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any(part.startswith(".") for part in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _in_packages(module: str, packages: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` imports: itself, else its longest known prefix."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.depth = 0
        self.in_ready = False
        self.imports: list[Import] = []

    def _add(self, name: str, node: ast.stmt) -> None:
        target = _resolve(name, self.modules)
        if target is not None and target != self.module:
            self.imports.append(
                Import(self.module, target, node.lineno, self.depth > 0, self.in_ready)
            )

    def _function(self, node: ast.AST) -> None:
        ready = (
            self.module.endswith(".apps")
            and getattr(node, "name", "") == "ready"
            and not self.depth
        )
        self.depth += 1
        self.in_ready = self.in_ready or ready
        self.generic_visit(node)
        self.in_ready = self.in_ready and not ready
        self.depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            if node.level > 1:
                base_parts = base_parts[: -(node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.modules else base, node)


def imports_of(module: str, modules: dict[str, Path]) -> list[Import]:
    path = modules[module]
    collector = _Collector(module, path.name == "__init__.py", modules)
    collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return collector.imports


def import_graph(packages: list[str], root: Path = ROOT) -> dict[str, list[Import]]:
    """Imports of every module of ``packages`` and of every project module they reach."""
    modules = project_modules(root)
    pending = [m for m in modules if _in_packages(m, packages)]
    assert pending, f"no modules found for {packages}"
    graph: dict[str, list[Import]] = {}
    while pending:
        module = pending.pop()
        if module in graph:
            continue
        graph[module] = imports_of(module, modules)
        pending.extend(i.target for i in graph[module] if i.target not in graph)
    return graph


def import_cycles(packages: list[str], root: Path = ROOT) -> list[list[str]]:
    """Strongly connected groups of modules (function-level imports count) touching ``packages``."""
    graph = import_graph(packages, root)
    edges = {m: sorted({i.target for i in imports}) for m, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges.get(module, []):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 and any(_in_packages(m, packages) for m in group):
                groups.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return groups


def function_level_imports(packages: list[str], root: Path = ROOT) -> list[Import]:
    """Project modules imported inside a function by a module of ``packages``."""
    graph = import_graph(packages, root)
    return [
        i
        for module, imports in sorted(graph.items())
        if _in_packages(module, packages)
        for i in imports
        if i.in_function and not i.in_app_ready
    ]


def test_no_import_cycle():
    assert import_cycles(CHECKED_PACKAGES) == []


def test_no_function_level_import_of_a_project_module():
    assert [str(i) for i in function_level_imports(CHECKED_PACKAGES)] == []


def test_tasks_never_imports_operations():
    """Dependencies point one way: operations (jobs, launching, schedules) depends on tasks
    (store, reporting, reading, live delivery). Where a door of tasks needs the jobs, it
    asks the launcher operations registers (tasks.launcher), at module level or not."""
    graph = import_graph(["tasks"])
    upward = [
        str(i)
        for module, imports in sorted(graph.items())
        if _in_packages(module, ["tasks"])
        for i in imports
        if _in_packages(i.target, ["operations"])
    ]
    assert upward == []


def test_the_lower_packages_never_import_the_project_package_or_the_ones_above():
    """accounts sits below tasks, and no app reaches up into tasksite (its Celery app
    included: tasks are declared with shared_task and sent through current_app)."""
    graph = import_graph(["tasks", "accounts", "operations"])
    upward = [
        str(i)
        for module, imports in sorted(graph.items())
        for i in imports
        if (_in_packages(module, ["accounts"]) and _in_packages(i.target, ["tasks", "operations"]))
        or (
            _in_packages(module, ["tasks", "accounts", "operations"])
            and _in_packages(i.target, ["tasksite"])
        )
    ]
    assert upward == []


MAX_MODULE_LINES = 600
# Generated or measuring code, where length is not a reader's burden.
LONG_ALLOWED = ("bench/", "scripts/", "/migrations/")


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted(ROOT.rglob("*.py"))
        if ".venv" not in path.parts and not any(part.startswith(".") for part in path.parts)
        if not any(marker in f"/{path.relative_to(ROOT)}" for marker in LONG_ALLOWED)
        and not str(path.relative_to(ROOT)).startswith(("bench/", "scripts/"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_entra_id_code_is_imported_by_the_bearer_entry_point_at_module_level():
    graph = import_graph(["tasks.auth"])
    targets = {i.target for i in graph["tasks.auth.bearer"] if not i.in_function}
    assert {"accounts.entra.tokens", "accounts.identity"} <= targets


def test_the_checks_find_a_cycle_hidden_behind_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\nimport json\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import a\n    import json\n")
    (package / "c.py").write_text("from . import a\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "__init__.py").write_text("")
    (other / "d.py").write_text("from pkg import c\n")
    (package / "e.py").write_text("import other.d\n")
    assert import_cycles(["pkg.a"], tmp_path) == [["pkg.a", "pkg.sub.b"]]
    assert [str(i) for i in function_level_imports(["pkg"], tmp_path)] == [
        "pkg.sub.b:2 imports pkg.a inside a function"
    ]
    # Through another package and back: still found.
    (package / "a.py").write_text("import pkg.e\n")
    assert import_cycles(["pkg.a"], tmp_path) == [["other.d", "pkg.a", "pkg.c", "pkg.e"]]
