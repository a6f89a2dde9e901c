"""REPLUG (Shi et al., 2024) inside a group of chunks: the frozen LM's preference teaches the retriever.

For a group of B chunks, anchor i and candidate j != i (METHOD.md §3):

    P_R(j | i)  = softmax_{j != i}(cos(q_i, p_j) / tau_r)            (the retriever, with gradient)
    P_LM(j | i) = softmax_{j != i}(-loss_LM(i | j) / tau_lm)          (the frozen LM, no gradient)
    loss        = mean_i KL(P_LM(. | i) || P_R(. | i))

`q_i` is the retriever's query embedding of chunk i (its first half for text, as in Revela) and
`p_j` the passage embedding of chunk j. `loss_LM(i | j)` is the LM's mean next-token loss on
chunk i's TARGET tokens with chunk j's tokens (EOS included) prepended:

- `target="second_half"` (default): the input is `chunk j + chunk i`, and the loss covers
  the tokens of chunk i after its first `ceil(query_ratio * n_i)` tokens. This is REPLUG's
  set-up: the first part of chunk i is the query (the same text the retriever sees), the rest is
  the continuation the retrieved chunk should help predict.
- `target="all"`: the loss covers every token of chunk i (for code, where the query is the
  whole chunk).

A mean (not a sum) over target tokens: the target of anchor i is the same for every j, so the two
differ only by a per-anchor rescaling of tau_lm. All B*(B-1) concatenations are scored in
left-padded batches of `pair_batch_size` under no_grad (see `scoring.py`). The settings are
`ReplugSettings`, held by `RevelaConfig.objective_settings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from revela_hf.modeling_outputs import ReplugOutput
from revela_hf.objectives.base import ObjectiveSettings, check_positive, require_frozen_lm
from revela_hf.objectives.scoring import sequence_target_losses

TARGETS = ("second_half", "all")


@dataclass(frozen=True)
class ReplugSettings(ObjectiveSettings):
    r"""REPLUG's settings (`RevelaConfig(objective="replug", objective_settings={...})`).

    Args:
        retriever_temperature (`float`, *optional*, defaults to 1e-3):
            The retriever's temperature tau_r in P_R(j | i) = softmax_j(cos(q_i, p_j) / tau_r). Must be positive.
        lm_temperature (`float`, *optional*, defaults to 1e-3):
            The LM's temperature tau_lm in P_LM(j | i) = softmax_j(-loss_LM(i | j) / tau_lm). Must be positive.
        target (`str`, *optional*, defaults to `"second_half"`):
            The tokens of chunk i that the LM scores after chunk j: `"second_half"` those after its first
            `query_ratio` (the query part, as REPLUG does), `"all"` the whole chunk.
        pair_batch_size (`int`, *optional*, defaults to 16):
            (chunk j, chunk i) concatenations per no-grad LM forward when the pairs are scored; it changes the
            speed and memory, not the loss, so model cards leave it out. Must be a positive integer.
    """

    retriever_temperature: float = 1e-3
    lm_temperature: float = 1e-3
    target: Literal["second_half", "all"] = "second_half"
    pair_batch_size: int = field(default=16, metadata={"card": False})

    def __post_init__(self) -> None:
        check_positive("retriever_temperature", self.retriever_temperature)
        check_positive("lm_temperature", self.lm_temperature)
        _check_target(self.target)
        if isinstance(self.pair_batch_size, bool) or not isinstance(self.pair_batch_size, int) or self.pair_batch_size < 1:
            raise ValueError(f"pair_batch_size must be a positive integer, got {self.pair_batch_size!r}")


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"REPLUG's target must be one of {TARGETS}, got {target!r}")


def target_starts(lengths: torch.Tensor, target: str, query_ratio: float) -> torch.Tensor:
    """Index of the first target token of each chunk of `lengths` real tokens (`(B,)` long)."""
    _check_target(target)
    if target == "all":
        return torch.zeros_like(lengths)
    starts = torch.tensor([math.ceil(query_ratio * int(n)) for n in lengths], dtype=torch.long, device=lengths.device)
    return torch.minimum(starts, lengths - 1).clamp(min=0)  # at least one target token


def pair_lm_losses(
    lm,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    target: str = "second_half",
    query_ratio: float = 0.5,
    pair_batch_size: int = 16,
) -> torch.Tensor:
    """loss_LM(i | j) for every ordered pair i != j of a group, `(B, B)` float32 with +inf on the diagonal.

    input_ids `(B, L)`: the group's chunks (any padding; `attention_mask` marks real tokens).
    """
    group_size = input_ids.shape[0]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    chunks = [input_ids[b][mask[b].bool()] for b in range(group_size)]
    lengths = torch.tensor([len(c) for c in chunks])
    if (lengths == 0).any():
        raise ValueError(f"chunks {(lengths == 0).nonzero().flatten().tolist()} have no real token")
    starts = target_starts(lengths, target, query_ratio)
    pairs = [(i, j) for i in range(group_size) for j in range(group_size) if i != j]
    sequences = [torch.cat([chunks[j], chunks[i]]) for i, j in pairs]
    target_lengths = [int(lengths[i] - starts[i]) for i, _ in pairs]
    scores = sequence_target_losses(lm, sequences, target_lengths, batch_size=pair_batch_size)
    losses = torch.full((group_size, group_size), float("inf"))
    for (i, j), value in zip(pairs, scores.tolist()):
        losses[i, j] = value
    return losses.to(input_ids.device)


def kl_to_retriever(lm_log_probs: torch.Tensor, retriever_log_probs: torch.Tensor) -> torch.Tensor:
    """mean_i sum_{j != i} P_LM(j|i) (log P_LM(j|i) - log P_R(j|i)) over the off-diagonal entries."""
    group_size = lm_log_probs.shape[0]
    off = ~torch.eye(group_size, dtype=torch.bool, device=lm_log_probs.device)
    lm_log = lm_log_probs[off].view(group_size, group_size - 1)
    r_log = retriever_log_probs[off].view(group_size, group_size - 1)
    return (lm_log.exp() * (lm_log - r_log)).sum(-1).mean()


def replug_forward(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    query_input_ids: torch.Tensor | None = None,
    query_attention_mask: torch.Tensor | None = None,
    passage_input_ids: torch.Tensor | None = None,
    passage_attention_mask: torch.Tensor | None = None,
    inbatch_weights: torch.Tensor | None = None,
    **kwargs,
) -> ReplugOutput:
    """The REPLUG loss of one group (rows as `RevelaDataCollator` builds them); `labels` are not used."""
    require_frozen_lm(model)
    config = model.config
    settings = config.resolved_objective_settings()
    if inbatch_weights is not None:
        raise ValueError("objective='replug' trains the retriever from its own scores; inbatch_weights cannot override them")
    if query_input_ids is None or passage_input_ids is None:
        raise ValueError("objective='replug' needs query_input_ids and passage_input_ids (the retriever's inputs)")
    if input_ids.shape[0] < 2:
        raise ValueError(f"a group needs at least 2 chunks, got B={input_ids.shape[0]}")
    pair_losses = pair_lm_losses(
        model.lm, input_ids, attention_mask, settings.target, config.query_ratio, settings.pair_batch_size
    )
    cosine, weights = model.score_group(query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask,
                                        temperature=settings.retriever_temperature, exclude_diagonal=True)
    loss = replug_loss(pair_losses, cosine, settings.lm_temperature, settings.retriever_temperature)
    return ReplugOutput(
        loss=loss,
        similarity=cosine,
        inbatch_weights=weights,
        lm_distribution=_off_diagonal_log_softmax(-pair_losses / settings.lm_temperature).exp(),
        pair_losses=pair_losses,
    )


def _off_diagonal_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    diagonal = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return logits.masked_fill(diagonal, float("-inf")).log_softmax(-1)


def replug_loss(
    lm_losses: torch.Tensor, cosine: torch.Tensor, lm_temperature: float = 1e-3, retriever_temperature: float = 1e-3
) -> torch.Tensor:
    """mean_i KL(P_LM(.|i) || P_R(.|i)) from `(B, B)` pair losses loss_LM(i|j) and retriever cosines (diagonals ignored)."""
    lm_log = _off_diagonal_log_softmax(-lm_losses.to(cosine.device) / lm_temperature)
    retriever_log = _off_diagonal_log_softmax(cosine / retriever_temperature)
    return kl_to_retriever(lm_log.to(retriever_log.dtype), retriever_log)
