"""What the objectives beyond Revela share."""

from __future__ import annotations

from torch import nn


def require_frozen_lm(model: nn.Module) -> None:
    """DREAM and REPLUG train the retriever only: refuse an LM with trainable weights."""
    trainable = [name for name, p in model.lm.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(
            f"objective={model.config.objective!r} keeps the LM frozen and trains only the retriever, but {len(trainable)} LM "
            f"parameters are trainable (e.g. {trainable[0]}); build the model with freeze_lm=True"
        )
