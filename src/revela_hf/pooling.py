"""How a retriever turns `(N, L, E)` hidden states into one embedding per text."""

from __future__ import annotations

import torch

# pooling -> the vectors it puts side by side ("eos" is the last real token's state with EOS appended to the text)
POOLED_PARTS = {"eos": ("eos",), "last": ("last",), "mean": ("mean",), "cls": ("cls",), "mean+eos": ("mean", "eos")}
POOLINGS = tuple(POOLED_PARTS)


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


def pooling_appends_eos(pooling: str) -> bool:
    """Whether texts end with an appended EOS token for `pooling` (its final state is, or is part of, the embedding)."""
    return "eos" in POOLED_PARTS[check_pooling(pooling)]


def pooled_width(pooling: str, hidden_size: int) -> int:
    """The width of the embeddings `pool` gives from hidden states of `hidden_size`."""
    return len(POOLED_PARTS[check_pooling(pooling)]) * hidden_size


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool `(N, L, E)` hidden states into `(N, E)` (`(N, 2E)` for "mean+eos").

    "eos"/"last" take the last real token (works with left or right padding), "mean" averages
    the real tokens, "cls" takes position 0, "mean+eos" concatenates the mean and the last (EOS) token's state,
    in sentence-transformers' order when a `Pooling` module has both modes.
    """
    parts = POOLED_PARTS[check_pooling(pooling)]
    if len(parts) > 1:
        return torch.cat([pool(hidden, attention_mask, part) for part in parts], dim=-1)
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (N, L, 1)
    if pooling == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.bool() * positions).argmax(dim=1)  # (N,) index of the last real token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
