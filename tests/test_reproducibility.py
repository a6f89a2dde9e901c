"""Same seed, same run: model construction, LoRA initialisation and data order all follow `seed`."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from revela_hf.assets import smollm2_path
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
