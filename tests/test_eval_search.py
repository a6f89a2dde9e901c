"""Sharded faiss indexes (flat and HNSW) and the `revela index` / `revela search` commands."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from conftest import OneHotEncoder

from revela_hf.evaluation import BeirDataset, write_beir
from revela_hf.search import BM25Retriever, ShardedIndex, reciprocal_rank_fusion

DOCS = [(f"d{i}", f"document number {i}") for i in range(7)]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_sharded_index_finds_the_right_document(tmp_path, kind):
    index = ShardedIndex.build(OneHotEncoder(), iter(DOCS), tmp_path / "idx", kind=kind, shard_size=3)
    assert index.config.shards == ["shard_00000", "shard_00001", "shard_00002"] and index.config.num_docs == 7
    reopened = ShardedIndex.load(tmp_path / "idx")
    hits = reopened.search(OneHotEncoder().encode_queries(["document number 5", "document number 1"]), top_k=3)
    assert [h.doc_id for h in hits[0]][0] == "d5" and hits[0][0].score == pytest.approx(1.0)
    assert hits[1][0].doc_id == "d1" and hits[1][0].text == "document number 1"
    assert len(hits[0]) == 3 and hits[0][1].score == pytest.approx(0.0)


@pytest.mark.parametrize("fusion", ["zscore", "score", "rrf"])
def test_hybrid_index_fuses_dense_and_bm25_rankings(tmp_path, fusion):
    # Dense (one-hot on the trailing number) and lexical (the fruit word) disagree on purpose.
    fruits = ["apple", "banana", "cherry", "grape", "lemon", "mango", "pear"]
    docs = [(f"d{i}", f"{fruit} document number {i}") for i, fruit in enumerate(fruits)]
    ShardedIndex.build(OneHotEncoder(), iter(docs), tmp_path / "idx", shard_size=3, lexical=True)
    reopened = ShardedIndex.load(tmp_path / "idx")
    assert reopened.config.lexical and (tmp_path / "idx" / reopened.config.generation / "bm25").is_dir()
    queries = ["banana 3", "pear 6"]
    embeddings = OneHotEncoder().encode_queries(queries)
    hits = reopened.search_hybrid(queries, embeddings, top_k=3, fusion=fusion)
    # An independent reference: the dense ranking of every document and BM25 over the same texts, fused by
    # reciprocal rank or by min-max normalised scores, written out here.
    dense = {str(q): {h.doc_id: h.score for h in q_hits} for q, q_hits in enumerate(reopened.search(embeddings, top_k=7))}
    lexical = dict(enumerate(BM25Retriever([d for d, _ in docs], [t for _, t in docs]).search(queries, 7)))
    lexical = {str(q): run for q, run in lexical.items()}
    if fusion == "rrf":
        expected = reciprocal_rank_fusion([dense, lexical], top_k=3)
    else:
        expected = {}
        for q in dense:
            runs = [run for run in (dense[q], lexical[q]) if run]
            union = list(dict.fromkeys(doc for run in runs for doc in run))
            scores = dict.fromkeys(union, 0.0)
            for run in runs:
                values = np.array(list(run.values()))
                spread = values.std() if fusion == "zscore" else values.max() - values.min()
                low = values.mean() if fusion == "zscore" else values.min()
                normalised = dict(zip(run, (values - low) / spread if spread > 0 else np.full(len(values), float(fusion != "zscore"))))
                floor = min(normalised.values()) if fusion == "zscore" else 0.0  # a document the run did not return
                for doc in union:
                    scores[doc] += 0.5 * normalised.get(doc, floor)
            expected[q] = dict(sorted(scores.items(), key=lambda item: -item[1])[:3])
    for q, q_hits in enumerate(hits):
        assert [(h.doc_id, pytest.approx(h.score)) for h in q_hits] == list(expected[str(q)].items())
    if fusion == "zscore":  # BM25 returned d1 alone: a one-document run adds nothing to z-scores (fusion.py)
        assert hits[0][0].doc_id == "d3" and hits[0][1].score == pytest.approx(hits[0][2].score)
    else:
        assert {h.doc_id for h in hits[0][:2]} == {"d1", "d3"}
    assert hits[0][0].text == dict(docs)[hits[0][0].doc_id]
    assert [h.doc_id for h in hits[1]][0] == "d6"  # both rankings agree
    with pytest.raises(ValueError, match="revela index --hybrid"):
        ShardedIndex.build(OneHotEncoder(), iter(docs), tmp_path / "dense").search_hybrid(queries, embeddings)


def test_index_errors(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        ShardedIndex.build(OneHotEncoder(), iter([]), tmp_path / "empty")
    with pytest.raises(ValueError, match="index kind"):
        ShardedIndex.build(OneHotEncoder(), iter(DOCS), tmp_path / "bad", kind="ivf")
    with pytest.raises(FileNotFoundError, match="revela index"):
        ShardedIndex.load(tmp_path / "missing")


class OffsetEncoder:
    """Text -> a fixed random vector seeded by the text; queries also lie along one shared direction (axis 0)."""

    def encode_corpus(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=6) for t in texts]).astype(np.float32)

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.encode_corpus(texts) + np.array([4.0, 0, 0, 0, 0, 0], dtype=np.float32)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_calibrated_index_centres_every_query_searched(tmp_path, kind):
    calibration = [f"example question {i}" for i in range(5)]
    index = ShardedIndex.build(OffsetEncoder(), iter(DOCS), tmp_path / "idx", kind=kind, shard_size=3,
                               calibration_queries=calibration)
    reopened = ShardedIndex.load(tmp_path / "idx")
    assert reopened.config.calibration_queries == 5 and reopened.config.dim == 6
    # The formula written out: unit rows, each side minus its mean (the calibration queries' for queries, the
    # corpus's for documents), unit rows again, inner products.
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    docs = unit(OffsetEncoder().encode_corpus([t for _, t in DOCS]))
    query_mean = unit(OffsetEncoder().encode_queries(calibration)).mean(axis=0)
    for query in ("a new question", "another one"):  # each searched alone
        q = unit(unit(OffsetEncoder().encode_queries([query])) - query_mean)
        scores = (q @ unit(docs - docs.mean(axis=0)).T)[0]
        expected = [(DOCS[i][0], pytest.approx(float(scores[i]), abs=1e-5)) for i in np.argsort(-scores)[:4]]
        hits = reopened.search(OffsetEncoder().encode_queries([query]), top_k=4)[0]
        assert [(h.doc_id, h.score) for h in hits] == expected
    assert index.centering()["doc_mean"] == pytest.approx(docs.mean(axis=0), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 calibration queries, got 1"):
        ShardedIndex.build(OffsetEncoder(), iter(DOCS), tmp_path / "one", calibration_queries=["only one"])
    (tmp_path / "idx" / reopened.config.generation / "centering.npz").unlink()
    with pytest.raises(FileNotFoundError, match="centering.npz is missing"):
        reopened.search(OffsetEncoder().encode_queries(["a new question"]))


def test_cli_index_and_search(tmp_path, capsys):
    from revela_hf.demo.assets import minilm_path
    from revela_hf.cli import main

    corpus = {"py": "Python is a programming language with readable syntax", "paris": "Paris is the capital of France",
              "cat": "Cats are small domesticated felines that purr"}
    data = write_beir(tmp_path / "beir", BeirDataset(corpus={k: {"title": "", "text": v} for k, v in corpus.items()}, queries={}, qrels={}))
    assert main(["index", "--retriever", minilm_path(), "--corpus", str(data / "corpus.jsonl"), "--output", str(tmp_path / "idx"), "--kind", "hnsw", "--shard-size", "2", "--hybrid"]) == 0
    capsys.readouterr()
    for mode in ([], ["--hybrid"], ["--hybrid", "--fusion", "rrf"]):
        assert main(["search", "what is the capital city of France?", "--index", str(tmp_path / "idx"), "--top-k", "2", "--json", *mode]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["hits"][0]["id"] == "paris" and len(result["hits"]) == 2
    examples = tmp_path / "examples.txt"
    examples.write_text("which language has readable syntax?\n\nwhat animal purrs?\n", encoding="utf-8")
    assert main(["index", "--retriever", minilm_path(), "--corpus", str(data), "--output", str(tmp_path / "centred"),
                 "--calibration-queries", str(examples)]) == 0
    assert "centred on 2 calibration queries" in capsys.readouterr().out
    assert main(["search", "what is the capital city of France?", "--index", str(tmp_path / "centred"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "paris"
