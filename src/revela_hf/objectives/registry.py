"""The training objectives by name: the one place that spells them and says what each brings.

Plain data with import paths instead of imports, so the configuration, the recipes and the command
line can name and validate objectives without loading torch or the objectives' modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Objective:
    """One training objective on `RevelaForCausalLM`.

    Args:
        name (`str`): the value of `RevelaConfig.objective`.
        label (`str`): its name in results tables.
        forward (`str` or `None`): `"module:function"` of its own forward `(model, **inputs) -> output`;
            None = the model's in-batch pass (Revela's).
        collator (`str`): the class in `revela_hf.collator` that turns its rows into model inputs.
        rows_from_groups (`str` or `None`): `"module:function"` `(groups, query_ratio) -> rows` building its
            training rows from prepared groups; None = it trains on the groups as they are.
        card_fields (`tuple[str, ...]`): the `RevelaConfig` fields a model card records for it.
        layers_field (`str` or `None`): the `RevelaConfig` field of its own that names the LM layers its
            retriever term enters (None: it uses `inbatch_layers`, or no layers at all).
    """

    name: str
    label: str
    forward: str | None
    collator: str
    rows_from_groups: str | None
    card_fields: tuple[str, ...]
    layers_field: str | None = None

    def load_forward(self) -> Callable[..., Any] | None:
        """Its forward function, imported now (None for the model's own in-batch pass)."""
        return _load(self.forward) if self.forward else None

    def load_rows_from_groups(self) -> Callable[..., Any] | None:
        """Its row builder, imported now (None when it trains on the groups as they are)."""
        return _load(self.rows_from_groups) if self.rows_from_groups else None

    def settings(self, layers: list[int] | None) -> dict[str, Any]:
        """`RevelaConfig` settings that select this objective with its retriever term in the LM `layers` (None = all):
        Revela's in-batch attention takes them from `inbatch_layers`, DREAM's biased heads from `dream_layers`,
        REPLUG scores whole sequences."""
        return {"objective": self.name, **({self.layers_field: layers} if self.layers_field else {})}


def _load(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective(
            name="revela",
            label="Revela",
            forward=None,
            collator="RevelaDataCollator",
            rows_from_groups=None,
            card_fields=("temperature", "inbatch_layers", "freeze_lm"),
        ),
        Objective(
            name="replug",
            label="REPLUG",
            forward="revela_hf.objectives.replug:replug_forward",
            collator="RevelaDataCollator",
            rows_from_groups=None,
            card_fields=("replug_retriever_temperature", "replug_lm_temperature", "replug_target"),
        ),
        Objective(
            name="dream",
            label="DREAM",
            forward="revela_hf.objectives.dream:dream_forward",
            collator="DreamDataCollator",
            rows_from_groups="revela_hf.objectives.data:dream_rows_from_groups",
            card_fields=("dream_temperature", "dream_layers", "dream_heads"),
            layers_field="dream_layers",
        ),
    )
}
DEFAULT_OBJECTIVE = "revela"


def get_objective(name: str) -> Objective:
    """The registered objective called `name`; a clear error naming the choices otherwise."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
