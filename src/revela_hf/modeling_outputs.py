"""The output dataclasses of `RevelaForCausalLM.forward`, one per objective (as `transformers.modeling_outputs`).

They live apart from the model code so that the objectives, which `RevelaForCausalLM.forward`
dispatches to, import them without importing the model back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import ModelOutput


@dataclass
class RevelaOutput(ModelOutput):
    """loss: NTP loss of the in-batch pass; logits `(B, L, V)`; similarity: retriever cosine
    `(B, B)` (None when weights were given); inbatch_weights: the `(B, B)` weights used."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    similarity: torch.Tensor | None = None
    inbatch_weights: torch.Tensor | None = None


@dataclass
class ReplugOutput(RevelaOutput):
    """loss: mean_i KL(P_LM || P_R); similarity: retriever cosine `(B, B)`; inbatch_weights: P_R `(B, B)`;
    lm_distribution: P_LM `(B, B)`; pair_losses: loss_LM(i | j) `(B, B)` (+inf on the diagonal)."""

    lm_distribution: torch.Tensor | None = None
    pair_losses: torch.Tensor | None = None


@dataclass
class DreamOutput(RevelaOutput):
    """loss: NTP loss on the target tokens; logits: `(N, T+1, V)` of the last T+1 positions (T = the
    longest target); similarity: retriever cosine `(N, K)`; inbatch_weights: P(k | query) `(N, K)`
    (zero on padding candidates)."""

    candidate_bias: torch.Tensor | None = None  # (N, K) log(K * P), 0 on padding candidates
