"""`inbatch_attention` and `inbatch_similarity` against explicit-loop references of METHOD.md §1."""

import math

import pytest
import torch

from revela_hf import inbatch_attention, inbatch_similarity


def naive_inbatch_attention(query, key, value, weights, key_padding_mask, v_norm, top_k=None, eps=1e-6):
    """out[i, h] = sum_j w[i, j] * softmax(q_ih k_jh^T / sqrt(D)) v_jh over chunk j's real tokens (loops);
    with `top_k`, j runs over the top_k largest weights of row i only."""
    B, H, Lq, D = query.shape
    group = H // key.shape[1]
    rows = []
    for i in range(B):
        order = sorted(range(B), key=lambda j: -float(weights[i, j].detach()))
        chosen = order if top_k is None else order[:top_k]
        heads = []
        for h in range(H):
            acc = torch.zeros(Lq, D, dtype=query.dtype)
            for j in chosen:
                real = key_padding_mask[j]
                k = key[j, h // group][real]
                v = value[j, h // group][real]
                p = torch.softmax(query[i, h] @ k.T / math.sqrt(D), dim=-1)  # (Lq, Lj)
                b = p @ v
                if v_norm:
                    b = b / (p @ v.norm(dim=-1) + eps).unsqueeze(-1)
                acc = acc + weights[i, j] * b
            heads.append(acc)
        rows.append(torch.stack(heads))
    return torch.stack(rows)


def random_case(dtype, B=4, H=4, Hkv=2, Lq=5, Lk=6, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, D, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(B, Hkv, Lk, D, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(B, Hkv, Lk, D, generator=g, dtype=dtype, requires_grad=True)
    w = torch.rand(B, B, generator=g, dtype=dtype)
    w.fill_diagonal_(0)
    w = (w / w.sum(-1, keepdim=True)).requires_grad_()
    mask = torch.ones(B, Lk, dtype=torch.bool)
    mask[1, 3:] = False  # right padding
    mask[2, :2] = False  # left padding
    return q, k, v, w, mask


@pytest.mark.parametrize("v_norm", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
@pytest.mark.parametrize("heads", [(4, 2), (4, 4), (4, 1)])
def test_inbatch_attention_matches_naive_forward_and_backward(v_norm, dtype, tol, heads):
    q, k, v, w, mask = random_case(dtype, H=heads[0], Hkv=heads[1])
    out = inbatch_attention(q, k, v, w, mask, v_norm=v_norm)
    ref = naive_inbatch_attention(q, k, v, w, mask, v_norm)
    assert out.shape == q.shape
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad((out * grad_out).sum(), (q, k, v, w))
    want = torch.autograd.grad((ref * grad_out).sum(), (q, k, v, w))
    for name, a, b in zip("qkvw", got, want):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=f"gradient of {name}")


def test_no_padding_mask_means_all_tokens_real():
    q, k, v, w, _ = random_case(torch.float64)
    full = torch.ones(k.shape[0], k.shape[2], dtype=torch.bool)
    torch.testing.assert_close(inbatch_attention(q, k, v, w), naive_inbatch_attention(q, k, v, w, full, True))


def test_one_hot_weights_select_one_chunk():
    q, k, v, _, mask = random_case(torch.float64)
    w = torch.zeros(4, 4, dtype=torch.float64)
    w[0, 3] = 1.0
    out = inbatch_attention(q, k, v, w, mask, v_norm=False)
    p = torch.softmax(q[0, 0] @ k[3, 0].T / math.sqrt(q.shape[-1]), dim=-1)
    torch.testing.assert_close(out[0, 0], p @ v[3, 0])
    assert out[1:].abs().max() == 0


def test_inbatch_similarity_matches_reference():
    g = torch.Generator().manual_seed(1)
    qe, pe = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    qe.requires_grad_(), pe.requires_grad_()
    tau = 0.3
    got = inbatch_similarity(qe, pe, temperature=tau)
    ref = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(5):
        scores = [torch.dot(qe[i], pe[j]) / (qe[i].norm() * pe[j].norm()) / tau for j in range(5)]
        denom = sum(torch.exp(s) for j, s in enumerate(scores) if j != i)
        for j in range(5):
            ref[i, j] = 0 if i == j else torch.exp(scores[j]) / denom
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)
    g_out = torch.randn(5, 5, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((got * g_out).sum(), (qe, pe)), torch.autograd.grad((ref * g_out).sum(), (qe, pe))):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    with_diag = inbatch_similarity(qe, pe, temperature=tau, exclude_diagonal=False)
    assert with_diag.diagonal().min() > 0
    torch.testing.assert_close(with_diag.sum(-1), torch.ones(5, dtype=torch.float64))


def test_backward_memory_is_not_quadratic_in_pairs():
    """Saved activations must stay far below one (B, B, H, Lq, Lk) fp32 tensor."""
    B, H, Hkv, L, D = 8, 8, 2, 64, 16
    q = torch.randn(B, H, L, D, requires_grad=True)
    k = torch.randn(B, Hkv, L, D, requires_grad=True)
    v = torch.randn(B, Hkv, L, D, requires_grad=True)
    w = torch.full((B, B), 1.0 / (B - 1)).fill_diagonal_(0).requires_grad_()
    saved: dict[int, int] = {}  # storage address -> bytes (a tensor saved twice is held once)

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inbatch_attention(q, k, v, w).sum()
    pair_scores_bytes = B * B * H * L * L * 4
    assert sum(saved.values()) < pair_scores_bytes / 4


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda q, k, v, w, m: (q, k[:, :, :, :4], v, w, m), "same shape"),
        (lambda q, k, v, w, m: (q[:3], k, v, w, m), "batch"),
        (lambda q, k, v, w, m: (q, k.repeat(1, 3, 1, 1)[:, :3], v.repeat(1, 3, 1, 1)[:, :3], w, m), "multiple"),
        (lambda q, k, v, w, m: (q, k, v, w[:, :3], m), r"shape \(B, B\)"),
        (lambda q, k, v, w, m: (q, k, v, w * 2, m), "sum to 1"),
        (lambda q, k, v, w, m: (q, k, v, -w, m), "non-negative"),
        (lambda q, k, v, w, m: (q, k, v, w, m[:, :3]), "key_padding_mask"),
        (lambda q, k, v, w, m: (q, k, v, w, m & torch.tensor([True, False, True, True])[:, None]), "no real token"),
        (lambda q, k, v, w, m: (q[:1], k[:1], v[:1], w[:1, :1] * 0, m[:1]), "at least 2"),
        (lambda q, k, v, w, m: (q[0], k, v, w, m), "4-D"),
    ],
)
def test_bad_input_is_named(change, match):
    q, k, v, w, mask = random_case(torch.float32)
    with pytest.raises(ValueError, match=match):
        inbatch_attention(*change(q.detach(), k.detach(), v.detach(), w.detach(), mask))


