"""RevelaDataCollator and RevelaTrainer: inputs, checkpoints with the retriever, resume, errors."""

import json
import os

import pytest
import torch
from conftest import StopAt, tiny_llama_config, word_groups
from datasets import Dataset

from revela_hf import RevelaConfig, RevelaForCausalLM, RevelaRetriever
from revela_hf.collator import RevelaDataCollator, leading_words
from revela_hf.trainer import RevelaTrainer, RevelaTrainingArguments



def tiny_model(tokenizer, freeze_lm=False, **kwargs):
    torch.manual_seed(0)
    backbone = tiny_llama_config(tokenizer)
    model = RevelaForCausalLM(RevelaConfig(lm_config=backbone.to_dict(), temperature=0.5, **kwargs))
    if freeze_lm:
        model.lm.requires_grad_(False)
    return model


def rows(n, B=4, seed=0):
    return word_groups(n, B, seed, sources=["text", "code"] * (B // 2))


def test_leading_words_keeps_spacing():
    assert leading_words("a  b\nc d", 0.5) == "a  b"
    assert leading_words("one two three", 0.5) == "one two"
    assert leading_words("solo", 0.5) == "solo"


def test_collator_builds_lm_and_retriever_inputs(tokenizer):
    collator = RevelaDataCollator(tokenizer, max_length=8, retriever_max_length=32, query_prefix="", passage_prefix="")
    row = rows(1)[0]
    batch = collator([row])
    B = len(row["chunks"])
    assert batch["input_ids"].shape == (B, 8)
    assert (batch["input_ids"][:, -1] == tokenizer.eos_token_id).all()  # truncation keeps the EOS
    assert torch.equal(batch["labels"], batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
    q_len = batch["query_attention_mask"].sum(-1)
    p_len = batch["passage_attention_mask"].sum(-1)
    assert (q_len[0::2] < p_len[0::2]).all(), "text sources: the query is the first half"
    assert torch.equal(q_len[1::2], p_len[1::2]), "code sources: the query is the whole chunk"
    assert batch["same_document"].sum() == 2 * B


def test_collator_errors(tokenizer):
    collator = RevelaDataCollator(tokenizer)
    with pytest.raises(ValueError, match="one group per batch"):
        collator(rows(2))
    with pytest.raises(ValueError, match="at least 2 chunks"):
        collator([{"chunks": ["w1 w2"]}])
    with pytest.raises(ValueError, match="'chunks' column"):
        collator([{"text": "w1"}])


def test_trainer_rejects_more_than_one_group_per_step(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="per_device_train_batch_size=1"):
        RevelaTrainer(tiny_model(tokenizer), RevelaTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2),
                      processing_class=tokenizer)


def train(tokenizer, output_dir, max_steps, resume=False, stop_at=None, training_args=None, **model_kwargs):
    model = tiny_model(tokenizer, **model_kwargs)
    args = RevelaTrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, save_steps=2, logging_steps=1, report_to=[], use_cpu=True,
        gradient_accumulation_steps=2, seed=0, disable_tqdm=True, max_length=16, retriever_max_length=16,
        **(training_args or {}),
    )
    trainer = RevelaTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows(8)), processing_class=tokenizer,
                            callbacks=[StopAt(stop_at)] if stop_at else None)
    trainer.train(resume_from_checkpoint=resume or None)
    return trainer


