"""Batched no-grad scoring of "how well does the frozen LM predict the end of a sequence".

Shared by REPLUG (loss of chunk i after chunk j, for every pair) and by DREAM's retrieval-head
selection (loss of the target after one candidate). Sequences of different lengths are LEFT-padded
into batches so every row's target ends at the last position: one forward per batch keeps only the
last `max_target + 1` logits (`logits_to_keep`), never the `(P, 2L, V)` tensor of all positions.
Position ids count real tokens only, so a padded row scores exactly like the row alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel


def mask_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids `(N, L)` that count the real tokens of each `(N, L)` mask row: 0 at its first real token (and on the padding before it)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def left_pad(sequences: Sequence[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad 1-D token tensors into `(P, W)` ids, mask and position ids (0 at each row's first real token)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=sequences[0].device)
    mask = torch.zeros((len(sequences), width), dtype=torch.long, device=sequences[0].device)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = seq
            mask[row, width - len(seq) :] = 1
    return ids, mask, mask_positions(mask)


def target_token_losses(logits: torch.Tensor, ids: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Per-row mean NTP loss on the last `target_lengths[p]` tokens of left-padded rows.

    logits: `(P, T+1, V)`, the logits of the last T+1 positions (T = max target length);
    ids: `(P, W)` left-padded tokens; returns `(P,)` in float32.
    """
    width = logits.shape[1] - 1
    targets = ids[:, ids.shape[1] - width :]  # (P, T) the last T tokens, predicted by logits[:, :-1]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")  # (P, T)
    keep = torch.arange(width, device=ids.device)[None, :] >= (width - target_lengths)[:, None]
    return (nll * keep).sum(-1) / target_lengths.clamp(min=1).to(nll.dtype)


@torch.no_grad()
def sequence_target_losses(
    lm: PreTrainedModel,
    sequences: Sequence[torch.Tensor],
    target_lengths: Sequence[int],
    batch_size: int = 16,
    pad_id: int = 0,
) -> torch.Tensor:
    """Mean NTP loss of the LM on the last `target_lengths[p]` tokens of each 1-D sequence, `(P,)` float32.

    Runs the LM in eval mode under no_grad, `batch_size` sequences per forward (sorted by length
    to waste little padding). Every target must leave at least one token before it.
    """
    if len(sequences) != len(target_lengths):
        raise ValueError(f"{len(sequences)} sequences but {len(target_lengths)} target lengths")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for seq, n in zip(sequences, target_lengths):
        if not 1 <= n < len(seq):
            raise ValueError(f"a target of {n} tokens needs 1 <= n < sequence length ({len(seq)})")
    was_training = lm.training
    lm.eval()
    losses = torch.empty(len(sequences), dtype=torch.float32)
    order = sorted(range(len(sequences)), key=lambda p: len(sequences[p]))
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask, positions = left_pad([sequences[p] for p in rows], pad_id)
            lengths = torch.tensor([target_lengths[p] for p in rows], device=ids.device)
            keep = int(lengths.max()) + 1
            logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
            losses[rows] = target_token_losses(logits, ids, lengths).cpu()
    finally:
        lm.train(was_training)
    return losses