def test_similarity_is_computed_in_fp32_for_low_precision_embeddings():
    """bf16 embeddings at the paper's tau = 1e-4: the weights equal the fp32 computation's and rows sum to 1."""
    g = torch.Generator().manual_seed(3)
    qe, pe = torch.randn(16, 64, generator=g).bfloat16(), torch.randn(16, 64, generator=g).bfloat16()
    got = inbatch_similarity(qe, pe, temperature=1e-4)
    torch.testing.assert_close(got, inbatch_similarity(qe.float(), pe.float(), temperature=1e-4))
    torch.testing.assert_close(got.sum(-1), torch.ones(16), atol=1e-6, rtol=0)


def test_low_precision_weights_pass_the_row_check():
    q, k, v, w, mask = random_case(torch.float32)
    w16 = w.detach().bfloat16()  # rows now sum to 1 only within bf16 rounding
    assert (w16.float().sum(-1) - 1).abs().max() > 1e-3, "the case must exercise bf16 rounding"
    out = inbatch_attention(q.detach().bfloat16(), k.detach().bfloat16(), v.detach().bfloat16(), w16, mask)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="sum to 1"):  # the same sums in fp32 are a real error
        inbatch_attention(q.detach(), k.detach(), v.detach(), w16.float(), mask)


def test_similarity_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        inbatch_similarity(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same shape"):
        inbatch_similarity(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="temperature"):
        inbatch_similarity(torch.randn(3, 4), torch.randn(3, 4), temperature=0)
