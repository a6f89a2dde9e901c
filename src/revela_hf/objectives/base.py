"""What the objectives beyond Revela share: the base of their settings, and the frozen-LM check."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig


@dataclass(frozen=True)
class ObjectiveSettings:
    """Base of an objective's settings dataclass (the class its registry entry names in `settings`).

    `RevelaConfig.objective_settings` holds the configured objective's settings as a dict (what `config.json`
    stores); `RevelaConfig.resolved_objective_settings()` turns it into this class, whose `__post_init__` checks
    the values on their own and whose `check` checks them against the LM. A field with `metadata={"card": False}`
    (an efficiency setting that does not change what is learned) is left out of the model card.
    """

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ObjectiveSettings:
        """The settings from `values` (defaults for the fields it leaves out); a ValueError names unknown keys."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{cls.__name__} has no setting {unknown}; its settings are {known}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every setting by field name, as `RevelaConfig.objective_settings` stores them."""
        return asdict(self)

    def card_values(self) -> dict[str, Any]:
        """The settings a model card records: every field but those marked `card=False`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("card", True)}

    def check(self, lm_config: PreTrainedConfig) -> None:
        """Raise a ValueError where the settings do not fit the LM of `lm_config` (nothing to check by default)."""


def check_positive(name: str, value: float) -> None:
    """A ValueError unless `value` (the setting `name`) is a positive number."""
    if isinstance(value, bool) or not isinstance(value, Real) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def require_frozen_lm(model: nn.Module) -> None:
    """DREAM and REPLUG train the retriever only: refuse a forward with gradients through an LM with trainable
    weights (without gradients, e.g. a reloaded model under `torch.no_grad()`, nothing can train)."""
    if not torch.is_grad_enabled() or model.lm_is_frozen:
        return
    trainable = [name for name, p in model.lm.named_parameters() if p.requires_grad]  # for the message
    raise ValueError(
        f"objective={model.config.objective!r} keeps the LM frozen and trains only the retriever, but {len(trainable)} LM "
        f"parameters are trainable (e.g. {trainable[0]}); freeze it first: model.lm.requires_grad_(False)"
    )
