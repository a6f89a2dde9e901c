"""RevelaForCausalLM on stock transformers: equality with independent references, plumbing, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, group_inputs
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from revela_hf import RevelaConfig, RevelaForCausalLM

FAMILIES = {
    "llama": lambda: LlamaConfig(**TINY),
    "qwen2": lambda: Qwen2Config(**TINY),
    "qwen3": lambda: Qwen3Config(**TINY, head_dim=8),
    "mistral": lambda: MistralConfig(**TINY),
    "gemma2": lambda: Gemma2Config(**TINY, head_dim=8, query_pre_attn_scalar=8, sliding_window=4),
    "gemma3": lambda: Gemma3TextConfig(**TINY, head_dim=8, query_pre_attn_scalar=8, sliding_window=4),
}


def partner_weights(B=4):
    w = torch.zeros(B, B)
    for i in range(B):
        w[i, i ^ 1] = 1.0
    return w


def build(config, **kwargs):
    torch.manual_seed(0)
    return RevelaForCausalLM(RevelaConfig(lm_config=config.to_dict(), temperature=1.0, **kwargs)).eval()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_zero_weights_is_plain_lm_and_weights_train_retriever(family):
    model = build(FAMILIES[family]())
    ids, mask, labels = group_inputs()
    plain = model.lm(input_ids=ids, attention_mask=mask, labels=labels).loss
    zero = model(ids, mask, labels=labels, inbatch_weights=torch.zeros(4, 4)).loss
    torch.testing.assert_close(zero, plain, atol=1e-6, rtol=1e-6)
    one_hot = model(ids, mask, labels=labels, inbatch_weights=partner_weights()).loss
    assert (one_hot - plain).abs() > 1e-4, "the in-batch term must change the LM's prediction"
    model.train()
    out = model(ids, mask, labels=labels, query_input_ids=ids[:, :4], query_attention_mask=mask[:, :4],
                passage_input_ids=ids, passage_attention_mask=mask)
    out.loss.backward()
    grads = [p.grad.abs().sum().item() for p in model.retriever.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0, "the NTP loss must reach the retriever through Sim"
    torch.testing.assert_close(out.inbatch_weights.sum(-1), torch.ones(4))
    assert out.inbatch_weights.diagonal().abs().max() == 0


def reference_llama_inbatch_loss(lm: LlamaForCausalLM, ids, mask, labels, weights, v_norm=True):
    """Two passes written out by hand from METHOD.md: pass 1 records K/V, pass 2 adds sum_j w_ij b_ij."""
    cfg = lm.config
    B, L = ids.shape
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    D = cfg.hidden_size // H
    inv_freq = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, D, 2).float() / D))
    angles = torch.arange(L).float()[:, None] * inv_freq[None]  # (L, D/2)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rope(x):  # (B, h, L, D)
        half = torch.cat([-x[..., D // 2 :], x[..., : D // 2]], dim=-1)
        return x * cos + half * sin

    causal = torch.ones(L, L, dtype=torch.bool).tril()
    real = mask.bool()

    def run(record=None, kv=None):
        x = lm.model.embed_tokens(ids)
        for idx, layer in enumerate(lm.model.layers):
            att = layer.self_attn
            h = layer.input_layernorm(x)
            q = rope(att.q_proj(h).view(B, L, H, D).transpose(1, 2))
            k = rope(att.k_proj(h).view(B, L, Hkv, D).transpose(1, 2))
            v = att.v_proj(h).view(B, L, Hkv, D).transpose(1, 2)
            k_rep, v_rep = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
            scores = q @ k_rep.transpose(-1, -2) / math.sqrt(D)
            scores = scores.masked_fill(~(causal & real[:, None, None, :]), float("-inf"))
            o = scores.softmax(-1).nan_to_num() @ v_rep  # (B, H, L, D)
            if record is not None:
                record[idx] = (k_rep, v_rep)
            if kv is not None:
                ck, cv = kv[idx]
                for i in range(B):
                    for j in range(B):
                        if weights[i, j] == 0:
                            continue
                        p = (q[i] @ ck[j][:, real[j]].transpose(-1, -2) / math.sqrt(D)).softmax(-1)
                        b = p @ cv[j][:, real[j]]
                        if v_norm:
                            b = b / (p @ cv[j][:, real[j]].norm(dim=-1, keepdim=True) + 1e-6)
                        o[i] = o[i] + weights[i, j] * b
            x = x + att.o_proj(o.transpose(1, 2).reshape(B, L, H * D))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return lm.lm_head(lm.model.norm(x))

    kv: dict = {}
    run(record=kv)
    logits = run(kv=kv)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("v_norm", [True, False])
def test_one_hot_weights_match_hand_written_two_pass_reference(v_norm):
    model = build(LlamaConfig(**TINY), v_norm=v_norm)
    ids, mask, labels = group_inputs()
    w = partner_weights()
    got = model(ids, mask, labels=labels, inbatch_weights=w).loss
    want = reference_llama_inbatch_loss(model.lm, ids, mask, labels, w, v_norm=v_norm)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_frozen_top_block_equals_full_two_pass():
    """Recomputing only the selected top layers gives the loss and retriever gradients of the full second pass."""
    results = []
    for freeze in (False, True):
        model = build(LlamaConfig(**TINY), inbatch_layers=[-2, -1]).train()
        model.lm.requires_grad_(not freeze)
        decoder = model.lm.get_decoder()
        bottom = decoder.layers[0]
        seen = []  # what the model's own decoder holds while its top layer runs, in both passes
        decoder.layers[-1].register_forward_hook(lambda *_: seen.append(decoder.layers[0] is bottom))
        ids, mask, labels = group_inputs()
        out = model(ids, mask, labels=labels, query_input_ids=ids[:, :5], query_attention_mask=mask[:, :5],
                    passage_input_ids=ids, passage_attention_mask=mask)
        out.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.retriever.parameters()])
        results.append((out.loss.detach(), grads, model))
        assert seen == [True, True], "the in-batch pass runs on a view and leaves the model's decoder as it is"
    (loss_full, grad_full, _), (loss_top, grad_top, frozen) = results
    torch.testing.assert_close(loss_top, loss_full, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_top, grad_full, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in frozen.lm.parameters()), "a frozen LM gets no gradient"


def test_save_load_round_trip_auto_classes_and_generate(tmp_path):
    model = build(LlamaConfig(**TINY, tie_word_embeddings=True), lm_lora={"r": 4, "target_modules": ["q_proj", "v_proj"]},
                  retriever_lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj"]})
    with torch.no_grad():  # make the LoRA weights non-trivial so the round trip is a real check
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), RevelaConfig)
    for auto in (AutoModel, AutoModelForCausalLM, RevelaForCausalLM):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, RevelaForCausalLM)
        ids, mask, labels = group_inputs()
        kwargs = dict(query_input_ids=ids[:, :5], query_attention_mask=mask[:, :5], passage_input_ids=ids, passage_attention_mask=mask)
        a, b = model(ids, mask, **kwargs), loaded(ids, mask, **kwargs)
        torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
        torch.testing.assert_close(a.inbatch_weights, b.inbatch_weights, atol=0, rtol=0)
    prompt = ids[:1, :3]
    generated = loaded.generate(prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 7)
    assert torch.equal(generated, model.lm.generate(prompt, max_new_tokens=4, do_sample=False))


def test_from_parts_shares_the_lm_base_checkpoint():
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(**TINY))
    model = RevelaForCausalLM.from_parts(lm, retriever_lora={"r": 2, "target_modules": ["q_proj"]}, temperature=0.5)
    assert model.lm is lm
    assert torch.equal(model.retriever.backbone.embed_tokens.weight, lm.model.embed_tokens.weight)
    assert model.retriever.backbone.embed_tokens.weight.data_ptr() != lm.model.embed_tokens.weight.data_ptr()
    trainable = {n for n, p in model.retriever.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(pooling="max"), "unknown pooling"),
        (dict(inbatch_layers=[7]), "inbatch_layers"),
        (dict(objective="contrastive"), "unknown objective"),
        (dict(temperature=0.0), "temperature"),
        # The objectives' settings are checked here too, not at their first forward.
        (dict(objective="replug", objective_settings={"lm_temperature": 0}), "lm_temperature must be a positive"),
        (dict(objective="replug", objective_settings={"target": "first_half"}), "target must be one of"),
        (dict(objective="replug", objective_settings={"pair_batch_size": 0}), "pair_batch_size must be a positive"),
        (dict(objective="replug", replug_retriever_temperature=-1.0), "retriever_temperature must be"),  # the flat spelling
        (dict(objective="dream", objective_settings={"temperature": 0.0}), "temperature must be a positive"),
        (dict(objective="dream", objective_settings={"layers": [3]}), "not a layer of the 3-layer LM"),
        (dict(objective="dream", objective_settings={"heads": [[0, 4]]}), r"in \[0, 4\)"),
        (dict(objective="dream", objective_settings={"tau": 1.0}), r"DreamSettings has no setting \['tau'\]"),
        (dict(objective_settings={"temperature": 1.0}), "objective 'revela' takes no objective_settings"),
    ],
)
def test_bad_config_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RevelaConfig(lm_config=LlamaConfig(**TINY).to_dict(), **kwargs)


def test_bad_forward_input_is_named():
    model = build(LlamaConfig(**TINY))
    ids, mask, labels = group_inputs()
    with pytest.raises(ValueError, match="sum to 1"):
        model(ids, mask, inbatch_weights=torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="at least 2"):
        model(ids[:1], mask[:1], inbatch_weights=torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"shape \(B, B\)"):
        model(ids, mask, inbatch_weights=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="passage_input_ids"):
        model(ids, mask, query_input_ids=ids, query_attention_mask=mask)


def test_attention_implementation_the_model_cannot_take():
    """CodeGen computes attention inside its own module (no AttentionInterface): a clear error, not silence."""
    from transformers import CodeGenConfig, CodeGenForCausalLM

    from revela_hf import enable_inbatch_attention

    lm = CodeGenForCausalLM(CodeGenConfig(n_layer=1, n_embd=32, n_head=2, rotary_dim=8, vocab_size=50, n_positions=32))
    with pytest.raises(ValueError, match="AttentionInterface"):
        enable_inbatch_attention(lm)
    with pytest.raises(ValueError, match="CodeGenForCausalLM"):
        RevelaForCausalLM.from_parts(lm, LlamaForCausalLM(LlamaConfig(**TINY)))


def test_from_pretrained_trains_the_adapters_only(tmp_path):
    # Weight loading makes every parameter trainable: the config's adapters put LoRA-only training back
    lora = {"r": 2, "target_modules": ["q_proj"]}
    model = build(LlamaConfig(**TINY), lm_lora=lora, retriever_lora=lora)
    model.save_pretrained(tmp_path)
    loaded = RevelaForCausalLM.from_pretrained(tmp_path)
    trainable = lambda m: sorted(name for name, p in m.named_parameters() if p.requires_grad)  # noqa: E731
    assert trainable(loaded) == trainable(model)
    assert {name.split(".")[0] for name in trainable(loaded)} == {"lm", "retriever"}
    assert all("lora_" in name for name in trainable(loaded))


def test_retired_training_settings_name_their_replacement():
    for name, replacement in (("freeze_lm", r"requires_grad_\(False\)"), ("detach_clean_kv", "forward")):
        with pytest.raises(ValueError, match=f"{name} is no longer a RevelaConfig setting.*{replacement}"):
            RevelaConfig(lm_config=LlamaConfig(**TINY).to_dict(), **{name: True})
    assert not hasattr(RevelaConfig(lm_config=LlamaConfig(**TINY).to_dict(), freeze_lm=False), "freeze_lm")


def test_the_eager_base_attention_is_the_familys_also_for_a_subclass_defined_elsewhere():
    from torch import nn
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.gemma2 import modeling_gemma2

    from revela_hf.attention import base_attention

    class SoftcapAttention(modeling_gemma2.Gemma2Attention):  # e.g. remote code extending a family's attention
        pass

    module = SoftcapAttention(FAMILIES["gemma2"](), layer_idx=0)
    assert base_attention(module, eager=True) is modeling_gemma2.eager_attention_forward
    assert base_attention(module, eager=False) is sdpa_attention_forward
    with pytest.raises(ValueError, match="Linear has no eager_attention_forward in its modeling file"):
        base_attention(nn.Linear(2, 2), eager=True)