def test_training_checkpoints_hold_the_retriever_and_resume_exactly(tokenizer, tmp_path):
    straight = train(tokenizer, tmp_path / "straight", max_steps=4)
    logs = [entry for entry in straight.state.log_history if "loss" in entry]
    assert logs and all({"sim_entropy", "sim_max", "top1_same_doc"} <= set(entry) for entry in logs)

    checkpoint = tmp_path / "straight" / "checkpoint-2"
    retriever = RevelaRetriever.from_pretrained(str(checkpoint / "retriever"))
    texts = rows(1)[0]["chunks"]
    assert retriever.encode_corpus(texts, show_progress_bar=False).shape[0] == len(texts)

    # Interrupted after step 2, resumed to 4: the same weights as the straight run.
    train(tokenizer, tmp_path / "resumed", max_steps=4, stop_at=2)
    assert not (tmp_path / "resumed" / "checkpoint-4").exists()
    resumed = train(tokenizer, tmp_path / "resumed", max_steps=4, resume=True)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    state = json.loads((tmp_path / "resumed" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_frozen_lm_is_bit_identical_after_training(tokenizer, tmp_path):
    trainer = train(tokenizer, tmp_path / "frozen", max_steps=2, freeze_lm=True, inbatch_layers=[-1])
    reference = tiny_model(tokenizer, freeze_lm=True, inbatch_layers=[-1])
    for (name, a), b in zip(trainer.model.lm.state_dict().items(), reference.lm.state_dict().values()):
        assert torch.equal(a, b), name
    moved = [not torch.equal(a, b) for a, b in zip(trainer.model.retriever.state_dict().values(), reference.retriever.state_dict().values())]
    assert any(moved), "the retriever must train"
    saved = RevelaRetriever.from_pretrained(str(tmp_path / "frozen" / "checkpoint-2" / "retriever"))
    assert saved.card.hyperparameters["lm_frozen"] is True
    # Built without a retriever tokenizer: the trainer saved the retriever reading the LM's and left the model as it was
    assert trainer.model.retriever.tokenizer is None and saved.tokenizer.get_vocab() == tokenizer.get_vocab()


def logged_losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_gradient_checkpointing_trains_like_plain_training(tokenizer, tmp_path):
    plain = train(tokenizer, tmp_path / "plain", max_steps=2)
    checkpointed = train(tokenizer, tmp_path / "checkpointed", max_steps=2, training_args={"gradient_checkpointing": True})
    assert checkpointed.model.lm.model.layers[0].gradient_checkpointing
    assert checkpointed.model.retriever.backbone.layers[0].gradient_checkpointing
    assert logged_losses(checkpointed) == pytest.approx(logged_losses(plain), abs=1e-6)
    for (name, a), b in zip(plain.model.state_dict().items(), checkpointed.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_mixed_precision_training_on_cpu(tokenizer, tmp_path):
    """`bf16=True` on CPU (autocast): losses close to fp32 training's, finite weights that moved, fp32 master weights."""
    fp32 = train(tokenizer, tmp_path / "fp32", max_steps=2)
    bf16 = train(tokenizer, tmp_path / "bf16", max_steps=2, training_args={"bf16": True})
    assert bf16.accelerator.mixed_precision == "bf16"
    assert logged_losses(bf16) == pytest.approx(logged_losses(fp32), abs=2e-3)
    initial = tiny_model(tokenizer).state_dict()
    trained = bf16.model.state_dict()
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in trained.values())
    assert any(not torch.equal(trained[n], initial[n]) for n in initial if n.startswith("retriever.")), "the retriever must train"


def test_shared_base_trains_the_adapter_keeps_the_lm_and_resumes_exactly(tokenizer, tmp_path):
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    shared = {"share_base": True, "inbatch_layers": [-1], "retriever_lora": lora}
    straight = train(tokenizer, tmp_path / "straight", max_steps=4, **shared)
    model, reference = straight.model, tiny_model(tokenizer, **shared)
    assert model.retriever.backbone.layers[0].self_attn.k_proj.weight is model.lm.model.layers[0].self_attn.k_proj.weight
    for name, tensor in reference.lm.state_dict().items():
        assert torch.equal(model.lm.state_dict()[name], tensor), name
    moved = [n for n, t in reference.retriever.state_dict().items() if not torch.equal(model.retriever.state_dict()[n], t)]
    assert moved and all("lora_" in n for n in moved)
    assert (tmp_path / "straight" / "checkpoint-2" / "retriever" / "adapter_model.safetensors").is_file()

    train(tokenizer, tmp_path / "resumed", max_steps=4, stop_at=2, **shared)
    resumed = train(tokenizer, tmp_path / "resumed", max_steps=4, resume=True, **shared).model
    assert resumed.retriever.backbone.embed_tokens.weight is resumed.lm.model.embed_tokens.weight
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)
