"""REPLUG and DREAM on RevelaForCausalLM: equality with hand-written references, head selectivity,
frozen LM, retriever-only gradients, collator/builders, trainer runs."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama_config
from datasets import Dataset
from transformers import AutoConfig

from revela_hf import RevelaConfig, RevelaForCausalLM
from revela_hf.collator import DreamDataCollator, RevelaDataCollator
from revela_hf.objectives import (
    DreamSettings,
    card_info,
    dream_rows_from_groups,
    dream_rows_from_pairs,
    select_retrieval_heads,
    sequence_target_losses,
)
from revela_hf.trainer import RevelaTrainer, RevelaTrainingArguments

def build(tokenizer, objective, layers=2, freeze_lm=True, **kwargs):
    torch.manual_seed(0)
    lm_config = tiny_llama_config(tokenizer, num_hidden_layers=layers).to_dict()
    model = RevelaForCausalLM(RevelaConfig(lm_config=lm_config, objective=objective, query_prefix="",
                                           passage_prefix="", **kwargs))
    if freeze_lm:
        model.lm.requires_grad_(False)
    return model


def random_chunks(n, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [10] * n
    return [" ".join(f"w{int(t)}" for t in torch.randint(0, 60, (k,), generator=g)) for k in lengths]


def groups(n, B=4, seed=0):
    return [{"chunks": random_chunks(B, seed + r, [6 + (i % 3) * 2 for i in range(B)]), "doc_ids": [f"d{r}-{i // 2}" for i in range(B)]}
            for r in range(n)]


# ---------------------------------------------------------------------- REPLUG
def reference_replug(model, batch, target, tau_lm, tau_r, ratio=0.5):
    """Explicit loops: one LM call per (i, j) on the unpadded concatenation, softmaxes and KL by hand."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    B = ids.shape[0]
    chunks = [ids[b][mask[b].bool()] for b in range(B)]
    losses = torch.zeros(B, B)
    model.lm.eval()
    with torch.no_grad():
        for i in range(B):
            n = len(chunks[i])
            start = 0 if target == "all" else min(math.ceil(ratio * n), n - 1)
            for j in range(B):
                if i == j:
                    continue
                seq = torch.cat([chunks[j], chunks[i]])[None]
                logits = model.lm(input_ids=seq).logits[0]
                first = len(chunks[j]) + start  # position of chunk i's first target token
                losses[i, j] = F.cross_entropy(logits[first - 1 : -1], seq[0, first:])
    q = model.retriever(batch["query_input_ids"], batch["query_attention_mask"])
    p = model.retriever(batch["passage_input_ids"], batch["passage_attention_mask"])
    total = 0.0
    for i in range(B):
        others = [j for j in range(B) if j != i]
        cos = torch.stack([F.cosine_similarity(q[i], p[j], dim=0) for j in others])
        lm_logits = torch.stack([-losses[i, j] / tau_lm for j in others])
        p_lm = lm_logits.softmax(0)
        log_r = (cos / tau_r).log_softmax(0)
        total = total + sum(p_lm[k] * (p_lm[k].log() - log_r[k]) for k in range(B - 1))
    return total / B, losses


@pytest.mark.parametrize("target,tau", [("second_half", (0.5, 0.1)), ("all", (1e-3, 1e-3))])
def test_replug_loss_matches_explicit_loop_reference(tokenizer, target, tau):
    settings = {"target": target, "lm_temperature": tau[0], "retriever_temperature": tau[1], "pair_batch_size": 3}
    model = build(tokenizer, "replug", objective_settings=settings).train()
    batch = RevelaDataCollator(tokenizer, query_prefix="", passage_prefix="")([groups(1, B=5)[0]])
    batch.pop("same_document")
    assert batch["attention_mask"].sum(-1).unique().numel() > 1, "chunks of different lengths exercise the padding"
    out = model(**batch)
    want, losses = reference_replug(model, batch, target, *tau)
    off = ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(out.pair_losses[off], losses[off], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, want, atol=1e-4, rtol=1e-4)
    assert torch.isinf(out.pair_losses.diagonal()).all() and out.inbatch_weights.diagonal().abs().max() == 0
    torch.testing.assert_close(out.lm_distribution.sum(-1), torch.ones(5))
    out.loss.backward()
    assert all(p.grad is None for p in model.lm.parameters()), "the LM is frozen: no gradient"
    grads = [p.grad.abs().sum().item() for p in model.retriever.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0


def test_sequence_scoring_is_independent_of_batching(tokenizer):
    model = build(tokenizer, "replug")
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(3, 60, (n,), generator=g) for n in (5, 9, 3, 12, 7)]
    targets = [2, 4, 1, 6, 3]
    one = sequence_target_losses(model.lm, seqs, targets, batch_size=1)
    many = sequence_target_losses(model.lm, seqs, targets, batch_size=4)
    torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="target"):
        sequence_target_losses(model.lm, seqs[:1], [5])


