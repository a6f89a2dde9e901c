"""Fuzzing readers and chunkers with random bytes, encodings, sizes and line lengths: never an unhandled
exception, and every input is accounted for (as documents and chunks, or as counted skips)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from revela_hf.data.chunking import DOCUMENT_KINDS, Chunker
from revela_hf.data.readers import TABLE_EXTENSIONS, DocumentReader

FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
WORD = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=30)
LINE = st.lists(WORD, max_size=40).map(" ".join)
MARKUP = st.sampled_from(["", "```", "~~~", ".. code-block:: python", "::", ">>> x = 1", "def f(x):", "    return x", "#", "@d", ")", "else:"])
TEXT = st.lists(st.one_of(LINE, MARKUP, st.just("")), max_size=60).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n", "\r"]).map(lambda newline: newline.join(lines)))
EXTENSIONS = [".txt", ".md", ".rst", ".py", ".c", ".jsonl", ".csv", ".tsv", ".parquet", ".bin", ""]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]


@FUZZ
@given(text=TEXT, kind=st.sampled_from(DOCUMENT_KINDS), max_words=st.integers(1, 50))
@example(text=".. code-block:: python", kind="rest", max_words=1)  # found by the fuzzer: the directive's words were dropped
def test_chunks_keep_every_word_within_the_limit(text, kind, max_words):
    chunks = Chunker(max_words=max_words).chunks(text, kind)
    assert all(0 < len(chunk.split()) <= max_words for chunk in chunks)
    assert sorted(word for chunk in chunks for word in chunk.split()) == sorted(text.split())


def _contents():
    as_text = st.tuples(TEXT, st.sampled_from(ENCODINGS)).map(lambda te: te[0].encode(te[1], errors="replace"))
    return st.one_of(st.binary(max_size=3000), as_text, st.just(b""), st.just(b"\xef\xbb\xbf"))


@FUZZ
@given(suffix=st.sampled_from(EXTENSIONS), data=_contents())
def test_every_random_file_is_read_or_counted_as_skipped(suffix, data):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"file{suffix}").write_bytes(data)
        reader = DocumentReader([tmp])  # a folder: a file that cannot be used is skipped (counted), never raised
        documents = list(reader)
    assert documents or sum(reader.skipped.values()) >= 1, f"{suffix} file of {len(data)} bytes neither read nor counted"
    assert all(d.text.strip() for d in documents)
    if suffix not in TABLE_EXTENSIONS:
        assert len(documents) + sum(reader.skipped.values()) == 1


@FUZZ
@given(name=st.sampled_from(["state.json", "dataset_dict.json"]), data=_contents())
def test_a_broken_datasets_folder_inside_an_input_folder_is_counted(name, data):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "saved").mkdir()
        (Path(tmp) / "saved" / name).write_bytes(data)
        reader = DocumentReader([tmp])
        assert list(reader) == [] and reader.skipped == {"unreadable datasets folder": 1}
