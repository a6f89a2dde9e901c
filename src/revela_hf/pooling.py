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


def require_mean_part(pooling: str, what: str) -> None:
    """Refuse `what` (a setting that weighs or re-reads the mean-pooled part) for a pooling without a mean part."""
    if "mean" not in POOLED_PARTS[check_pooling(pooling)]:
        raise ValueError(f"{what} the mean-pooled part, and {pooling!r} pooling has none; use mean or mean+eos")


def pooling_appends_eos(pooling: str) -> bool:
    """Whether texts end with an appended EOS token for `pooling` (its final state is, or is part of, the embedding)."""
    return "eos" in POOLED_PARTS[check_pooling(pooling)]


def pooled_width(pooling: str, hidden_size: int) -> int:
    """The width of the embeddings `pool` gives from hidden states of `hidden_size`."""
    return len(POOLED_PARTS[check_pooling(pooling)]) * hidden_size


def pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
    mean_hidden: torch.Tensor | None = None, mean_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool `(N, L, E)` hidden states into `(N, E)` (`(N, 2E)` for "mean+eos").

    "eos"/"last" take the last real token (works with left or right padding), "mean" averages
    the real tokens, "cls" takes position 0, "mean+eos" concatenates the mean and the last (EOS) token's state,
    in sentence-transformers' order when a `Pooling` module has both modes. The mean part averages `mean_hidden`
    `(N, L, E)` where given (other states of the same tokens, e.g. the base model's) and weights the real tokens by
    `mean_weights` `(N, L)` where given (e.g. `revela_hf.token_weights`; zero on padding).
    """
    parts = POOLED_PARTS[check_pooling(pooling)]
    if len(parts) > 1:
        return torch.cat([pool(hidden, attention_mask, part, mean_hidden, mean_weights) for part in parts], dim=-1)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        states = hidden if mean_hidden is None else mean_hidden
        weights = (attention_mask if mean_weights is None else mean_weights).to(states.dtype).unsqueeze(-1)  # (N, L, 1)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.bool() * positions).argmax(dim=1)  # (N,) index of the last real token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