def test_objectives_need_a_frozen_lm(tokenizer):
    batch = RevelaDataCollator(tokenizer)([groups(1)[0]])
    batch.pop("same_document")
    with pytest.raises(ValueError, match=r"requires_grad_\(False\)"):
        build(tokenizer, "replug", freeze_lm=False)(**batch)
    with pytest.raises(ValueError, match="inbatch_weights"):
        build(tokenizer, "replug")(**batch, inbatch_weights=torch.zeros(4, 4))
    dream = build(tokenizer, "dream", freeze_lm=False)
    batch = dream_batch(tokenizer)
    with pytest.raises(ValueError, match=r"requires_grad_\(False\)"):
        dream(**batch)  # the retriever scores: only a frozen LM keeps its gradient the retriever's alone
    weights = batch["candidate_mask"].float() / batch["candidate_mask"].sum(-1, keepdim=True)
    dream(**batch, inbatch_weights=weights).loss.backward()  # given weights: an LM warm-up may train the LM
    assert all(p.grad is not None for p in dream.lm.parameters() if p.requires_grad)


# ---------------------------------------------------------------------- DREAM collator and builders
def test_dream_rows_from_groups_split_each_chunk(tokenizer):
    group = groups(1, B=4)[0]
    (row,) = dream_rows_from_groups([group])
    assert len(row["query"]) == 4
    for i, chunk in enumerate(group["chunks"]):
        assert row["query"][i] + row["target"][i] == chunk
        assert len(row["query"][i].split()) == math.ceil(len(chunk.split()) / 2)
        assert chunk not in row["candidates"][i] and len(row["candidates"][i]) == 3
        assert sum(row["positives"][i]) == 1  # the other chunk of its document
    flat = dream_rows_from_groups([group], per_group=False)
    assert len(flat) == 4 and isinstance(flat[0]["query"], str)
    with pytest.raises(ValueError, match="at least 2 chunks"):
        dream_rows_from_groups([{"chunks": ["w1 w2"]}])


def test_dream_rows_from_pairs():
    pairs = [{"query": f"w{i}", "answer": f"w{i + 1}", "positives": [f"w{i + 2} w3"]} for i in range(5)]
    pool = [f"w{10 + i} w40" for i in range(20)]
    rows = dream_rows_from_pairs(pairs, pool, num_candidates=4)
    assert len(rows) == 5
    for pair, row in zip(pairs, rows):
        assert len(row["candidates"]) == 4 and sum(row["positives"]) == 1
        assert row["candidates"][row["positives"].index(True)] == pair["positives"][0]
        assert row["target"] == " " + pair["answer"]
    hard = dream_rows_from_pairs(pairs, lambda q: [f"{q} w50", "w2 w3"], num_candidates=3, group_size=2)
    assert len(hard) == 3 and len(hard[0]["query"]) == 2
    with pytest.raises(ValueError, match="no positive"):
        dream_rows_from_pairs([{"query": "w1", "answer": "w2", "positives": []}], pool)


