"""DREAM (METHOD.md §2): a frozen LLM reads K candidates; the retriever decides how much attention
selected heads give to each of them; the target's next-token loss trains the retriever alone.

One row packs, for the LLM (`DreamDataCollator`, left-padded):

    [BOS] cand_1 SEP cand_2 SEP ... cand_K SEP query target EOS

and the retriever scores the query against every candidate:

    P(k | query) = softmax_k(cos(E(query), E(cand_k)) / temperature)

In every selected head (`layers` / `heads` of `DreamSettings`, held by `RevelaConfig.objective_settings`), the attention logits of the READER
positions (the query and target tokens) on the keys of candidate k's span get the additive bias

    bias_k = log(K * P(k | query))   (= log P(k|query) - log(1/K))

Design choices (DREAM's paper leaves them open):
- Log-score bias relative to uniform: equal scores give bias 0 everywhere, i.e. exactly the frozen
  LM on the packed input; a candidate's attention weight is multiplied by K * P(k), so if the
  head attended the candidates equally the total mass on candidates is unchanged and only its
  split among them follows the retriever.
- Only reader rows are biased; the candidates' own tokens (which may attend earlier candidates)
  are encoded by the plain LM, independent of the retriever.
- Unselected heads and layers run the LM's normal attention. The loss is the mean NTP loss over
  target tokens (EOS included); logits are computed for the target window only.
- The bias enters through a registered attention implementation, "revela_dream" (over SDPA) and
  "revela_dream_eager" (over the family's eager attention), which fall back to the "revela"
  implementations when no `dream_context` is passed, so Revela, `generate()` and plain forwards
  are unchanged. The LM is switched to it on the first DREAM forward.

`select_retrieval_heads` picks query-focused retrieval heads on a small sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedConfig, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from revela_hf.attention import EAGER_ATTN_IMPLEMENTATION, base_attention, revela_attention_forward
from revela_hf.modeling_outputs import DreamOutput
from revela_hf.objectives.base import ObjectiveSettings, check_positive, require_frozen_lm
from revela_hf.objectives.scoring import mask_positions, sequence_target_losses
from revela_hf.ops import cosine_matrix

DREAM_ATTN_IMPLEMENTATION = "revela_dream"
DREAM_EAGER_ATTN_IMPLEMENTATION = "revela_dream_eager"


@dataclass(frozen=True)
class DreamSettings(ObjectiveSettings):
    r"""DREAM's settings (`RevelaConfig(objective="dream", objective_settings={...})`).

    Args:
        temperature (`float`, *optional*, defaults to 0.05):
            Softmax temperature of the retriever's distribution P(k | query) over the K candidates; the bias added to
            the keys of candidate k is log(K * P(k | query)). Must be positive.
        layers (`list[int]`, *optional*):
            LM layers whose selected heads take the bias; negative indices count from the top. Defaults to every
            layer.
        heads (`list`, *optional*):
            Heads of those layers that take the bias: unset for every head, a list of `[layer, head]` pairs (then
            `layers` may be unset), or one list of heads per entry of `layers` (`select_retrieval_heads` picks
            pairs).
    """

    temperature: float = 0.05
    layers: list[int] | None = None
    heads: list | None = None

    def __post_init__(self) -> None:
        check_positive("temperature", self.temperature)

    def check(self, lm_config: PreTrainedConfig) -> None:
        text_config = lm_config.get_text_config()
        self.resolved_heads(text_config.num_hidden_layers, text_config.num_attention_heads)

    def resolved_heads(self, num_layers: int, num_heads: int) -> dict[int, list[int]]:
        """Layer -> sorted heads that take the bias, in an LM of `num_layers` layers of `num_heads` heads.

        `heads` None: every head of `layers` (None = every layer). With `layers` given, `heads` holds one list of
        heads per listed layer; without it, `[layer, head]` pairs. Negative layer indices count from the top.
        """

        def layer_index(i) -> int:
            if isinstance(i, bool) or not isinstance(i, int) or not -num_layers <= i < num_layers:
                raise ValueError(f"DREAM layer {i!r} is not a layer of the {num_layers}-layer LM")
            return i % num_layers

        def head_list(heads, layer) -> list[int]:
            heads = list(heads)
            bad = [h for h in heads if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < num_heads]
            if bad or not heads:
                raise ValueError(f"DREAM heads {heads} of layer {layer} must be a non-empty list of heads in [0, {num_heads})")
            return heads

        layers, heads = self.layers, self.heads
        selected: dict[int, set[int]] = {}
        if heads is None:
            for layer in range(num_layers) if layers is None else layers:
                selected[layer_index(layer)] = set(range(num_heads))
        elif layers is None:
            for pair in heads:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise ValueError(f"without DREAM layers, DREAM heads must be [layer, head] pairs; got {pair!r}")
                layer = layer_index(pair[0])
                selected.setdefault(layer, set()).update(head_list([pair[1]], layer))
        else:
            if len(heads) != len(layers) or not all(isinstance(h, (list, tuple)) for h in heads):
                raise ValueError(
                    f"with DREAM layers {layers}, DREAM heads must hold one list of heads per layer; got {heads!r}"
                )
            for layer, layer_heads in zip(layers, heads):
                selected.setdefault(layer_index(layer), set()).update(head_list(layer_heads, layer))
        if not selected:
            raise ValueError("DREAM's layers / heads select no head")
        return {layer: sorted(h) for layer, h in sorted(selected.items())}


@dataclass
class DreamContext:
    """What the attention layers of one DREAM forward do.

    key_bias: `(N, T)` additive bias of every key position (bias_k on candidate k's span, 0 elsewhere).
    reader_mask: `(N, T)` bool, the query positions whose logits take the bias (query + target).
    heads: layer index -> the heads of that layer that take the bias.
    candidate_index / probe: for head selection; with `probe` a dict, every layer records there the
    mean attention mass `(N, H, K)` that reader positions give to each candidate (plain attention).
    """

    key_bias: torch.Tensor
    reader_mask: torch.Tensor
    heads: dict[int, list[int]] = field(default_factory=dict)
    candidate_index: torch.Tensor | None = None  # (N, T) long, -1 outside candidates
    num_candidates: int = 0
    probe: dict[int, torch.Tensor] | None = None
    _row_bias: torch.Tensor | None = None

    def touches(self, layer_idx: int) -> bool:
        return layer_idx in self.heads or self.probe is not None

    def bias(self, layer_idx: int, num_heads: int, q_len: int, k_len: int, dtype: torch.dtype) -> torch.Tensor:
        """`(N, H, Lq, Lk)` additive logits: the candidate bias on reader rows of the selected heads."""
        if self._row_bias is None:
            reader = self.reader_mask[:, -q_len:].to(self.key_bias.dtype)
            self._row_bias = reader[:, None, :, None] * self.key_bias[:, None, None, :k_len]  # (N, 1, Lq, Lk)
        selected = torch.zeros(num_heads, dtype=dtype, device=self.key_bias.device)
        selected[self.heads[layer_idx]] = 1
        return self._row_bias.to(dtype) * selected.view(1, num_heads, 1, 1)

    def record(self, layer_idx: int, probs: torch.Tensor) -> None:
        """Store the mean attention mass `(N, H, K)` of reader rows on each candidate."""
        index = self.candidate_index[:, : probs.shape[-1]]
        onehot = F.one_hot(index.clamp(min=0), self.num_candidates).to(probs.dtype) * (index >= 0)[..., None]
        mass = torch.einsum("nhqk,nkc->nhqc", probs, onehot)  # (N, H, Lq, K)
        reader = self.reader_mask[:, -probs.shape[2] :].to(probs.dtype)  # (N, Lq)
        self.probe[layer_idx] = (mass * reader[:, None, :, None]).sum(2) / reader.sum(-1).clamp(min=1)[:, None, None]


def _additive_mask(attention_mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The layer's mask as additive float logits (0 = attend, dtype min = masked); causal when None."""
    q_len, k_len = query.shape[2], key.shape[2]
    low = torch.finfo(query.dtype).min
    if attention_mask is None:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)[None, None]
    elif attention_mask.dtype == torch.bool:
        allowed = attention_mask[..., :k_len]
    else:
        return attention_mask[..., :k_len].to(query.dtype)
    return torch.zeros((), dtype=query.dtype, device=query.device).masked_fill(~allowed, low).expand(allowed.shape)


