"""How the package imports: lazy exports that stay what they name, and no import cycle between modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAZY_PACKAGES = ("revela_hf", "revela_hf.data", "revela_hf.objectives", "revela_hf.demo", "revela_hf.search")


def _modules() -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module under src/revela_hf."""
    modules = {}
    for path in sorted((SRC / "revela_hf").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, package: str, modules: dict[str, tuple[Path, bool]]) -> set[str]:
    """Every module an import statement anywhere in `tree` names (in functions too; not under `if TYPE_CHECKING:`)."""
    names: set[str] = set()
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            nodes.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import sub` imports the module pkg.sub
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        nodes.extend(ast.iter_child_nodes(node))
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: the revela_hf modules importing it runs}: the modules it imports and their packages (whose
    `__init__` runs first), leaving out its own packages (a package importing its submodules is no cycle)."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        own = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        package = name if is_package else name.rpartition(".")[0]
        imported = _imported_names(ast.parse(path.read_text(encoding="utf-8")), package, modules)
        with_packages = {".".join(m.split(".")[:k]) for m in imported for k in range(1, m.count(".") + 2)}
        graph[name] = {m for m in with_packages if m in modules and m != name and m not in own}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (`[a, b, ..., a]`) per back edge of a depth-first walk; empty when `graph` has no cycle."""
    cycles, done, path = [], set(), []

    def visit(name: str) -> None:
        path.append(name)
        for target in sorted(graph[name]):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return cycles


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    assert "revela_hf.objectives" in graph["revela_hf.modeling_revela"]  # a function-level import
    assert "revela_hf.demo.humaneval" in graph["revela_hf.demo.assets"] and "revela_hf.evaluation" in graph["revela_hf.demo.humaneval"]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert [" -> ".join(cycle) for cycle in import_cycles(graph)] == []


def test_an_exported_name_stays_the_exported_object_after_its_module_is_imported() -> None:
    # `revela_hf.data.prepare` is both a function the package exports and the module defining it; importing the
    # module first (as another test or a user's script may) used to leave the package's `prepare` the module.
    probe = (
        "import importlib, sys\n"
        "for name in %r:\n"
        "    package = importlib.import_module(name)\n"
        "    modules = {export: importlib.import_module(module) for export, module in package._EXPORTS.items()}\n"
        "    wrong = [export for export, module in modules.items() if getattr(package, export) is not getattr(module, export)]\n"
        "    print(name, wrong)\n"
        "from revela_hf.data import prepare\n"
        "print(callable(prepare), type(sys.modules['revela_hf.data.prepare']).__name__)\n"
    ) % (LAZY_PACKAGES,)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-len(LAZY_PACKAGES) - 1:] == [f"{name} []" for name in LAZY_PACKAGES] + ["True module"]
