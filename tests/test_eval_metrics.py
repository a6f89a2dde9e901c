"""Metrics against a hand-computed example, BEIR IO, BM25 and `evaluate_retrieval` end to end."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from revela_hf.evaluation import (
    BeirDataset,
    centred_name,
    evaluate_retrieval,
    format_table,
    hybrid_name,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    plot_results,
    reciprocal_rank_fusion,
    recall_at_k,
    write_beir,
)
from revela_hf.search import center_held_out, center_query_set, fuse, score_fusion, z_score_fusion

QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
RESULTS = {"q1": {"d2": 0.9, "d3": 0.8, "d1": 0.7}, "q2": {"d1": 0.5}}
# q1: DCG = 0 + 2/log2(3) + 1/log2(4), IDCG = 2 + 1/log2(3); q2 finds nothing relevant.
NDCG_Q1 = (2 / math.log2(3) + 0.5) / (2 + 1 / math.log2(3))


def test_metrics_match_hand_computation():
    assert ndcg_at_k(QRELS, RESULTS, 10) == pytest.approx(NDCG_Q1 / 2)
    assert mrr_at_k(QRELS, RESULTS, 10) == pytest.approx(0.25)
    assert recall_at_k(QRELS, RESULTS, 100) == pytest.approx(0.5)
    assert recall_at_k(QRELS, RESULTS, 2) == pytest.approx(0.25)  # q1 finds d3 only in its top 2
    assert mrr_at_k(QRELS, RESULTS, 1) == 0.0
    assert ndcg_at_k({"q": {"a": 1}}, {"q": {"a": 1.0}}, 10) == pytest.approx(1.0)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(QRELS, RESULTS, 0)
    with pytest.raises(ValueError, match="no query"):
        mrr_at_k({"q": {"a": 0}}, RESULTS, 10)


class TableEncoder:
    """A real encoder whose vectors are looked up in a table (so the ranking is known in advance)."""

    vectors = {"find q1": [1.0, 0.0], "find q2": [0.0, 1.0], "alpha": [0.7, 0.0], "beta": [0.9, 0.1], "gamma": [0.8, -0.5]}

    def _encode(self, texts):
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)

    def encode_queries(self, texts, batch_size=32):
        return self._encode(texts)

    def encode_corpus(self, texts, batch_size=32):
        return self._encode(texts)


@pytest.fixture
def beir_folder(tmp_path):
    dataset = BeirDataset(
        corpus={"d1": {"title": "", "text": "alpha"}, "d2": {"title": "", "text": "beta"}, "d3": {"title": "", "text": "gamma"}},
        queries={"q1": "find q1", "q2": "find q2"},
        qrels=QRELS,
    )
    return write_beir(tmp_path / "toy", dataset)


def test_evaluate_retrieval_end_to_end(beir_folder):
    # q1 scores: d2 0.9, d3 0.8, d1 0.7; q2 scores: d2 0.1, d1 0.0, d3 -0.5 -> the d2 hit is at rank 1.
    metrics = evaluate_retrieval(TableEncoder(), beir_folder, k_values=(10, 100))
    assert metrics["ndcg@10"] == pytest.approx((NDCG_Q1 + 1.0) / 2)
    assert metrics["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["recall@100"] == pytest.approx(1.0)


def test_load_beir_round_trip_and_errors(beir_folder, tmp_path):
    data = load_beir(beir_folder)
    assert data.qrels == QRELS and data.queries["q1"] == "find q1" and data.corpus["d2"]["text"] == "beta"
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        load_beir(tmp_path)


def test_bm25_on_the_same_table(beir_folder):
    data = load_beir(beir_folder)
    metrics = evaluate_retrieval("bm25", beir_folder)
    assert set(metrics) == {"ndcg@10", "ndcg@100", "mrr@10", "mrr@100", "recall@10", "recall@100"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values()) and data


def test_table_and_plot(tmp_path):
    table = {"bm25": {"ndcg@10": 0.5, "mrr@10": 0.4, "recall@100": 0.9}, "revela": {"ndcg@10": 0.6, "mrr@10": 0.5, "recall@100": 0.95}}
    text = format_table(table)
    assert "| bm25 | 50.00 | 40.00 | 90.00 |" in text
    png = plot_results(table, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_evaluate_sentence_transformers_and_bm25(beir_folder, tmp_path, capsys):
    from revela_hf.demo.assets import minilm_path
    from revela_hf.cli import main

    out, plot = tmp_path / "results.json", tmp_path / "results.png"
    code = main(["evaluate", "--retriever", minilm_path(), "--data", str(beir_folder), "--output", str(out), "--plot", str(plot),
                 "--hybrid"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| bm25 |" in printed and "ndcg@10" in printed
    results = json.loads(out.read_text())["results"]
    assert set(results) == {minilm_path(), "bm25", hybrid_name(minilm_path())} and plot.is_file()
    assert evaluate_retrieval(minilm_path(), beir_folder, hybrid=True) == results[hybrid_name(minilm_path())]
    assert hybrid_name(minilm_path()) == f"{minilm_path()} + BM25 (score fusion)"  # the default fusion
    main(["evaluate", "--retriever", minilm_path(), "--data", str(beir_folder), "--output", str(out), "--hybrid", "--fusion", "rrf"])
    rrf = json.loads(out.read_text())["results"][hybrid_name(minilm_path(), "rrf")]
    assert rrf == evaluate_retrieval(minilm_path(), beir_folder, hybrid=True, fusion="rrf")


def test_score_fusion_follows_the_formula():
    # Per query, each run's scores min-max normalised ((s - min) / (max - min)), then weighted and summed; a run
    # that did not return a document adds nothing for it. By hand for q1: dense a 1, b .5, d .25, c 0; lexical
    # c 1, b .75, a .375, e 0.
    dense = {"q1": {"a": 0.9, "b": 0.5, "d": 0.3, "c": 0.1}, "q2": {"x": 0.5}}
    lexical = {"q1": {"c": 10.0, "b": 8.0, "a": 5.0, "e": 2.0}, "q3": {"y": 1.0}}
    fused = score_fusion([dense, lexical], top_k=3)
    assert list(fused["q1"]) == ["a", "b", "c"] and fused["q1"] == pytest.approx({"a": 0.6875, "b": 0.625, "c": 0.5})
    assert fused["q2"] == pytest.approx({"x": 0.5}) and fused["q3"] == pytest.approx({"y": 0.5})
    assert score_fusion([dense, lexical], weights=[1.0, 0.0], top_k=2)["q1"] == pytest.approx({"a": 1.0, "b": 0.5})
    assert fuse([dense, lexical], "score", top_k=3) == fused
    assert fuse([dense, lexical], "rrf", top_k=2) == reciprocal_rank_fusion([dense, lexical], top_k=2)
    with pytest.raises(ValueError, match="one non-negative weight per run"):
        score_fusion([dense, lexical], weights=[1.0])
    with pytest.raises(ValueError, match="unknown fusion 'max'; choose one of score, zscore, rrf"):
        fuse([dense], "max")


def test_z_score_fusion_follows_the_formula():
    # Per query, each run's scores standardised (numpy's population mean and std); a document a run did not
    # return gets that run's lowest z-score; equal weights.
    dense = {"q1": {"a": 0.9, "b": 0.5, "d": 0.3, "c": 0.1}, "q2": {"x": 0.5, "z": 0.5}}
    lexical = {"q1": {"c": 10.0, "b": 8.0, "a": 5.0, "e": 2.0}}
    z = {}
    for name, run in (("dense", dense["q1"]), ("lexical", lexical["q1"])):
        values = np.array(list(run.values()))
        z[name] = dict(zip(run, (values - values.mean()) / values.std()))
    docs = ["a", "b", "d", "c", "e"]
    expected = {doc: 0.5 * z["dense"].get(doc, min(z["dense"].values())) + 0.5 * z["lexical"].get(doc, min(z["lexical"].values())) for doc in docs}
    fused = fuse([dense, lexical], "zscore", top_k=5)
    assert fused["q1"] == pytest.approx(expected) and list(fused["q1"]) == sorted(expected, key=lambda d: -expected[d])
    assert fused["q2"] == {"x": 0.0, "z": 0.0}  # all equal: no spread, no preference
    assert z_score_fusion([dense, lexical], weights=[0.0, 1.0], top_k=2)["q1"] == pytest.approx(
        {"c": z["lexical"]["c"], "b": z["lexical"]["b"]}
    )


def test_reciprocal_rank_fusion_follows_the_formula():
    dense = {"q1": {"a": 0.9, "b": 0.8, "c": 0.1}, "q2": {"x": 0.5}}
    lexical = {"q1": {"c": 12.0, "a": 3.0}, "q3": {"y": 1.0}}
    fused = reciprocal_rank_fusion([dense, lexical], k=60, top_k=2)
    expected_q1 = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62}
    assert list(fused["q1"]) == ["a", "c"] and fused["q1"] == pytest.approx({d: expected_q1[d] for d in ("a", "c")})
    assert fused["q2"] == pytest.approx({"x": 1 / 61}) and fused["q3"] == pytest.approx({"y": 1 / 61})
    with pytest.raises(ValueError, match="top_k"):
        reciprocal_rank_fusion([dense], top_k=0)


def test_cli_evaluate_reports_missing_data(tmp_path, capsys):
    from revela_hf.cli import main

    assert main(["evaluate", "--retriever", "bm25", "--data", str(tmp_path / "nowhere")]) == 2
    assert "no BEIR folder" in capsys.readouterr().err


def test_cli_evaluate_writes_the_environment_with_the_results(beir_folder, tmp_path):
    import importlib.metadata
    import platform
    from datetime import datetime, timedelta, timezone

    import mteb
    import peft
    import sentence_transformers
    import torch
    import transformers

    import revela_hf
    from revela_hf.cli import main

    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert main(["evaluate", "--retriever", "bm25", "--data", str(beir_folder), "--output", str(tmp_path / "r.json")]) == 0
    written = json.loads((tmp_path / "r.json").read_text())
    env, versions = written["environment"], written["environment"]["packages"]
    assert set(written["results"]) == {"bm25"}
    for module, name in [(torch, "torch"), (transformers, "transformers"), (peft, "peft"),
                         (sentence_transformers, "sentence-transformers"), (mteb, "mteb")]:
        assert versions[name] == importlib.metadata.version(name) == module.__version__
    assert env["revela-hf"] == revela_hf.__version__ and env["python"] == platform.python_version()
    assert env["platform"] == platform.platform() and env["cpu"]
    if platform.system() == "Linux":
        assert f": {env['cpu']}\n" in open("/proc/cpuinfo").read()
    assert env["accelerator"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)")
    measured = datetime.fromisoformat(env["date_utc"])
    assert measured.utcoffset() == timedelta(0) and before <= measured <= datetime.now(timezone.utc)


class HubEncoder(TableEncoder):
    """Both queries lie near one shared direction (axis 0) and so does one document, the hub: by plain cosine the
    hub comes first for every query; each query's own document differs from it only off that direction."""

    vectors = {"find q1": [1.0, 0.1, 0.0], "find q2": [1.0, 0.0, 0.1],
               "hub": [1.0, 0.0, 0.0], "one": [0.3, 1.0, 0.0], "two": [0.3, 0.0, 1.0]}


