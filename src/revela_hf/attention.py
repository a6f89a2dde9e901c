"""In-batch attention hooked into stock transformers through its attention interface.

`ATTN_IMPLEMENTATION` ("revela", over SDPA) and `EAGER_ATTN_IMPLEMENTATION` ("revela_eager", over
the model's own eager attention, for families such as Gemma2 whose softcapping SDPA cannot do) are
registered with `AttentionInterface` and `AttentionMaskInterface`. Each runs the normal attention and, when the model's forward
receives `revela_context=InBatchContext(...)`, either records the layer's key/value
("record", the clean e-stream pass) or adds the similarity-weighted in-batch term computed
against the recorded key/value ("inject", the h-stream pass). Without a context it is plain SDPA,
so `generate()` and ordinary forwards are unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from revela_hf.ops import inbatch_attention

ATTN_IMPLEMENTATION = "revela"
EAGER_ATTN_IMPLEMENTATION = "revela_eager"


@dataclass
class InBatchContext:
    """What the attention layers of one forward pass should do with the in-batch term.

    mode: "record" stores each selected layer's (key, value); "inject" adds
    `inbatch_attention(query, recorded key, recorded value, weights)` to the layer output.
    layers: decoder layer indices that take part (None = all).
    """

    mode: Literal["record", "inject"]
    layers: frozenset[int] | None = None
    weights: torch.Tensor | None = None  # (B, B)
    key_padding_mask: torch.Tensor | None = None  # (B, L) bool, True = real token
    v_norm: bool = True
    detach_kv: bool = False
    top_k: int | None = None  # sparse in-batch attention: the k largest weights per row (None = exact)
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def selects(self, layer_idx: int) -> bool:
        return self.layers is None or layer_idx in self.layers


def base_attention(module: nn.Module, eager: bool) -> Callable:
    """The attention that the in-batch term is added to: transformers' SDPA, or with `eager` the
    `eager_attention_forward` of the attention module's modeling file (found along its class's bases, so a
    subclass defined in another file uses its family's)."""
    if not eager:
        return sdpa_attention_forward
    for cls in type(module).__mro__:
        function = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if function is not None:
            return function
    raise ValueError(
        f"{type(module).__name__} has no eager_attention_forward in its modeling file (nor do its bases): "
        f"use the {ATTN_IMPLEMENTATION!r} attention, over SDPA"
    )


def revela_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    revela_context: InBatchContext | None = None,
    *,
    eager: bool = False,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """query `(B, H, L, D)`, key/value `(B, Hkv, L, D)` after rotary; returns `(B, L, H, D)` like SDPA."""
    out, attn_weights = base_attention(module, eager)(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    if revela_context is None or not revela_context.selects(module.layer_idx):
        return out, attn_weights
    if revela_context.mode == "record":
        if revela_context.detach_kv:
            key, value = key.detach(), value.detach()
        revela_context.kv[module.layer_idx] = (key, value)
        return out, attn_weights
    if module.layer_idx not in revela_context.kv:
        raise RuntimeError(f"no clean-pass key/value was recorded for layer {module.layer_idx}")
    clean_key, clean_value = revela_context.kv[module.layer_idx]
    extra = inbatch_attention(
        query,
        clean_key,
        clean_value,
        revela_context.weights.to(query.dtype),
        revela_context.key_padding_mask,
        v_norm=revela_context.v_norm,
        scaling=scaling,
        top_k=revela_context.top_k,
    )  # (B, H, L, D)
    return out + extra.transpose(1, 2).to(out.dtype), attn_weights


def enable_inbatch_attention(model: PreTrainedModel) -> None:
    """Switch a transformers decoder to the revela attention (its normal attention + optional in-batch term)."""
    if not model._can_set_attn_implementation():
        raise ValueError(
            f"{type(model).__name__} does not dispatch its attention through transformers' AttentionInterface, "
            "so in-batch attention cannot be attached; use a decoder family that does (Llama, Qwen2/3, Mistral, Gemma2/3, ...)"
        )
    model.set_attn_implementation(ATTN_IMPLEMENTATION if model._supports_sdpa else EAGER_ATTN_IMPLEMENTATION)


AttentionInterface.register(ATTN_IMPLEMENTATION, revela_attention_forward)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
AttentionInterface.register(EAGER_ATTN_IMPLEMENTATION, partial(revela_attention_forward, eager=True))
AttentionMaskInterface.register(EAGER_ATTN_IMPLEMENTATION, eager_mask)
