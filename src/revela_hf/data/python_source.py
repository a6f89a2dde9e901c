"""Reading Python source with `ast`: its functions, their docstrings, and their code without them.

Shared by the chunker (function-level chunks) and the benchmark sets built from Python code
(HumanEval's documents, the standard library's docstring -> code pairs).
"""

from __future__ import annotations

import ast
import textwrap

Function = ast.FunctionDef | ast.AsyncFunctionDef


def outermost_functions(tree: ast.Module) -> list[Function]:
    """Module-level functions and the methods of classes at any depth, in source order; functions
    nested in functions stay inside their parent."""
    found: list[Function] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append(node)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(tree.body)
    return found


def first_line(func: Function) -> int:
    """The 1-based line where `func` starts, its decorators included."""
    return min([func.lineno, *(d.lineno for d in func.decorator_list)])


def docstring_statement(func: Function) -> ast.Expr | None:
    """`func`'s docstring statement when it has one on a line of its own (not `def f(): "doc"`)."""
    first = func.body[0]
    if ast.get_docstring(func) is None or not isinstance(first, ast.Expr) or first.lineno == func.lineno:
        return None
    return first


def code_without_docstring(source: str, func: Function, doc_node: ast.Expr) -> str:
    """`func`'s source (decorators included) from `source` without the `doc_node` statement and blank lines, dedented."""
    lines = source.splitlines()
    code = lines[first_line(func) - 1 : doc_node.lineno - 1] + lines[doc_node.end_lineno or doc_node.lineno : func.end_lineno]
    return textwrap.dedent("\n".join(line for line in code if line.strip()))


def documented_functions(source: str) -> list[tuple[Function, str, str]] | None:
    """(function, docstring, code without the docstring) for each documented function of `source` in
    source order (see `outermost_functions`); None when `source` is not valid Python."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    found = []
    for func in outermost_functions(tree):
        doc_node = docstring_statement(func)
        if doc_node is not None:
            found.append((func, ast.get_docstring(func) or "", code_without_docstring(source, func, doc_node)))
    return found
