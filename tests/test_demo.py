"""`revela demo --budget ci`: the main job end to end on a truncated SmolLM2, in a real process."""

import json
import os
import subprocess
import sys

import pytest
from datasets import load_from_disk

from revela_hf import RevelaRetriever
from revela_hf.search import load_encoder
from revela_hf.all_but_the_top import AllButTheTop


def run_demo(out, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "revela_hf.cli", "demo", "--budget", "ci", "--output", str(out), *args],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_truncated_model(tmp_path):
    out = tmp_path / "demo"
    run_demo(out)
    results = json.loads((out / "results.json").read_text())
    table = results["table"]
    assert set(table) == {"SmolLM2-135M untrained", "SmolLM2-135M + Revela", "SmolLM2-135M + Revela, SIF mean + EOS, all-but-the-top",
                          "BM25", "all-MiniLM-L6-v2 (supervised)"}
    for scores in table.values():
        assert 0.0 <= scores["ndcg@10"] <= 1.0
    assert table["all-MiniLM-L6-v2 (supervised)"]["ndcg@10"] > table["BM25"]["ndcg@10"] > 0.2
    assert [p["step"] for p in results["curve"]] == [3]
    # The ci budget's last 2 of 3 steps decay the rate along a cosine: steps 1-3 run at lr * (1, 1, 0.5)
    # (1 stable step, then 0.5 * (1 + cos(pi * k / 2)) for k = 0, 1).
    assert [p["step"] for p in results["train_loss"]] == [1, 2, 3]
    assert [p["learning_rate"] for p in results["train_loss"]] == pytest.approx([3e-4, 3e-4, 1.5e-4])
    assert (out / "results.png").stat().st_size > 10_000
    # The budget's interleave: groups of 4 chunks taken in turn from 2 neighbouring modules (more where
    # a module ends and the next takes its place in the window).
    plan = results["plan"]
    corpus = load_from_disk(str(next(out.glob("corpus-interleave-*"))))
    assert all(len(row["chunks"]) == plan["group_size"] == 4 for row in corpus)
    modules = sorted(len(set(row["doc_ids"])) for row in corpus)
    assert modules[len(modules) // 2] == plan["interleave_width"] == 2
    retriever = RevelaRetriever.from_pretrained(results["retriever"])
    embeddings = retriever.encode_queries(["return the sum of a list"], show_progress_bar=False)
    assert embeddings.shape[0] == 1 and abs(float(embeddings.norm()) - 1.0) < 1e-4
    # The projected copy: the retriever's mean, its tokens SIF-weighted by the training chunks' frequencies, beside its
    # EOS state, passed through the projection saved beside it (16 directions per pooled vector).
    projected = load_encoder(results["projected_retriever"])
    projection = AllButTheTop.load(results["projected_retriever"])
    assert projection.directions.shape == (32, 2 * embeddings.shape[1])
    both = RevelaRetriever.from_pretrained(results["retriever"], pooling="mean+eos")
    both.fit_token_weights([chunk for row in corpus for chunk in row["chunks"]])
    expected = projection.transform(both.encode_queries(["return the sum of a list"], show_progress_bar=False).numpy())
    assert projected.encode_queries(["return the sum of a list"]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_demo_trains_each_objective_on_the_same_data(tmp_path):
    out = tmp_path / "demo"
    for objective, name in (("dream", "DREAM"), ("replug", "REPLUG")):
        run_demo(out, "--objective", objective)
        results = json.loads((out / f"results-{objective}.json").read_text())
        assert results["objective"] == objective and f"SmolLM2-135M + {name}" in results["table"]
        card = (out / f"run-{objective}" / "retriever" / "README.md").read_text()
        assert f"| objective | `{objective}` |" in card
        assert RevelaRetriever.from_pretrained(results["retriever"]).encode_queries(["x"], show_progress_bar=False).shape[0] == 1


@pytest.mark.slow
def test_demo_adapts_minilm_and_starts_from_the_supervised_model(tmp_path):
    out = tmp_path / "demo"
    run_demo(out, "--retriever", "minilm")
    results = json.loads((out / "results.json").read_text())
    table = results["table"]
    assert set(table) == {"all-MiniLM-L6-v2 untrained", "all-MiniLM-L6-v2 + Revela", "BM25", "all-MiniLM-L6-v2 (supervised)"}
    # Before training, the library's mean-pooled encoder is the sentence-transformers model itself.
    for metric, value in table["all-MiniLM-L6-v2 (supervised)"].items():
        assert table["all-MiniLM-L6-v2 untrained"][metric] == pytest.approx(value, abs=1e-3)
    assert results["pooling"] == "mean" and results["temperature"] == 0.05
    retriever = RevelaRetriever.from_pretrained(results["retriever"])
    assert (retriever.pooling, retriever.query_prefix, retriever.passage_prefix) == ("mean", "", "")
