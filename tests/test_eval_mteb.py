"""mteb runs a Revela retriever on a local BEIR folder and agrees with `evaluate_retrieval`; its ModelMeta states the
loaded model's embedding size, parameter count, token limit, and a revision (the Hub commit, or a content hash)."""

from __future__ import annotations

import mteb
import pytest
from huggingface_hub import HfApi
from peft import LoraConfig
from transformers import AutoModel, AutoTokenizer

from revela_hf.evaluation import BeirDataset, evaluate_retrieval, write_beir
from revela_hf.evaluation.mteb_integration import beir_folder_task, revela_model_meta
from revela_hf.hub import push_folder
from revela_hf.retriever import RevelaRetriever
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


def _loaded_metadata(folder):
    retriever = RevelaRetriever.from_pretrained(str(folder))
    return {"embed_dim": retriever.encode_queries(TEXTS[:1], show_progress_bar=False).shape[1],
            "n_parameters": sum(p.numel() for p in retriever.parameters()), "max_tokens": retriever.max_length}


@pytest.mark.parametrize("merge_lora", [False, True])
def test_model_meta_reads_the_folder_as_the_loaded_model_is(tmp_path, merge_lora):
    base = tiny_decoder(tmp_path / "base", hidden_size=48)
    tokenizer = AutoTokenizer.from_pretrained(base)
    cut = AutoModel.from_pretrained(base, num_hidden_layers=1)  # an adapter records the depth it loads its base model at
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    RevelaRetriever.from_backbone(cut, tokenizer, lora=lora, max_length=40).save_pretrained(tmp_path / "ret", merge_lora=merge_lora)

    meta = revela_model_meta(str(tmp_path / "ret"))
    loaded = _loaded_metadata(tmp_path / "ret")
    assert {"embed_dim": meta.embed_dim, "n_parameters": meta.n_parameters, "max_tokens": meta.max_tokens} == loaded
    assert loaded == {"embed_dim": 48, "n_parameters": loaded["n_parameters"], "max_tokens": 40}
    assert meta.n_parameters != sum(p.numel() for p in AutoModel.from_pretrained(base).parameters())  # one layer, not two
    assert meta.revision.startswith("sha256:") and revela_model_meta(str(tmp_path / "ret")).revision == meta.revision
    settings = tmp_path / "ret" / "revela_retriever.json"
    settings.write_text(settings.read_text().replace('"Query: "', '"Question: "'))
    assert revela_model_meta(str(tmp_path / "ret")).revision != meta.revision  # another prefix: another model


def test_model_meta_of_a_hub_repo_names_its_commit(hub, tmp_path):
    tiny_revela(tiny_decoder(tmp_path / "base"), max_length=24).save_pretrained(tmp_path / "ret", merge_lora=True)
    push_folder(tmp_path / "ret", "user/revela-meta")
    meta = revela_model_meta("user/revela-meta")
    assert meta.revision == HfApi().model_info("user/revela-meta").sha and meta.name == "user/revela-meta"
    assert meta.n_parameters == _loaded_metadata(tmp_path / "ret")["n_parameters"]
    assert meta.load_model().model.settings()["max_length"] == 24
