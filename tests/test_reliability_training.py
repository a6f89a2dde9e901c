"""Training runs know when they are done, and checkpoint discovery skips what it cannot resume from."""

from __future__ import annotations

import logging
import shutil

import pytest
from safetensors.torch import load_file
from conftest import tiny_causal_lm, tiny_groups
from transformers import TrainerState

from revela_hf.cli import main
from revela_hf.io import output_lock, write_marker
from revela_hf.trainer import RevelaTrainer, RevelaTrainingArguments
from revela_hf.training import ModelSpec, _last_checkpoint, train


def _checkpoint(run, step, state=True, retriever=True):
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if state:
        TrainerState(global_step=step).save_to_json(str(folder / "trainer_state.json"))
    if retriever:
        (folder / "retriever").mkdir()
        write_marker(folder / "retriever", "retriever")
    return folder


def test_checkpoint_discovery_skips_what_does_not_parse_and_falls_back(tmp_path, caplog):
    run = tmp_path / "run"
    _checkpoint(run, 2)
    good = _checkpoint(run, 4)
    (run / "checkpoint-3.bak").mkdir()
    _checkpoint(run, 6, state=False)  # killed before its trainer_state.json
    (_checkpoint(run, 8) / "trainer_state.json").write_text("")  # 0 bytes
    _checkpoint(run, 10, retriever=False)
    with caplog.at_level(logging.WARNING, logger="revela_hf.training"):
        assert _last_checkpoint(str(run)) == str(good)
    text = caplog.text
    assert "ignoring" in text and "checkpoint-3.bak" in text
    assert "checkpoint-6: no trainer_state.json" in text and "checkpoint-8: trainer_state.json is unreadable" in text
    assert "checkpoint-10/retriever is missing or incomplete" in text


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return tiny_causal_lm(root / "lm"), tiny_groups(root / "data")


def _train(setup, output, max_steps=2, **kwargs):
    lm, data = setup
    spec = ModelSpec(lm=str(lm), retriever_lora_r=4, inbatch_layers=None)
    args = RevelaTrainingArguments(output_dir=str(output), max_steps=max_steps, save_steps=1, report_to=[], use_cpu=True,
                                   seed=0, disable_tqdm=True, max_length=16, retriever_max_length=16)
    return train(spec, data, args, **kwargs)


class _ExtraLoss(RevelaTrainer):
    """Adds the mean cosine of each chunk's query with its own passage to the loss (a term Revela's loss lacks)."""

    calls = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        type(self).calls += 1
        loss = loss + outputs.similarity.diagonal().mean()
        return (loss, outputs) if return_outputs else loss


def test_train_trains_with_the_trainer_class_given(setup, tmp_path):
    # The same seed and data; only the subclass's extra term differs, so the trained adapters must too.
    plain = _train(setup, tmp_path / "plain")
    extra = _train(setup, tmp_path / "extra", trainer_class=_ExtraLoss)
    assert type(plain) is RevelaTrainer and type(extra) is _ExtraLoss and _ExtraLoss.calls == 2
    weights = [load_file(run / "retriever" / "adapter_model.safetensors") for run in (tmp_path / "plain", tmp_path / "extra")]
    assert weights[0].keys() == weights[1].keys()
    assert any(not weights[0][name].equal(weights[1][name]) for name in weights[0])


def test_rerunning_a_finished_run_is_a_no_op_that_says_so(setup, tmp_path, caplog):
    run = tmp_path / "run"
    _train(setup, run)
    adapter = (run / "retriever" / "adapter_model.safetensors").read_bytes()
    marker = (run / "retriever" / ".revela-complete.json").read_text()
    with caplog.at_level(logging.WARNING, logger="revela_hf.training"):
        again = _train(setup, run)
    assert "already finished (2 steps, max_steps 2): nothing to train" in caplog.text
    assert again.state.global_step == 2 and not (run / "checkpoint-3").exists()
    assert (run / "retriever" / ".revela-complete.json").read_text() == marker  # not rewritten
    assert (run / "retriever" / "adapter_model.safetensors").read_bytes() == adapter

    # the final save was lost (e.g. killed while writing it): a rerun saves the same retriever, training nothing
    shutil.rmtree(run / "retriever")
    _train(setup, run)
    assert not (run / "checkpoint-3").exists()
    saved = load_file(run / "retriever" / "adapter_model.safetensors")
    reference = load_file(run / "checkpoint-2" / "retriever" / "adapter_model.safetensors")
    assert saved.keys() == reference.keys() and all((saved[k] == reference[k]).all() for k in saved)


def test_a_second_train_on_one_output_fails_at_once(setup, tmp_path, capsys):
    lm, data = setup
    with output_lock(tmp_path / "run"):  # another `revela train` is writing it
        assert main(["train", "--data", str(data), "--lm", str(lm), "--output", str(tmp_path / "run"), "--max-steps", "1"]) == 2
    assert f"{tmp_path / 'run'} is being written by process" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