def dream_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    dream_context: DreamContext | None = None,
    *,
    eager: bool = False,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The "revela" attention, plus DREAM's candidate bias in the selected heads when `dream_context` is given."""
    if dream_context is None or not dream_context.touches(module.layer_idx):
        return revela_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, eager=eager, **kwargs
        )
    base = base_attention(module, eager)
    additive = _additive_mask(attention_mask, query, key)  # (N|1, 1, Lq, Lk)
    if dream_context.probe is not None:  # attention probabilities: the family's eager attention returns them
        probs = base_attention(module, eager=True)(module, query, key, value, additive, scaling=scaling, dropout=0.0, **kwargs)[1]
        dream_context.record(module.layer_idx, probs.detach().float())
    if module.layer_idx not in dream_context.heads:
        return base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    bias = dream_context.bias(module.layer_idx, query.shape[1], query.shape[2], key.shape[2], query.dtype)
    mask = (additive + bias).clamp(min=torch.finfo(query.dtype).min)
    return base(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)


AttentionInterface.register(DREAM_ATTN_IMPLEMENTATION, dream_attention_forward)
AttentionMaskInterface.register(DREAM_ATTN_IMPLEMENTATION, sdpa_mask)
AttentionInterface.register(DREAM_EAGER_ATTN_IMPLEMENTATION, partial(dream_attention_forward, eager=True))
AttentionMaskInterface.register(DREAM_EAGER_ATTN_IMPLEMENTATION, eager_mask)


