"""Sparse top-k in-batch attention: `inbatch_attention(top_k=)` and `RevelaConfig.inbatch_top_k`."""


import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama_config

from revela_hf import RevelaConfig, RevelaForCausalLM, inbatch_attention
from test_ops import naive_inbatch_attention


def case(B=6, H=4, Hkv=2, Lq=5, Lk=7, D=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, D, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(B, Hkv, Lk, D, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(B, Hkv, Lk, D, generator=g, dtype=dtype, requires_grad=True)
    logits = torch.randn(B, B, generator=g, dtype=dtype).fill_diagonal_(float("-inf")).requires_grad_()
    mask = torch.ones(B, Lk, dtype=torch.bool)
    mask[1, 4:] = False  # right padding
    mask[3, :3] = False  # left padding
    return q, k, v, logits, mask


def compare(got_fn, want_fn, inputs, tol):
    got = got_fn()
    want = want_fn()
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    grad_out = torch.randn_like(got)
    g1 = torch.autograd.grad((got * grad_out).sum(), inputs, retain_graph=True)
    g2 = torch.autograd.grad((want * grad_out).sum(), inputs)
    for name, a, b in zip("qkvw", g1, g2):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("v_norm", [True, False])
@pytest.mark.parametrize("heads", [(4, 2), (4, 4), (4, 1)])
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_topk_matches_loop_reference_forward_and_backward(v_norm, heads, top_k):
    q, k, v, logits, mask = case(H=heads[0], Hkv=heads[1], seed=top_k)
    w = logits.softmax(-1)  # distinct weights: a unique top-k set per row
    compare(
        lambda: inbatch_attention(q, k, v, w, mask, v_norm=v_norm, top_k=top_k),
        lambda: naive_inbatch_attention(q, k, v, w, mask, v_norm, top_k),
        (q, k, v, logits),
        1e-8,
    )


def test_topk_float32_and_raw_weight_gradient():
    q, k, v, logits, mask = case(dtype=torch.float32, seed=3)
    w = logits.softmax(-1).detach().requires_grad_()
    out = inbatch_attention(q, k, v, w, mask, top_k=2)
    ref = naive_inbatch_attention(q, k, v, w, mask, True, 2)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    grad_out = torch.randn_like(out)
    (gw,) = torch.autograd.grad((out * grad_out).sum(), w, retain_graph=True)
    (gw_ref,) = torch.autograd.grad((ref * grad_out).sum(), w)
    torch.testing.assert_close(gw, gw_ref, atol=1e-4, rtol=1e-4)
    kept = torch.zeros_like(w, dtype=torch.bool).scatter_(1, w.topk(2, dim=-1).indices, True)
    assert (gw[~kept] == 0).all(), "dropped weights get no gradient"
    assert (gw[kept] != 0).all()


@pytest.mark.parametrize("top_k", [5, 6, 50])  # B = 6: B - 1 and more keep every non-zero weight
def test_topk_at_least_b_minus_1_equals_exact(top_k):
    q, k, v, logits, mask = case(seed=7)
    w = logits.softmax(-1)
    compare(
        lambda: inbatch_attention(q, k, v, w, mask, top_k=top_k),
        lambda: inbatch_attention(q, k, v, w, mask),
        (q, k, v, logits),
        1e-10,
    )


def test_topk_of_one_hot_weights_equals_exact():
    q, k, v, _, mask = case(seed=2)
    B = q.shape[0]
    w = torch.zeros(B, B, dtype=q.dtype)
    w[torch.arange(B), (torch.arange(B) + 1) % B] = 1
    w.requires_grad_()
    compare(
        lambda: inbatch_attention(q, k, v, w, mask, top_k=1),
        lambda: inbatch_attention(q, k, v, w, mask),
        (q, k, v),
        1e-10,
    )
    # The kept weight's gradient is the exact one (the dropped zeros get none).
    grad_out = torch.randn(q.shape, dtype=q.dtype)
    (got,) = torch.autograd.grad((inbatch_attention(q, k, v, w, mask, top_k=1) * grad_out).sum(), w)
    (want,) = torch.autograd.grad((inbatch_attention(q, k, v, w, mask) * grad_out).sum(), w)
    torch.testing.assert_close(got[w > 0], want[w > 0], atol=1e-10, rtol=1e-10)


def test_topk_runs_k_batched_blocks_not_b(monkeypatch):
    """Cost linear in B: k attention calls of B query chunks against B gathered key chunks each."""
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        calls.append((tuple(q.shape), tuple(k.shape)))
        return real_sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    B, top_k = 12, 3
    q, k, v, logits, mask = case(B=B, seed=1)
    with torch.no_grad():
        inbatch_attention(q, k, v, logits.softmax(-1), mask, top_k=top_k)
    assert len(calls) == top_k
    for q_shape, k_shape in calls:
        assert q_shape[0] == B and k_shape[0] == B and q_shape[2] == 5 and k_shape[2] == 7


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_top_k_is_named(bad):
    q, k, v, logits, mask = case()
    with pytest.raises(ValueError, match="top_k"):
        inbatch_attention(q, k, v, logits.softmax(-1), mask, top_k=bad)


# ---------------------------------------------------------------------------------------------- model


def tiny_config(**kwargs):
    lm = tiny_llama_config(vocab_size=61, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return RevelaConfig(lm_config=lm.to_dict(), **kwargs)


def build(**kwargs):
    torch.manual_seed(0)
    return RevelaForCausalLM(tiny_config(**kwargs)).eval()


def lm_inputs(B=5, L=8):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 61, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[2, 5:] = 0
    return ids, mask, ids.masked_fill(mask == 0, -100)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_config_rejects_bad_inbatch_top_k(bad):
    with pytest.raises(ValueError, match="inbatch_top_k"):
        tiny_config(inbatch_top_k=bad)


def test_config_round_trip_keeps_inbatch_top_k(tmp_path):
    tiny_config(inbatch_top_k=3).save_pretrained(tmp_path)
    assert RevelaConfig.from_pretrained(tmp_path).inbatch_top_k == 3


def test_model_threads_top_k_into_the_attention():
    ids, mask, labels = lm_inputs()
    B = ids.shape[0]
    one_hot = torch.zeros(B, B)
    one_hot[torch.arange(B), (torch.arange(B) + 2) % B] = 1
    spread = torch.rand(B, B, generator=torch.Generator().manual_seed(1)).fill_diagonal_(0)
    spread = spread / spread.sum(-1, keepdim=True)
    exact, sparse = build(), build(inbatch_top_k=1)
    with torch.no_grad():
        loss = lambda m, w: m(input_ids=ids, attention_mask=mask, labels=labels, inbatch_weights=w).loss  # noqa: E731
        torch.testing.assert_close(loss(sparse, one_hot), loss(exact, one_hot))
        assert not torch.allclose(loss(sparse, spread), loss(exact, spread)), "top_k must reach the attention layers"
        torch.testing.assert_close(loss(build(inbatch_top_k=B - 1), spread), loss(exact, spread))


def test_model_with_top_k_trains_the_retriever():
    ids, mask, labels = lm_inputs()
    model = build(inbatch_top_k=2, temperature=0.5).train()
    out = model(input_ids=ids, attention_mask=mask, labels=labels, query_input_ids=ids, query_attention_mask=mask,
                passage_input_ids=ids, passage_attention_mask=mask)
    out.loss.backward()
    grads = [p.grad for p in model.retriever.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
