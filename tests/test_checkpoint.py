"""Adapter-only checkpoints: no frozen weight written, exact resume, the retriever reloads identically,
checkpoints of another model are refused with the reason, full-model checkpoints still resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from conftest import TEXTS, StopAt, tiny_causal_lm, tiny_groups

from revela_hf import RevelaRetriever
from revela_hf.checkpoint import TRAINABLE_STATE, TrainableStateMismatchError, load_trainable_state
from revela_hf.trainer import RevelaTrainingArguments
from revela_hf.training import ModelSpec, build_model, train

MAX_STEPS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return tiny_causal_lm(root / "lm"), tiny_groups(root / "data", groups=8)


def spec_for(lm: Path, **overrides) -> ModelSpec:
    """The default recipe (frozen LM, a LoRA retriever on a copy of the LM's base model) on a tiny LM."""
    return ModelSpec(**{"lm": str(lm), "retriever_lora_r": 4, "inbatch_layers": [-1], **overrides})


def run(spec: ModelSpec, data: Path, output: Path, stop_at: int | None = None):
    args = RevelaTrainingArguments(output_dir=str(output), max_steps=MAX_STEPS, save_steps=2, logging_steps=1,
                                   learning_rate=1e-2, report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
                                   max_length=16, retriever_max_length=16)
    return train(spec, data, args, callbacks=[StopAt(stop_at)] if stop_at else None)


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    lm, data = setup
    return run(spec_for(lm), data, tmp_path_factory.mktemp("straight") / "run")


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file and of the optimizer state under `folder`."""
    tensors = {}
    for path in folder.rglob("*.safetensors"):
        tensors.update({f"{path.relative_to(folder)}:{k}": v for k, v in load_file(path).items()})
    for path in folder.rglob("optimizer.pt"):
        state = torch.load(path, weights_only=True)["state"]
        tensors.update({f"{path.name}:{i}:{k}": v for i, s in state.items() for k, v in s.items() if v.dim()})
    return tensors


def test_checkpoints_and_the_final_folder_hold_no_frozen_weight(straight):
    model = straight.model
    frozen = [p.detach() for p in model.parameters() if not p.requires_grad]
    frozen_bytes = sum(p.numel() * p.element_size() for p in frozen)
    assert frozen and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    output = Path(straight.args.output_dir)
    for folder in (output / "checkpoint-2", output / f"checkpoint-{MAX_STEPS}", output):
        assert (folder / TRAINABLE_STATE).is_file() and not (folder / "model.safetensors").exists()
        tensors = saved_tensors(folder)
        assert tensors
        for name, tensor in tensors.items():
            assert not any(tensor.shape == p.shape and torch.equal(tensor, p) for p in frozen), f"{name} is a frozen weight"
        written = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and "checkpoint-" not in
                      str(path.relative_to(folder)))
        assert written < frozen_bytes, f"{folder}: {written} bytes written for {frozen_bytes} bytes of frozen weights"
    saved = load_file(output / TRAINABLE_STATE)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert saved.keys() == trained.keys() and all(torch.equal(saved[n], trained[n]) for n in saved)


@pytest.mark.parametrize("overrides", [{}, {"freeze_lm": False, "lm_lora_r": 2}], ids=["frozen_lm", "lm_lora"])
def test_adapter_only_checkpoint_resumes_exactly(setup, tmp_path, overrides):
    lm, data = setup
    straight = run(spec_for(lm, **overrides), data, tmp_path / "straight")
    saved = load_file(tmp_path / "straight" / "checkpoint-2" / TRAINABLE_STATE)
    assert any(n.startswith("lm.") for n in saved) == bool(overrides) and all("lora_" in n for n in saved)
    output = tmp_path / "run"
    run(spec_for(lm, **overrides), data, output, stop_at=2)
    assert not (output / f"checkpoint-{MAX_STEPS}").exists()
    resumed = run(spec_for(lm, **overrides), data, output)
    assert resumed.state.global_step == MAX_STEPS
    assert losses(resumed)[-2:] == losses(straight)[-2:]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_final_retriever_folder_reloads_bit_identical_embeddings(straight):
    retriever = RevelaRetriever.from_pretrained(str(Path(straight.args.output_dir) / "retriever"))
    for encode in ("encode_queries", "encode_corpus"):
        expected = getattr(straight.model.retriever, encode)(TEXTS, show_progress_bar=False)
        assert torch.equal(getattr(retriever, encode)(TEXTS, show_progress_bar=False), expected), encode


def test_full_model_checkpoints_of_earlier_versions_still_resume(setup, straight, tmp_path):
    lm, data = setup
    output = tmp_path / "run"
    shutil.copytree(Path(straight.args.output_dir) / "checkpoint-2", output / "checkpoint-2")
    model, _ = build_model(spec_for(lm))
    load_trainable_state(model, output / "checkpoint-2")
    model.save_pretrained(output / "checkpoint-2")  # what a checkpoint held before: every weight in model.safetensors
    (output / "checkpoint-2" / TRAINABLE_STATE).unlink()
    resumed = run(spec_for(lm), data, output)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_load_best_model_reads_the_trainable_state(straight):
    output = Path(straight.args.output_dir)
    best = load_file(output / "checkpoint-2" / TRAINABLE_STATE)
    frozen = {n: p.detach().clone() for n, p in straight.model.named_parameters() if not p.requires_grad}
    straight.state.best_model_checkpoint = str(output / "checkpoint-2")
    try:
        straight._load_best_model()
        params = dict(straight.model.named_parameters())
        assert all(torch.equal(params[n], t) for n, t in best.items())
        assert all(torch.equal(params[n], t) for n, t in frozen.items())
    finally:
        load_trainable_state(straight.model, output)  # back to the final weights for the other tests


def test_a_checkpoint_of_other_frozen_weights_is_refused(setup, straight, tmp_path):
    _, data = setup
    other = tiny_causal_lm(tmp_path / "other-lm", seed=1)  # the same architecture, other weights
    output = tmp_path / "run"
    shutil.copytree(Path(straight.args.output_dir) / "checkpoint-2", output / "checkpoint-2")
    with pytest.raises(TrainableStateMismatchError, match="trained over other frozen weights than this model's") as err:
        run(spec_for(other), data, output)
    assert str(setup[0]) in str(err.value) and str(other) in str(err.value)  # both LM folders are named


@pytest.mark.parametrize(("lm_kind", "overrides", "problem"), [
    ("wider", {}, "trained on another base model"),
    ("same", {"retriever_lora_r": 8}, "trained with other LoRA ranks"),
    ("same", {"freeze_lm": False, "lm_lora_r": 2}, "does not hold this model's trainable parameters"),
])
def test_a_checkpoint_of_another_model_is_refused_with_the_reason(setup, straight, tmp_path, lm_kind, overrides, problem):
    lm = tiny_causal_lm(tmp_path / "wider-lm", hidden_size=48) if lm_kind == "wider" else setup[0]
    model, _ = build_model(spec_for(lm, **overrides))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(TrainableStateMismatchError, match=problem):
        load_trainable_state(model, Path(straight.args.output_dir) / "checkpoint-2")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "nothing is loaded"
