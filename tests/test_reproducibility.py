"""Same seed, same run: model construction, LoRA initialisation and data order all follow `seed`."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from revela_hf.demo.assets import smollm2_path
from revela_hf.data.prepare import prepare
from revela_hf.trainer import RevelaTrainingArguments
from revela_hf.training import ModelSpec, train

SOURCES = [Path(textwrap.__file__), Path(json.__file__).with_name("decoder.py"), Path(os.path.__file__)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[str, Path]:
    lm = smollm2_path(num_hidden_layers=2)
    data = tmp_path_factory.mktemp("repro") / "groups"
    prepare([str(p) for p in SOURCES], data, group_size=4, strategy="random", max_tokens=48, tokenizer=lm,
            show_progress=False)
    return lm, data


def _trained_adapter(lm: str, data: Path, out: Path, seed: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    spec = ModelSpec(lm=lm, retriever_layers=1, retriever_lora_r=4, inbatch_layers=[-1], temperature=0.05)
    args = RevelaTrainingArguments(output_dir=str(out), max_steps=3, learning_rate=1e-3, logging_steps=1, save_steps=10,
                                   max_length=48, retriever_max_length=48, report_to=[], seed=seed, use_cpu=True)
    trainer = train(spec, data, args)
    state = {k: v.detach().clone() for k, v in trainer.model.retriever.backbone.named_parameters() if "lora_" in k}
    return state, [e["loss"] for e in trainer.state.log_history if "loss" in e]


def test_the_same_seed_reproduces_a_run_and_another_seed_does_not(setup, tmp_path) -> None:
    lm, data = setup
    first, first_losses = _trained_adapter(lm, data, tmp_path / "a", seed=3)
    again, again_losses = _trained_adapter(lm, data, tmp_path / "b", seed=3)
    other, other_losses = _trained_adapter(lm, data, tmp_path / "c", seed=4)
    assert first and first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first) and first_losses == again_losses
    assert any(not torch.equal(first[k], other[k]) for k in first) and first_losses != other_losses


def test_an_existing_encoder_adapts_with_its_own_tokenizer_and_pooling(setup, tmp_path) -> None:
    from revela_hf.demo.assets import minilm_path
    from revela_hf.retriever import RevelaRetriever

    lm, data = setup
    spec = ModelSpec(lm=lm, retriever=minilm_path(), encoder_retriever=True, retriever_lora_r=4, inbatch_layers=[-1],
                     temperature=0.05)
    args = RevelaTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, learning_rate=1e-2, save_steps=10,
                                   max_length=48, retriever_max_length=48, report_to=[], use_cpu=True)
    trainer = train(spec, data, args)
    assert trainer.model.retriever.tokenizer.name_or_path == minilm_path()  # BERT's word pieces, not SmolLM2's
    adapted = RevelaRetriever.from_pretrained(str(tmp_path / "run" / "retriever"))
    assert adapted.pooling == "mean" and adapted.query_prefix == "" and adapted.passage_prefix == ""
    texts = ["read a JSON document from a file", "def load(fp): return json.loads(fp.read())"]
    untouched = RevelaRetriever.from_backbone(minilm_path(), pooling="mean", query_prefix="", passage_prefix="")
    before, after = untouched.encode_corpus(texts, show_progress_bar=False), adapted.encode_corpus(texts, show_progress_bar=False)
    assert before.shape == after.shape and not torch.allclose(before, after, atol=1e-4)  # LoRA moved it
    assert torch.nn.functional.cosine_similarity(before, after).min() > 0.5  # but it is still MiniLM