@pytest.fixture
def hub_folder(tmp_path):
    corpus = {doc: {"title": "", "text": doc} for doc in ("hub", "one", "two")}
    dataset = BeirDataset(corpus=corpus, queries={"q1": "find q1", "q2": "find q2"}, qrels={"q1": {"one": 1}, "q2": {"two": 1}})
    return write_beir(tmp_path / "hub", dataset)


def test_center_query_set_follows_the_formula():
    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(5, 4)) + 3.0, rng.normal(size=(7, 4))
    got_q, got_d = center_query_set(queries, corpus)
    for got, emb in ((got_q, queries), (got_d, corpus)):
        unit = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in emb.tolist()]
        mean = [sum(col) / len(unit) for col in zip(*unit)]
        for got_row, row in zip(got, unit):
            centred = [v - m for v, m in zip(row, mean)]
            norm = math.sqrt(sum(v * v for v in centred))
            assert got_row.tolist() == pytest.approx([v / norm for v in centred], abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 queries"):
        center_query_set(queries[:1], corpus)
    with pytest.raises(ValueError, match="at least 2 documents"):
        center_query_set(queries, corpus[:1])
    with pytest.raises(ValueError, match="different widths: 4 and 3"):
        center_query_set(queries, corpus[:, :3])
    with pytest.raises(ValueError, match=r"\(rows, dim\) queries embeddings, got shape \(4,\)"):
        center_query_set(queries[0], corpus)


def test_center_held_out_uses_k_other_queries_per_half():
    rng = np.random.default_rng(1)
    queries, corpus = rng.normal(size=(7, 5)) + 2.0, rng.normal(size=(6, 5))
    got_q, got_d = center_held_out(queries, corpus, k=2, seed=3)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    # Brute force: each query is unit(u_i - mean of some 2 *other* queries); those 2 are the same for its whole half
    # and lie in the other half.
    used = {}
    for i in range(len(queries)):
        matches = [pair for pair in itertools.combinations(range(len(queries)), 2) if i not in pair
                   and np.allclose(got_q[i], (u := unit[i] - unit[list(pair)].mean(0)) / np.linalg.norm(u), atol=1e-5)]
        assert len(matches) == 1
        used[i] = matches[0]
    halves = {}
    for i, pair in used.items():
        halves.setdefault(pair, set()).add(i)
    assert len(halves) == 2 and sorted(len(h) for h in halves.values()) == [3, 4]
    for pair, half in halves.items():
        assert not half & set(pair)
    assert got_d == pytest.approx(center_query_set(queries, corpus)[1])
    with pytest.raises(ValueError, match="k >= 2"):
        center_held_out(queries, corpus, k=1)
    with pytest.raises(ValueError, match="Q >= 8"):
        center_held_out(queries, corpus, k=4)


def test_query_set_centring_removes_the_shared_direction(hub_folder):
    plain = evaluate_retrieval(HubEncoder(), hub_folder, k_values=(1, 10))
    centred = evaluate_retrieval(HubEncoder(), hub_folder, k_values=(1, 10), center=True)
    assert plain["mrr@10"] == pytest.approx(0.5)  # the hub first, each query's own document second
    assert centred["mrr@1"] == pytest.approx(1.0) and centred["ndcg@10"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dense retrievers, not BM25"):
        evaluate_retrieval("bm25", hub_folder, center=True)


def test_cli_evaluate_center_queries(beir_folder, tmp_path):
    from revela_hf.demo.assets import minilm_path
    from revela_hf.cli import main

    out = tmp_path / "results.json"
    assert main(["evaluate", "--retriever", minilm_path(), "--data", str(beir_folder), "--output", str(out),
                 "--center-queries", "--hybrid"]) == 0
    results = json.loads(out.read_text())["results"]
    name = centred_name(minilm_path())
    assert set(results) == {minilm_path(), name, "bm25", hybrid_name(minilm_path()), hybrid_name(name)}
    assert results[name] == evaluate_retrieval(minilm_path(), beir_folder, center=True)
    assert results[hybrid_name(name)] == evaluate_retrieval(minilm_path(), beir_folder, hybrid=True, center=True)
    facts = {"paris": "Paris is the capital of France", "py": "Python is a programming language",
             "cat": "Cats are small felines that purr", "nile": "The Nile is a long river in Africa"}
    questions = {"paris": "capital of France?", "py": "which programming language?", "cat": "what animal purrs?",
                 "nile": "a long African river?"}
    four = write_beir(tmp_path / "four", BeirDataset(corpus={k: {"title": "", "text": v} for k, v in facts.items()},
                                                     queries={f"q{k}": v for k, v in questions.items()},
                                                     qrels={f"q{k}": {k: 1} for k in facts}))
    assert main(["evaluate", "--retriever", minilm_path(), "--data", str(four), "--output", str(out), "--center-queries", "2"]) == 0
    results = json.loads(out.read_text())["results"]
    held_out = centred_name(minilm_path(), 2)
    assert held_out == f"{minilm_path()} (centred on 2 held-out queries)" and set(results) == {minilm_path(), held_out, "bm25"}
    assert results[held_out] == evaluate_retrieval(minilm_path(), four, center=2)
    with pytest.raises(SystemExit):
        main(["evaluate", "--retriever", minilm_path(), "--data", str(four), "--center-queries", "1"])
