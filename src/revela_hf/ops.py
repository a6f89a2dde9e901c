"""The two tensor operators of Revela: in-batch similarity and in-batch attention.

Notation (METHOD.md §1): a group holds B chunks; chunk i's queries attend, without a causal
mask, to every real token of every other chunk j, and the B-1 results are mixed with the
retriever's weights Sim(i, j).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from revela_hf.defaults import PAPER_TEMPERATURE

_ROW_SUM_TOLERANCE = 1e-3


def cosine_matrix(query_emb: torch.Tensor, passage_emb: torch.Tensor) -> torch.Tensor:
    """Cosine `(N, M)` of `(N, E)` queries and `(M, E)` passages, in at least fp32.

    Whatever the embeddings' dtype, autocast included (it would run the matmul in bf16): at tau = 1e-4
    the logits reach 1e4, and bf16's ~3 significant digits would move them by tens.
    """
    dtype = torch.promote_types(query_emb.dtype, torch.float32)  # fp64 stays fp64
    with torch.autocast(query_emb.device.type, enabled=False):
        return F.normalize(query_emb.to(dtype), dim=-1) @ F.normalize(passage_emb.to(dtype), dim=-1).T


def similarity_weights(
    query_emb: torch.Tensor,
    passage_emb: torch.Tensor,
    temperature: float = PAPER_TEMPERATURE,
    exclude_diagonal: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities `(B, B)` and the in-batch weights `(B, B)` derived from them.

    ``Sim(i, j) = softmax_{j != i}(cos(q_i, p_j) / temperature)`` (METHOD.md §1).

    Args:
        query_emb: `(B, E)` query-side embeddings (need not be normalised).
        passage_emb: `(B, E)` passage-side embeddings of the same B chunks.
        temperature: softmax temperature; the paper uses 1e-4.
        exclude_diagonal: give chunk i no weight on itself (the paper's setting).
    """
    if query_emb.dim() != 2 or passage_emb.dim() != 2:
        raise ValueError(
            f"in-batch similarity expects 2-D (B, E) embeddings, got query {tuple(query_emb.shape)} "
            f"and passage {tuple(passage_emb.shape)}"
        )
    if query_emb.shape != passage_emb.shape:
        raise ValueError(
            f"query and passage embeddings must have the same shape, got {tuple(query_emb.shape)} "
            f"and {tuple(passage_emb.shape)}"
        )
    group_size = query_emb.shape[0]
    if exclude_diagonal and group_size < 2:
        raise ValueError(f"a group needs at least 2 chunks for in-batch similarity, got B={group_size}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    cosine = cosine_matrix(query_emb, passage_emb)  # (B, B)
    logits = cosine / temperature
    if exclude_diagonal:
        eye = torch.eye(group_size, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(eye, float("-inf"))
    return cosine, logits.softmax(dim=-1)


def inbatch_similarity(
    query_emb: torch.Tensor,
    passage_emb: torch.Tensor,
    temperature: float = PAPER_TEMPERATURE,
    exclude_diagonal: bool = True,
) -> torch.Tensor:
    """In-batch weights `(B, B)`: row i is Sim(i, .), summing to 1 (see `similarity_weights`)."""
    return similarity_weights(query_emb, passage_emb, temperature, exclude_diagonal)[1]


def check_inbatch_weights(weights: torch.Tensor, group_size: int) -> None:
    """Raise a clear error unless `weights` is `(B, B)`, non-negative, each row a distribution or all zero."""
    if weights.shape != (group_size, group_size):
        raise ValueError(f"in-batch weights must have shape (B, B) = ({group_size}, {group_size}), got {tuple(weights.shape)}")
    if group_size < 2:
        raise ValueError(f"in-batch attention needs a group of at least 2 chunks, got B={group_size}")
    if not weights.is_floating_point():
        raise ValueError(f"in-batch weights must be floating point, got {weights.dtype}")
    with torch.no_grad():
        w = weights.detach().float()
        if not torch.isfinite(w).all():
            raise ValueError("in-batch weights contain NaN or inf")
        if (w < 0).any():
            raise ValueError("in-batch weights must be non-negative")
        row_sums = w.sum(dim=-1)
        tolerance = max(_ROW_SUM_TOLERANCE, torch.finfo(weights.dtype).eps)  # bf16 weights round to ~4e-3
        ok = ((row_sums - 1).abs() <= tolerance) | (row_sums.abs() <= tolerance)
        if not ok.all():
            bad = ok.logical_not().nonzero().flatten()[:5].tolist()
            raise ValueError(
                f"each row of the in-batch weights must sum to 1 (or be all zero for no in-batch context); "
                f"rows {bad} sum to {row_sums[bad].tolist()}"
            )


def _weighted_block(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    v_norm: bool,
    eps: float,
) -> torch.Tensor:
    """``weight[i] * b_ij`` for the B query chunks i, each against the key chunk j its batch row holds.

    query: `(N, H, M, D)`, the B query chunks of Lq tokens either one per row (N = B, M = Lq) or all
    in one sequence (N = 1, M = B*Lq; attention is non-causal, so the queries are independent);
    key/value: `(N, Hkv, Lk, D)`; mask: `(N, 1, 1, Lk)` bool (True = real token) or None;
    weight: `(B,)`. Returns `(B, H, Lq, D)`.
    """
    rows, num_heads, row_len, head_dim = query.shape
    group_size = weight.shape[0]
    repeats = num_heads // key.shape[1]
    if repeats > 1:
        key = key.repeat_interleave(repeats, dim=1)  # (N, H, Lk, D)
        value = value.repeat_interleave(repeats, dim=1)
    if v_norm:
        # Append ||V|| as one more value channel (and a zero channel to Q and K so Q.K is
        # unchanged): the same softmax then yields sum_k p_k ||V_k||, the V-norm denominator.
        value = torch.cat([value, value.norm(dim=-1, keepdim=True)], dim=-1)  # (N, H, Lk, D+1)
        key = F.pad(key, (0, 1))
        query = F.pad(query, (0, 1))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)  # (N, H, M, D')
    chunks_per_row = group_size // rows
    out = out.view(rows, num_heads, chunks_per_row, row_len // chunks_per_row, -1)  # (N, H, B/N, Lq, D')
    out = out.transpose(1, 2).flatten(0, 1)  # (B, H, Lq, D')
    if v_norm:
        out = out[..., :head_dim] / (out[..., head_dim:] + eps)
    return out * weight.view(group_size, 1, 1, 1).to(out.dtype)


def _sum_blocks(block: Callable[..., torch.Tensor], steps: Iterable[tuple], out: torch.Tensor) -> torch.Tensor:
    """`out` plus ``block(*args)`` over the steps; under autograd each block is recomputed in backward,
    so no step's attention is held."""
    for args in steps:
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            out = out + checkpoint(block, *args, use_reentrant=False)
        else:
            out = out + block(*args)
    return out


def inbatch_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    weights: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    v_norm: bool = True,
    scaling: float | None = None,
    eps: float = 1e-6,
    top_k: int | None = None,
) -> torch.Tensor:
    """Similarity-weighted in-batch attention: ``out_i = sum_j weights[i, j] * b_ij``.

    ``b_ij = softmax(Q_i K_j^T * scaling) V_j`` over the real tokens of chunk j (no causal mask);
    with `v_norm`, ``b_ij`` is divided by ``softmax(Q_i K_j^T * scaling) ||V_j||_2 + eps`` per
    query token and head (METHOD.md §1).

    Memory: one key chunk at a time, each chunk's block recomputed in backward, so neither the
    `(B, B, H, Lq, Lk)` attention nor the `(B, B, H, Lq, D)` pair outputs are ever held.

    Args:
        query: `(B, H, Lq, D)` queries of the h-stream.
        key: `(B, Hkv, Lk, D)` keys of the clean e-stream (after rotary embedding); H % Hkv == 0.
        value: `(B, Hkv, Lk, D)` values of the clean e-stream.
        weights: `(B, B)`, row i is Sim(i, .).
        key_padding_mask: `(B, Lk)` bool, True = real token. None = every token is real.
        v_norm: apply V-normalisation.
        scaling: score scale, default D ** -0.5.
        eps: V-norm stabiliser.
        top_k: sparse mode. None (default) = exact sum over all j. An int k keeps, for each row i,
            only the k chunks j with the largest ``weights[i, j]`` (ties broken by `torch.topk`) and
            computes ``b_ij`` for those alone: ``out_i = sum_{j in topk(i)} weights[i, j] * b_ij``.
            The kept weights are used AS-IS, not renormalised: the result is the exact sum minus the
            dropped terms (error at most the dropped weight mass times max |b_ij|; with the paper's
            tau = 1e-4 Sim is nearly one-hot, so a few j hold almost all the mass), and the gradient
            of every kept weight is the exact one. Dropped weights get zero gradient. Cost and memory
            are linear in B (k blocks of `(B, H, Lq, Lk)` instead of B). ``top_k >= B - 1`` runs the
            exact path (a row of Revela weights has at most B - 1 non-zero entries).

    Returns:
        `(B, H, Lq, D)` in the dtype of `query`.
    """
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            "inbatch_attention expects 4-D tensors query (B, H, Lq, D), key/value (B, Hkv, Lk, D); got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    group_size, num_heads, query_len, head_dim = query.shape
    if key.shape != value.shape:
        raise ValueError(f"key and value must have the same shape, got {tuple(key.shape)} and {tuple(value.shape)}")
    if key.shape[0] != group_size or key.shape[-1] != head_dim:
        raise ValueError(
            f"key/value {tuple(key.shape)} do not match query {tuple(query.shape)}: batch (B) and head_dim (D) must agree"
        )
    num_kv_heads, key_len = key.shape[1], key.shape[2]
    if num_heads % num_kv_heads != 0:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of key/value heads ({num_kv_heads})")
    check_inbatch_weights(weights, group_size)
    if key_padding_mask is not None:
        if key_padding_mask.shape != (group_size, key_len):
            raise ValueError(
                f"key_padding_mask must have shape (B, Lk) = ({group_size}, {key_len}), got {tuple(key_padding_mask.shape)}"
            )
        key_padding_mask = key_padding_mask.bool()
        empty = (~key_padding_mask.any(dim=-1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"chunks {empty} have no real token in key_padding_mask")
    scaling = head_dim**-0.5 if scaling is None else scaling
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if top_k < group_size - 1:
            return _sparse_inbatch_attention(query, key, value, weights, key_padding_mask, top_k, scaling, v_norm, eps)

    flat_query = query.transpose(0, 1).reshape(1, num_heads, group_size * query_len, head_dim)  # (1, H, B*Lq, D)

    def chunk(j: int) -> tuple:
        """Step j: every query chunk against the real tokens of key chunk j."""
        key_j, value_j = key[j : j + 1], value[j : j + 1]  # (1, Hkv, Lk, D)
        if key_padding_mask is not None and not key_padding_mask[j].all():
            real = key_padding_mask[j]
            key_j, value_j = key_j[:, :, real], value_j[:, :, real]  # (1, Hkv, Lj, D)
        return (flat_query, key_j, value_j, weights[:, j], None, scaling, v_norm, eps)

    return _sum_blocks(_weighted_block, (chunk(j) for j in range(group_size)), query.new_zeros(query.shape))


def _attend_to_selected(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    index: torch.Tensor,
    mask_s: torch.Tensor | None,
    weight_s: torch.Tensor,
    scaling: float,
    v_norm: bool,
    eps: float,
) -> torch.Tensor:
    """Weighted contribution of one selected key chunk per query chunk.

    query: `(B, H, Lq, D)`; key/value: `(B, Hkv, Lk, D)`; index: `(B,)`, the key chunk row i selected
    in this slot (gathered here, so a checkpoint keeps only the index); mask_s: `(B, 1, 1, Lk)` bool
    (True = real token) or None; weight_s: `(B,)` the selected weights.
    """
    key_s, value_s = key.index_select(0, index), value.index_select(0, index)  # (B, Hkv, Lk, D)
    return _weighted_block(query, key_s, value_s, weight_s, mask_s, scaling, v_norm, eps)


def _sparse_inbatch_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    weights: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    top_k: int,
    scaling: float,
    v_norm: bool,
    eps: float,
) -> torch.Tensor:
    """Top-k path of `inbatch_attention`: slot s gathers, for every row i, its s-th selected key chunk,
    so each of the k steps is one batched attention of B query chunks against B key chunks."""
    selected = torch.topk(weights.detach(), top_k, dim=-1).indices  # (B, k)
    kept = weights.gather(1, selected)  # (B, k), differentiable

    def slot(s: int) -> tuple:
        """Step s: every query chunk against its s-th selected key chunk."""
        index = selected[:, s]  # (B,)
        mask_s = None
        if key_padding_mask is not None:
            mask_rows = key_padding_mask.index_select(0, index)  # (B, Lk)
            if not mask_rows.all():
                mask_s = mask_rows[:, None, None, :]
        return (query, key, value, index, mask_s, kept[:, s], scaling, v_norm, eps)

    return _sum_blocks(_attend_to_selected, (slot(s) for s in range(top_k)), query.new_zeros(query.shape))
