"""Gradient checkpointing and bf16: the same loss and gradients as the plain fp32 computation."""

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, group_inputs
from transformers import LlamaConfig

from revela_hf import RevelaConfig, RevelaForCausalLM, similarity_weights

LORA = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
CASES = {
    "lm_trainable": {},
    "lm_lora": {"lm_lora": LORA, "retriever_lora": LORA},
    "frozen_lm_top_block": {"freeze_lm": True, "inbatch_layers": [-2, -1]},
    "shared_base": {"share_base": True, "retriever_lora": LORA},  # its LM frozen: the shared weights stay fixed
}


def build(freeze_lm=False, **kwargs):
    torch.manual_seed(0)
    lm = LlamaConfig(**TINY, initializer_range=0.1)  # wider weights than the default: a loss far from log(vocab)
    model = RevelaForCausalLM(RevelaConfig(lm_config=lm.to_dict(), temperature=0.05, **kwargs)).train()
    if freeze_lm:
        model.lm.requires_grad_(False)
    return model


def loss_and_grads(model, context=None):
    ids, mask, labels = group_inputs()
    with context or nullcontext():
        loss = model(ids, mask, labels=labels, query_input_ids=ids[:, :5], query_attention_mask=mask[:, :5],
                     passage_input_ids=ids, passage_attention_mask=mask).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def count_calls(module):
    calls = []
    module.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(case):
    loss, grads = loss_and_grads(build(**CASES[case]))
    model = build(**CASES[case])
    model.activation_checkpointing_enable()
    lm_calls = count_calls(model.lm.get_decoder().layers[-1].mlp)  # checkpointing recomputes inside the layer
    retriever_calls = count_calls(model.retriever.backbone.layers[-1].mlp)
    checkpointed_loss, checkpointed_grads = loss_and_grads(model)
    # Every pass that keeps a graph runs the layer again in backward: the LM's clean and in-batch passes
    # (a frozen LM's clean pass keeps none), the retriever's query and passage sides.
    assert len(lm_calls) == (3 if model.lm_is_frozen else 4)
    assert len(retriever_calls) == 4

    torch.testing.assert_close(checkpointed_loss, loss, atol=1e-6, rtol=1e-6)
    assert checkpointed_grads.keys() == grads.keys()
    assert any(n.startswith("retriever.") for n in grads)
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_reentrant_checkpointing_is_refused():
    with pytest.raises(ValueError, match="use_reentrant=False"):
        build().activation_checkpointing_enable({"use_reentrant": True})


@pytest.mark.parametrize("mode", ["autocast", "bf16_weights"])
def test_bf16_loss_close_to_fp32_and_retriever_gradient_aligned(mode):
    """The bf16 loss lies within `tolerance` of the fp32 one, a fifth of what the in-batch term moves it by
    (so a wrong or missing in-batch term would fail), and the retriever gradient points the same way."""
    model = build()
    loss, grads = loss_and_grads(model)
    ids, mask, labels = group_inputs()
    with torch.no_grad():
        plain = model.lm(input_ids=ids, attention_mask=mask, labels=labels).loss
    tolerance = 1e-2
    assert (loss - plain).abs() > 5 * tolerance

    if mode == "autocast":
        bf16_loss, bf16_grads = loss_and_grads(build(), torch.autocast("cpu", dtype=torch.bfloat16))
    else:
        bf16_loss, bf16_grads = loss_and_grads(build().to(torch.bfloat16))
        assert all(g.dtype == torch.bfloat16 for g in bf16_grads.values())
    assert (bf16_loss - loss).abs() < tolerance
    assert all(torch.isfinite(g).all() for g in bf16_grads.values())
    names = [n for n in grads if n.startswith("retriever.")]
    flat, bf16_flat = (torch.cat([g[n].float().flatten() for n in names]) for g in (grads, bf16_grads))
    assert F.cosine_similarity(bf16_flat, flat, dim=0) > 0.999


def test_similarity_weights_stay_fp32_under_autocast():
    """At the paper's tau = 1e-4 a bf16 cosine (autocast's matmul) would move the logits by tens."""
    g = torch.Generator().manual_seed(0)
    query, passage = torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g)
    cosine, weights = similarity_weights(query, passage, temperature=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_cosine, autocast_weights = similarity_weights(query, passage, temperature=1e-4)
    assert autocast_weights.dtype == torch.float32
    torch.testing.assert_close(autocast_cosine, cosine, atol=1e-6, rtol=0)
    torch.testing.assert_close(autocast_weights, weights, atol=1e-4, rtol=0)
