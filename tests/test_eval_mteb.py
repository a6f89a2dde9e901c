"""mteb runs a Revela retriever on a local BEIR folder and agrees with `evaluate_retrieval`."""

from __future__ import annotations

import mteb
import pytest

from revela_hf.evaluation import BeirDataset, evaluate_retrieval, write_beir
from revela_hf.evaluation.mteb_integration import beir_folder_task, revela_model_meta
from conftest import TEXTS, tiny_decoder, tiny_revela


def test_mteb_evaluate_matches_our_metrics(tmp_path):
    tiny_revela(tiny_decoder(tmp_path / "base"), max_length=24).save_pretrained(tmp_path / "ret")
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(TEXTS)}
    queries = {"q0": TEXTS[0][:15], "q1": TEXTS[3][:20], "q2": TEXTS[4][-12:]}
    beir = write_beir(tmp_path / "beir", BeirDataset(corpus=corpus, queries=queries, qrels={"q0": {"d0": 1}, "q1": {"d3": 1}, "q2": {"d4": 1}}))
    model = revela_model_meta(str(tmp_path / "ret")).load_model()
    result = mteb.evaluate(model, tasks=[beir_folder_task(beir, name="TinyBeir")], cache=None)
    scores = result[0].scores["test"][0]
    ours = evaluate_retrieval(str(tmp_path / "ret"), beir)
    assert scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert scores["mrr_at_10"] == pytest.approx(ours["mrr@10"], abs=1e-4)