def test_dream_collator_layout(tokenizer):
    rows = [
        {"query": "w1 w2", "target": " w3 w4", "candidates": ["w5 w6 w7", "w8"], "positives": [True, False]},
        {"query": "w9", "target": " w10", "candidates": ["w11", "w12 w13", "w14"]},
    ]
    batch = DreamDataCollator(tokenizer, query_prefix="", passage_prefix="")(rows)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    eos = tokenizer.eos_token_id
    width = ids.shape[1]
    assert width == 3 + 1 + 1 + 1 + 2 + 2 + 1  # cands + SEPs, query, target + EOS of the longest row (row 0: 13)
    assert mask[1, : width - mask[1].sum()].sum() == 0, "left padding"
    decode = lambda t: tokenizer.convert_ids_to_tokens(t.tolist())  # noqa: E731
    for n, row in enumerate(rows):
        for k, cand in enumerate(row["candidates"]):
            s, e = batch["candidate_spans"][n, k].tolist()
            assert decode(ids[n, s:e]) == cand.split() and ids[n, e] == eos
        assert decode(ids[n][labels[n] != -100]) == row["target"].split() + ["[EOS]"]
        assert ids[n, -1] == eos
    assert batch["candidate_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["passage_input_ids"].shape[0] == 5 and batch["query_input_ids"].shape[0] == 2
    assert batch["same_document"].tolist() == [[True, False, False], [False, False, False]]
    grouped = DreamDataCollator(tokenizer, query_prefix="", passage_prefix="")(
        [{k: [r.get(k) for r in rows] for k in ("query", "target", "candidates")}]
    )
    assert torch.equal(grouped["input_ids"], ids) and "same_document" not in grouped
    with pytest.raises(ValueError, match="missing"):
        DreamDataCollator(tokenizer)([{"query": "w1", "target": "w2"}])
    with pytest.raises(ValueError, match="at least one candidate"):
        DreamDataCollator(tokenizer)([{"query": "w1", "target": "w2", "candidates": []}])


def test_dream_settings_resolve_heads():
    assert DreamSettings().resolved_heads(2, 3) == {0: [0, 1, 2], 1: [0, 1, 2]}
    assert DreamSettings(layers=[-1]).resolved_heads(2, 3) == {1: [0, 1, 2]}
    assert DreamSettings(heads=[[1, 2], [0, 0], [1, 0]]).resolved_heads(2, 3) == {0: [0], 1: [0, 2]}
    assert DreamSettings(layers=[0, -1], heads=[[1], [2, 0]]).resolved_heads(2, 3) == {0: [1], 1: [0, 2]}
    for bad, match in [(dict(layers=[2]), "layer"), (dict(heads=[[0, 3]]), "heads"),
                       (dict(heads=[1, 2]), "pairs"), (dict(layers=[0], heads=[[0], [1]]), "one list")]:
        with pytest.raises(ValueError, match=match):
            DreamSettings(**bad).resolved_heads(2, 3)


# ---------------------------------------------------------------------- DREAM model
def dream_batch(tokenizer, seed=0, B=4):
    batch = DreamDataCollator(tokenizer, query_prefix="", passage_prefix="")(dream_rows_from_groups(groups(1, B=B, seed=seed)))
    batch.pop("same_document")
    return batch


def plain_packed_loss(model, batch):
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return model.lm(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, labels=batch["labels"]).loss


def test_dream_equal_scores_give_zero_bias_and_the_plain_lm_loss(tokenizer):
    model = build(tokenizer, "dream", objective_settings={"heads": [[0, 1], [1, 3]]}).eval()
    batch = dream_batch(tokenizer)
    uniform = batch["candidate_mask"].float() / batch["candidate_mask"].sum(-1, keepdim=True)
    out = model(**batch, inbatch_weights=uniform)
    assert out.candidate_bias.abs().max() < 1e-6
    torch.testing.assert_close(out.loss, plain_packed_loss(model, batch), atol=1e-5, rtol=1e-5)
    # Through the retriever: identical candidates get identical scores, hence zero bias too.
    rows = [{"query": "w1 w2", "target": " w3 w4 w5", "candidates": ["w7 w8"] * 3}] * 2
    batch = DreamDataCollator(tokenizer, query_prefix="", passage_prefix="")(rows)
    out = model(**batch)
    torch.testing.assert_close(out.inbatch_weights, torch.full((2, 3), 1 / 3))
    torch.testing.assert_close(out.loss, plain_packed_loss(model, batch), atol=1e-5, rtol=1e-5)


def attention_outputs(model, batch, weights):
    """Per layer, the attention output before o_proj `(N, T, H, D)`, captured with hooks."""
    captured = {}
    handles = [
        layer.self_attn.o_proj.register_forward_pre_hook(lambda m, args, idx=idx: captured.__setitem__(idx, args[0].detach()))
        for idx, layer in enumerate(model.lm.model.layers)
    ]
    try:
        out = model(**batch, inbatch_weights=weights)
    finally:
        for h in handles:
            h.remove()
    H = model.lm.config.num_attention_heads
    return out, {k: v.view(*v.shape[:2], H, -1) for k, v in captured.items()}


def test_dream_bias_only_in_selected_heads_and_reader_rows(tokenizer):
    model = build(tokenizer, "dream", layers=3, objective_settings={"layers": [1], "heads": [[0, 2]]}).eval()
    batch = dream_batch(tokenizer)
    real = batch["candidate_mask"]
    uniform = real.float() / real.sum(-1, keepdim=True)
    peaked = torch.tensor([[0.90, 0.05, 0.05], [0.05, 0.05, 0.90], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    _, plain = attention_outputs(model, batch, uniform)
    out, biased = attention_outputs(model, batch, peaked)
    torch.testing.assert_close(biased[0], plain[0], atol=0, rtol=0)  # below the selected layer: untouched
    layer = biased[1]
    for h in (1, 3):
        torch.testing.assert_close(layer[:, :, h], plain[1][:, :, h], atol=1e-6, rtol=1e-5)
    reader = batch["labels"] != -100
    for h in (0, 2):
        assert (layer[:, :, h] - plain[1][:, :, h]).abs()[reader].max() > 1e-4, f"selected head {h} must change"
    starts = batch["candidate_spans"][..., 0].min()
    query_start = batch["candidate_spans"][..., 1].max(-1).values  # candidates' own tokens are not readers
    for n in range(4):
        torch.testing.assert_close(layer[n, starts : query_start[n] - 1], plain[1][n, starts : query_start[n] - 1], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out.loss, plain_packed_loss(model, batch))


def reference_dream_loss(model, batch, weights, heads):
    """Hand-written Llama forward per row (no padding): the selected heads of each layer add
    log(K * P_k) to the logits of query/target positions on candidate k's keys."""
    lm, cfg = model.lm, model.lm.config
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    D = cfg.hidden_size // H
    inv_freq = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, D, 2).float() / D))
    total, count = 0.0, 0
    for n in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][n].bool()
        offset = int((~real).sum())
        ids, labels = batch["input_ids"][n][real], batch["labels"][n][real]
        L = len(ids)
        angles = torch.arange(L).float()[:, None] * inv_freq[None]
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

        def rope(x):
            return x * cos + torch.cat([-x[..., D // 2 :], x[..., : D // 2]], -1) * sin

        key_bias = torch.zeros(L)
        k_real = int(batch["candidate_mask"][n].sum())
        last_end = 0
        for k in range(k_real):
            s, e = (batch["candidate_spans"][n, k] - offset).tolist()
            key_bias[s:e] = math.log(k_real * float(weights[n, k]))
            last_end = max(last_end, e)
        reader = torch.arange(L) >= last_end
        bias = reader[:, None].float() * key_bias[None, :]
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        x = lm.model.embed_tokens(ids)[None]
        for idx, layer in enumerate(lm.model.layers):
            att = layer.self_attn
            h = layer.input_layernorm(x)
            q = rope(att.q_proj(h).view(1, L, H, D).transpose(1, 2))
            k = rope(att.k_proj(h).view(1, L, Hkv, D).transpose(1, 2)).repeat_interleave(H // Hkv, 1)
            v = att.v_proj(h).view(1, L, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, 1)
            scores = q @ k.transpose(-1, -2) / math.sqrt(D)
            for head in heads.get(idx, []):
                scores[:, head] = scores[:, head] + bias
            o = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
            x = x + att.o_proj(o.transpose(1, 2).reshape(1, L, H * D))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = lm.lm_head(lm.model.norm(x))[0]
        nll = F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum")
        total, count = total + nll, count + int((labels[1:] != -100).sum())
    return total / count


def test_dream_loss_and_gradient_match_hand_written_reference(tokenizer):
    model = build(tokenizer, "dream", objective_settings={"layers": [0, 1], "heads": [[3], [0, 2]], "temperature": 0.2}).train()
    batch = dream_batch(tokenizer, seed=1)
    out = model(**batch)
    want = reference_dream_loss(model, batch, out.inbatch_weights.detach(), {0: [3], 1: [0, 2]})
    torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert all(p.grad is None for p in model.lm.parameters()), "the LLM is frozen"
    grads = [p.grad.abs().sum().item() for p in model.retriever.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0, "the target loss reaches the retriever through the bias"


def test_dream_inputs_errors(tokenizer):
    model = build(tokenizer, "dream")
    batch = dream_batch(tokenizer)
    with pytest.raises(ValueError, match="candidate_spans"):
        model(**{k: v for k, v in batch.items() if k != "candidate_spans"})
    with pytest.raises(ValueError, match=r"requires_grad_\(False\)"):
        build(tokenizer, "dream", freeze_lm=False)(**batch)
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        model(**batch, inbatch_weights=torch.ones(2, 2))


def test_select_retrieval_heads_measures_the_helpful_candidate(tokenizer):
    model = build(tokenizer, "dream").eval()
    batch = dream_batch(tokenizer, seed=2)
    found = select_retrieval_heads(model, [batch], num_heads=3, layers=[-1])
    assert len(found.heads) == 3 and all(layer == 1 and 0 <= head < 4 for layer, head in found.heads)
    assert found.scores.shape == (2, 4)
    # The most helpful candidate: the lowest target loss with that candidate alone in context.
    rows = dream_rows_from_groups(groups(1, B=4, seed=2), per_group=False)
    for n, row in enumerate(rows):
        alone = []
        for cand in row["candidates"]:
            single = DreamDataCollator(tokenizer, query_prefix="", passage_prefix="")([{**row, "candidates": [cand], "positives": None}])
            alone.append(plain_packed_loss(model, single).item())
        assert found.helpful[n] == min(range(len(alone)), key=alone.__getitem__)
    best = found.heads[0]
    assert found.scores[best[0], best[1]] == found.scores[1].max()


# ---------------------------------------------------------------------- trainer runs
def run_trainer(tokenizer, tmp_path, objective, rows, **model_kwargs):
    model = build(tokenizer, objective, **model_kwargs)
    args = RevelaTrainingArguments(output_dir=str(tmp_path), max_steps=3, save_steps=3, logging_steps=1, report_to=[], use_cpu=True,
                                   seed=0, disable_tqdm=True, learning_rate=1e-2, max_length=16, retriever_max_length=16)
    trainer = RevelaTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    expected = DreamDataCollator if objective == "dream" else RevelaDataCollator
    assert type(trainer.data_collator) is expected, "the trainer picks the objective's collator"
    trainer.train()
    return trainer


@pytest.mark.parametrize("objective", ["replug", "dream"])
def test_trainer_keeps_the_llm_bit_identical_and_trains_the_retriever(tokenizer, tmp_path, objective):
    rows = groups(4) if objective == "replug" else dream_rows_from_groups(groups(4))
    settings = {"heads": [[1, 0], [1, 1]]} if objective == "dream" else {"lm_temperature": 0.1}
    kwargs = {"objective_settings": settings}
    trainer = run_trainer(tokenizer, tmp_path, objective, rows, **kwargs)
    reference = build(tokenizer, objective, **kwargs)
    for (name, a), b in zip(trainer.model.lm.state_dict().items(), reference.lm.state_dict().values()):
        assert torch.equal(a, b), name
    moved = [not torch.equal(a, b) for a, b in zip(trainer.model.retriever.state_dict().values(), reference.retriever.state_dict().values())]
    assert any(moved), "the retriever must train"
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all({"sim_entropy", "sim_max", "top1_same_doc"} <= set(entry) for entry in logs)
    assert card_info(trainer.model.config).hyperparameters["objective"] == objective
    card = (tmp_path / "checkpoint-3" / "retriever" / "README.md").read_text()
    assert f"| objective | `{objective}` |" in card and "| steps | `3` |" in card


def test_every_registered_objective_names_real_parts():
    # A registry entry is the whole plug-in: its forward, row builder, collator and settings class import, its card
    # fields are configuration fields and its layer field a setting, the configuration accepts its name (and no
    # other), and the model resolves its forward when it is built.
    from dataclasses import fields

    from revela_hf import collator
    from revela_hf.objectives import OBJECTIVES, ObjectiveSettings, get_objective

    config_fields = {f.name for f in fields(RevelaConfig)}
    for name, objective in OBJECTIVES.items():
        assert objective.name == name and get_objective(name) is objective
        assert objective.load_forward() is None or callable(objective.load_forward())
        assert objective.load_rows_from_groups() is None or callable(objective.load_rows_from_groups())
        assert hasattr(getattr(collator, objective.collator), "from_model_config")
        settings = objective.load_settings()
        assert settings is None or issubclass(settings, ObjectiveSettings)
        setting_names = {f.name for f in fields(settings)} if settings else set()
        assert set(objective.card_fields) <= config_fields and objective.layers_field in setting_names | {None}
        config = RevelaConfig(lm_config=tiny_llama_config().to_dict(), objective=name)
        assert config.objective == name and config.objective_settings == (settings().to_dict() if settings else {})
        assert RevelaForCausalLM(config)._objective_forward is objective.load_forward()
    with pytest.raises(ValueError, match="unknown objective 'contriever'; choose one of revela, replug, dream"):
        RevelaConfig(objective="contriever")


# A config.json written before `objective_settings` (5ba35a2) holds every objective's settings as flat keys, these
# defaults for the objectives not configured; per objective: its flat keys, the settings they stand for, the card rows.
LEGACY_DEFAULTS = {"replug_retriever_temperature": 0.001, "replug_lm_temperature": 0.001, "replug_target": "second_half",
                   "replug_pair_batch_size": 16, "dream_layers": None, "dream_heads": None, "dream_temperature": 0.05}
LEGACY = {
    "revela": ({}, {}, {"temperature": 0.5, "inbatch_layers": None}),
    "replug": (
        {"replug_retriever_temperature": 0.5, "replug_lm_temperature": 0.1, "replug_target": "all", "replug_pair_batch_size": 3},
        {"retriever_temperature": 0.5, "lm_temperature": 0.1, "target": "all", "pair_batch_size": 3},
        {"replug_retriever_temperature": 0.5, "replug_lm_temperature": 0.1, "replug_target": "all"},
    ),
    "dream": (
        {"dream_layers": [1], "dream_heads": [[0, 2]], "dream_temperature": 0.2},
        {"temperature": 0.2, "layers": [1], "heads": [[0, 2]]},
        {"dream_temperature": 0.2, "dream_layers": [1], "dream_heads": [[0, 2]]},
    ),
}


@pytest.mark.parametrize("objective", list(LEGACY))
def test_a_config_json_with_flat_objective_settings_loads_the_same_model(tokenizer, tmp_path, objective):
    flat, settings, card_rows = LEGACY[objective]
    model = build(tokenizer, objective, objective_settings=settings, temperature=0.5).eval()
    assert model.config.objective_settings == settings
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["objective_settings"]
    (tmp_path / "config.json").write_text(json.dumps({**saved, **LEGACY_DEFAULTS, **flat}))

    loaded = RevelaForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.objective_settings == settings and AutoConfig.from_pretrained(tmp_path).objective_settings == settings
    assert not any(hasattr(loaded.config, key) for key in LEGACY_DEFAULTS), "flat keys are read, not kept"
    assert card_info(loaded.config).hyperparameters == {"objective": objective, **card_rows}  # the card's rows as before
    batch = dream_batch(tokenizer) if objective == "dream" else RevelaDataCollator(tokenizer, query_prefix="", passage_prefix="")(groups(1))
    batch.pop("same_document", None)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss, atol=0, rtol=0)
    loaded.config.save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert resaved["objective_settings"] == settings and not set(LEGACY_DEFAULTS) & set(resaved)


def test_only_the_registry_spells_the_objective_names():
    # Adding an objective is one registry entry: no other module of the library may name one in code (its
    # docstrings may), nor compare a value with the default's name.
    import ast
    from pathlib import Path

    from revela_hf.objectives import DEFAULT_OBJECTIVE, OBJECTIVES

    src = Path(__file__).resolve().parents[1] / "src" / "revela_hf"
    others = set(OBJECTIVES) - {DEFAULT_OBJECTIVE}
    found = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "registry.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in others and id(node) not in docstrings:
                found.append(f"{path.relative_to(src)}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Constant) and side.value == DEFAULT_OBJECTIVE for side in [node.left, *node.comparators]
            ):
                found.append(f"{path.relative_to(src)}:{node.lineno} compares with {DEFAULT_OBJECTIVE!r}")
    assert found == []
