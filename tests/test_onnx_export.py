"""`RevelaRetriever.export_onnx`: one ONNX graph (LoRA merged in, pooling, normalisation) that onnxruntime runs on
the exported tokenizer's padded batches to the embeddings of `encode_queries`/`encode_corpus`; the folder is written
atomically and refuses to land on something else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TEXTS, adapted_revela, tiny_decoder
from transformers import AutoTokenizer

from revela_hf.io import OutputExistsError
from revela_hf.retriever import RevelaRetriever

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ATOL = 1e-4



def _run(session, tokenizer, texts: list[str], prefix: str) -> np.ndarray:
    enc = tokenizer([prefix + t for t in texts], padding=True, truncation=True, max_length=24, return_tensors="np")
    assert len({int(n) for n in enc["attention_mask"].sum(axis=1)}) > 1  # a padded batch of different lengths
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    return session.run(["embeddings"], feeds)[0]


def _assert_export_matches(retriever: RevelaRetriever, folder) -> None:
    """onnxruntime on `folder`'s graph and tokenizer gives `retriever`'s query and passage embeddings, also
    after a reload from disk; the live retriever keeps its adapter."""
    queries = retriever.encode_queries(TEXTS, show_progress_bar=False).numpy()
    passages = retriever.encode_corpus(TEXTS, show_progress_bar=False).numpy()
    assert (folder / "model.onnx").is_file()
    assert json.loads((folder / "revela_retriever.json").read_text())["pooling"] == retriever.pooling
    assert retriever.backbone._hf_peft_config_loaded

    tokenizer = AutoTokenizer.from_pretrained(str(folder))  # appends EOS itself for "eos" pooling
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got_q = _run(session, tokenizer, TEXTS, retriever.query_prefix)
    got_p = _run(session, tokenizer, TEXTS, retriever.passage_prefix)
    diff = max(np.abs(got_q - queries).max(), np.abs(got_p - passages).max())
    print(f"onnx max abs difference ({retriever.pooling}): {diff:.2e}")
    assert diff < ATOL
    if retriever.normalize:
        np.testing.assert_allclose(np.linalg.norm(got_q, axis=1), 1.0, atol=1e-5)

    fresh = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])  # reloads from disk
    assert np.abs(_run(fresh, tokenizer, TEXTS[:3], retriever.passage_prefix) - passages[:3]).max() < ATOL


@pytest.mark.slow
@pytest.mark.parametrize("pooling, normalize", [("eos", True), ("mean", False), ("last", True), ("cls", True), ("mean+eos", True)])
def test_onnx_export_gives_the_retrievers_embeddings(tmp_path, pooling, normalize):
    retriever = adapted_revela(tiny_decoder(tmp_path / "base"), pooling=pooling, normalize=normalize)
    _assert_export_matches(retriever, retriever.export_onnx(tmp_path / "onnx"))


@pytest.mark.slow
def test_onnx_export_of_an_adapted_encoder_gives_its_embeddings(tmp_path):
    # The adapting case (`revela demo --retriever minilm`): a BERT-family encoder with a LoRA adapter, its own
    # WordPiece tokenizer (no EOS appended), mean pooling.
    from peft import LoraConfig

    from revela_hf.demo.assets import minilm_path

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "key", "value", "dense"])
    retriever = RevelaRetriever.from_backbone(minilm_path(), lora=lora, pooling="mean", query_prefix="", passage_prefix="",
                                              max_length=24)
    with torch.no_grad():
        for name, param in retriever.backbone.named_parameters():
            if "lora_B" in name:
                param.add_(0.05 * torch.randn_like(param))
    _assert_export_matches(retriever, retriever.export_onnx(tmp_path / "onnx"))



@pytest.mark.slow
def test_onnx_export_of_the_demos_read_out_applies_the_token_weights_and_the_projection(tmp_path):
    from revela_hf.all_but_the_top import AllButTheTop

    retriever = adapted_revela(tiny_decoder(tmp_path / "base"), pooling="mean+eos")
    plain = retriever.encode_queries(TEXTS, show_progress_bar=False)
    retriever.fit_token_weights(TEXTS)
    weighted = retriever.encode_queries(TEXTS, show_progress_bar=False)
    assert (weighted - plain).abs().max() > 1e-2
    retriever.projection = AllButTheTop.fit(retriever.encode_corpus(TEXTS, show_progress_bar=False).numpy(), k=2)
    assert (retriever.encode_queries(TEXTS, show_progress_bar=False) - weighted).abs().max() > 0.1
    _assert_export_matches(retriever, retriever.export_onnx(tmp_path / "onnx"))

def test_onnx_export_refuses_a_foreign_folder_and_an_unknown_pooling(tmp_path):
    retriever = RevelaRetriever.from_backbone(str(tiny_decoder(tmp_path / "base")), max_length=24)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        retriever.export_onnx(taken)
    with pytest.raises(OutputExistsError, match="not a folder revela wrote"):
        retriever.export_onnx(taken, overwrite=True)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    retriever.pooling = "max"
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        retriever.export_onnx(tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.slow
def test_cli_export_onnx(tmp_path, capsys):
    from revela_hf.cli import main

    retriever = adapted_revela(tiny_decoder(tmp_path / "base"))
    retriever.save_pretrained(tmp_path / "ret")
    assert main(["export", str(tmp_path / "ret"), str(tmp_path / "onnx"), "--onnx"]) == 0
    assert "exported to" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = _run(session, AutoTokenizer.from_pretrained(str(tmp_path / "onnx")), TEXTS, retriever.query_prefix)
    assert np.abs(got - retriever.encode_queries(TEXTS, show_progress_bar=False).numpy()).max() < ATOL
    assert main(["export", str(tmp_path / "ret"), str(tmp_path / "onnx"), "--onnx"]) == 2  # exists: one-line error
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "ret"), str(tmp_path / "other")])  # --onnx is required