def use_dream_attention(lm: PreTrainedModel) -> None:
    """Switch the LM to the DREAM attention (a superset of the revela one) if it is not already."""
    current = lm.config._attn_implementation
    if current in (DREAM_ATTN_IMPLEMENTATION, DREAM_EAGER_ATTN_IMPLEMENTATION):
        return
    eager = current == EAGER_ATTN_IMPLEMENTATION or current == "eager" or not lm._supports_sdpa
    lm.set_attn_implementation(DREAM_EAGER_ATTN_IMPLEMENTATION if eager else DREAM_ATTN_IMPLEMENTATION)


def _num_heads(lm: PreTrainedModel) -> int:
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    return config.num_attention_heads


def candidate_layout(
    candidate_spans: torch.Tensor, candidate_mask: torch.Tensor, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(N, T)` candidate index of every position (-1 outside candidates) and the reader mask
    (positions after the last candidate: its separator, the query and the target)."""
    positions = torch.arange(seq_len, device=candidate_spans.device)
    starts, ends = candidate_spans[..., 0], candidate_spans[..., 1]  # (N, K)
    inside = (positions[None, None, :] >= starts[..., None]) & (positions[None, None, :] < ends[..., None])
    inside &= candidate_mask.bool()[..., None]  # (N, K, T)
    index = torch.where(inside.any(1), inside.float().argmax(1), torch.full_like(positions, -1)[None].expand(len(starts), -1))
    query_start = torch.where(candidate_mask.bool(), ends, torch.zeros_like(ends)).max(-1).values  # (N,)
    return index, positions[None, :] >= query_start[:, None]


def retriever_candidate_scores(
    model, query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask, candidate_mask
) -> torch.Tensor:
    """Cosine `(N, K)` between each query and its real candidates (0 on padding candidates).

    Passages are the real candidates only, in row-major order (`candidate_mask.sum()` rows).
    """
    query_emb, passage_emb = model.retriever_embeddings(query_input_ids, query_attention_mask, passage_input_ids,
                                                        passage_attention_mask)  # (N, E), (M, E)
    real = candidate_mask.bool()
    if passage_emb.shape[0] != int(real.sum()):
        raise ValueError(f"{passage_emb.shape[0]} passages for {int(real.sum())} real candidates in candidate_mask")
    every_pair = cosine_matrix(query_emb, passage_emb)  # (N, M); passage m belongs to row rows[m]
    rows = real.nonzero()[:, 0]
    scores = every_pair.new_zeros(real.shape)
    scores[real] = every_pair[rows, torch.arange(len(rows), device=rows.device)]
    return scores


def dream_forward(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    query_input_ids: torch.Tensor | None = None,
    query_attention_mask: torch.Tensor | None = None,
    passage_input_ids: torch.Tensor | None = None,
    passage_attention_mask: torch.Tensor | None = None,
    inbatch_weights: torch.Tensor | None = None,
    candidate_spans: torch.Tensor | None = None,
    candidate_mask: torch.Tensor | None = None,
    **kwargs,
) -> DreamOutput:
    """The DREAM loss of N packed rows (as `DreamDataCollator` builds them).

    `inbatch_weights` `(N, K)` replaces the retriever's P(k | query) (oracle and equality tests). With
    them the retriever is out of the loop, so the LM may be trainable: that teaches an LM to read the
    candidates its biased heads point at (a warm-up for LMs without such heads). Scored by the
    retriever, the LM must be frozen.
    """
    if inbatch_weights is None:
        require_frozen_lm(model)
    if candidate_spans is None or candidate_mask is None or labels is None:
        raise ValueError("objective='dream' needs labels, candidate_spans and candidate_mask (use DreamDataCollator)")
    settings = model.config.resolved_objective_settings()
    lm = model.lm
    real = candidate_mask.bool()
    num_real = real.sum(-1)  # (N,)
    if (num_real == 0).any():
        raise ValueError(f"rows {(num_real == 0).nonzero().flatten().tolist()} have no candidate")
    similarity = None
    if inbatch_weights is None:
        if query_input_ids is None or passage_input_ids is None:
            raise ValueError("objective='dream' needs query_input_ids and passage_input_ids, or inbatch_weights")
        similarity = retriever_candidate_scores(
            model, query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask, real
        )
        log_probs = (similarity / settings.temperature).masked_fill(~real, float("-inf")).log_softmax(-1)
    else:
        if inbatch_weights.shape != real.shape:
            raise ValueError(f"inbatch_weights must have shape (N, K) = {tuple(real.shape)}, got {tuple(inbatch_weights.shape)}")
        log_probs = inbatch_weights.masked_fill(~real, 0).log()
    weights = log_probs.exp().masked_fill(~real, 0)
    candidate_bias = (log_probs + num_real.log().to(log_probs.dtype)[:, None]).masked_fill(~real, 0)  # log(K * P)

    seq_len = input_ids.shape[1]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    index, reader = candidate_layout(candidate_spans, real, seq_len)
    key_bias = torch.where(index >= 0, candidate_bias.gather(1, index.clamp(min=0)), torch.zeros_like(candidate_bias[:, :1]))
    heads = settings.resolved_heads(len(lm.get_decoder().layers), _num_heads(lm))
    context = DreamContext(key_bias=key_bias, reader_mask=reader & mask.bool(), heads=heads)

    loss, logits = _target_loss(lm, input_ids, mask, labels, dream_context=context)
    return DreamOutput(loss=loss, logits=logits, similarity=similarity, inbatch_weights=weights, candidate_bias=candidate_bias)


def _target_loss(lm, input_ids, attention_mask, labels, **context) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NTP loss over labelled tokens, computing logits only from the first labelled position on."""
    use_dream_attention(lm)
    labelled = labels != -100
    if not labelled.any():
        raise ValueError("no target token is labelled")
    first = torch.where(labelled, torch.arange(labels.shape[1], device=labels.device), labels.shape[1]).min()
    keep = labels.shape[1] - int(first) + 1
    if keep > labels.shape[1]:
        raise ValueError("the first token of a row cannot be a target: it has no context")
    positions = mask_positions(attention_mask)
    logits = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, logits_to_keep=keep, **context).logits
    targets = labels[:, labels.shape[1] - keep + 1 :]
    loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100)
    return loss, logits


# ---------------------------------------------------------------------- retrieval-head selection
@dataclass
class RetrievalHeads:
    """heads: the chosen `[layer, head]` pairs (best first), ready for `DreamSettings(heads=...)`;
    scores: `(num_layers, num_heads)` mean excess attention mass on the most helpful candidate;
    helpful: per sampled row, the index of its most helpful candidate."""

    heads: list[list[int]]
    scores: torch.Tensor
    helpful: list[int]


def _single_candidate_sequences(ids, mask, spans, real, labels) -> tuple[list[torch.Tensor], list[int], list[tuple[int, int]]]:
    """For every (row, candidate): [BOS] cand_k SEP query target (the packed row with only that
    candidate), its target length and (row, candidate column)."""
    sequences, targets, owners = [], [], []
    for n in range(ids.shape[0]):
        columns = [k for k in range(spans.shape[1]) if real[n, k]]
        starts = [int(spans[n, k, 0]) for k in columns]
        ends = [int(spans[n, k, 1]) for k in columns]
        first_real = int(mask[n].nonzero()[0]) if mask[n].any() else 0
        prefix = ids[n, first_real : starts[0]]
        tail = ids[n, ends[-1] :][mask[n, ends[-1] :].bool()]
        for k, s, e in zip(columns, starts, ends):
            sequences.append(torch.cat([prefix, ids[n, s:e], tail]))
            targets.append(int((labels[n] != -100).sum()))
            owners.append((n, k))
    return sequences, targets, owners


@torch.no_grad()
def select_retrieval_heads(
    model,
    batches: Iterable[dict[str, torch.Tensor]],
    num_heads: int = 8,
    layers: Iterable[int] | None = None,
    batch_size: int = 16,
) -> RetrievalHeads:
    """Pick query-focused retrieval heads on a small sample of DREAM batches (from `DreamDataCollator`).

    For each row, the most helpful candidate is the one that alone (`[cand_k] query target`) gives
    the frozen LM the lowest target loss. Then the packed rows run through the plain LM while every
    head's attention from the query and target positions is measured per candidate; a head scores
    the mass it gives the helpful candidate minus the mean mass per candidate, averaged over rows.
    The `num_heads` best heads (optionally only among `layers`) are returned.
    """
    lm = getattr(model, "lm", model)
    use_dream_attention(lm)
    num_layers, heads_per_layer = len(lm.get_decoder().layers), _num_heads(lm)
    scores = torch.zeros(num_layers, heads_per_layer)
    rows, helpful = 0, []
    was_training = lm.training
    lm.eval()
    try:
        for batch in batches:
            ids, labels = batch["input_ids"], batch["labels"]
            mask = batch.get("attention_mask", torch.ones_like(ids))
            spans, real = batch["candidate_spans"], batch["candidate_mask"].bool()
            sequences, targets, owners = _single_candidate_sequences(ids, mask, spans, real, labels)
            losses = sequence_target_losses(lm, sequences, targets, batch_size=batch_size)
            alone = torch.full(real.shape, float("inf"))
            for (n, k), value in zip(owners, losses.tolist()):
                alone[n, k] = value
            best = alone.argmin(-1)  # (N,) position among the real candidates = candidate index
            helpful.extend(best.tolist())

            index, reader = candidate_layout(spans, real, ids.shape[1])
            context = DreamContext(
                key_bias=torch.zeros(ids.shape, dtype=torch.float32, device=ids.device),
                reader_mask=reader & mask.bool(),
                candidate_index=index,
                num_candidates=real.shape[1],
                probe={},
            )
            lm(input_ids=ids, attention_mask=mask, position_ids=mask_positions(mask), logits_to_keep=1, dream_context=context)
            for layer, mass in context.probe.items():  # (N, H, K)
                mass = mass.cpu()
                on_best = mass[torch.arange(len(best)), :, best]  # (N, H)
                mean = (mass * real[:, None, :]).sum(-1) / real.sum(-1)[:, None]
                scores[layer] += (on_best - mean).sum(0)
            rows += ids.shape[0]
    finally:
        lm.train(was_training)
    if rows == 0:
        raise ValueError("select_retrieval_heads needs at least one batch")
    scores /= rows
    allowed = torch.zeros(num_layers, dtype=torch.bool)
    allowed[[i % num_layers for i in (range(num_layers) if layers is None else layers)]] = True
    ranked = scores.masked_fill(~allowed[:, None], float("-inf")).flatten().argsort(descending=True)
    chosen = [[int(i) // heads_per_layer, int(i) % heads_per_layer] for i in ranked[:num_heads]]
    return RetrievalHeads(heads=chosen, scores=scores, helpful=helpful)


__all__ = [
    "DREAM_ATTN_IMPLEMENTATION",
    "DREAM_EAGER_ATTN_IMPLEMENTATION",
    "DreamContext",
    "DreamOutput",
    "DreamSettings",
    "RetrievalHeads",
    "dream_forward",
    "select_retrieval_heads",
    "use_dream_attention",
]
