"""The training objectives by name: the one place that spells them and says what each brings.

Plain data with import paths instead of imports, so the configuration, the recipes and the command
line can name and validate objectives without loading torch or the objectives' modules (an objective's
module is imported when its forward, row builder or settings are first needed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from revela_hf.objectives.base import ObjectiveSettings


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
        settings (`str` or `None`): `"module:Class"` of its settings, an `ObjectiveSettings` dataclass that
            `RevelaConfig.objective_settings` holds as a dict; None = it has none beyond `RevelaConfig`'s fields.
        card_fields (`tuple[str, ...]`, defaults to `()`): the `RevelaConfig` fields a model card records for it
            (the card records its settings too: `ObjectiveSettings.card_values`).
        layers_field (`str` or `None`, defaults to `None`): the field of its settings that names the LM layers its
            retriever term enters (None: it uses `inbatch_layers`, or no layers at all).
    """

    name: str
    label: str
    forward: str | None
    collator: str
    rows_from_groups: str | None
    settings: str | None
    card_fields: tuple[str, ...] = ()
    layers_field: str | None = None

    def load_forward(self) -> Callable[..., Any] | None:
        """Its forward function, imported now (None for the model's own in-batch pass)."""
        return _load(self.forward) if self.forward else None

    def load_rows_from_groups(self) -> Callable[..., Any] | None:
        """Its row builder, imported now (None when it trains on the groups as they are)."""
        return _load(self.rows_from_groups) if self.rows_from_groups else None

    def load_settings(self) -> type[ObjectiveSettings] | None:
        """Its settings class, imported now (None when it has none)."""
        return _load(self.settings) if self.settings else None

    def config_kwargs(self, layers: list[int] | None) -> dict[str, Any]:
        """`RevelaConfig` keyword arguments that select this objective with its retriever term in the LM `layers`
        (None = all): Revela's in-batch attention takes them from `inbatch_layers`, DREAM's biased heads from its
        settings' `layers`, REPLUG scores whole sequences."""
        return {"objective": self.name, **({"objective_settings": {self.layers_field: layers}} if self.layers_field else {})}

    def flat_name(self, setting: str) -> str:
        """`<objective>_<setting>`: how a model card names one of its settings, and how configurations written
        before `RevelaConfig.objective_settings` spelled it (e.g. `dream_layers`)."""
        return f"{self.name}_{setting}"

    def pop_flat_settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Remove its settings spelled flat (`flat_name`) from `kwargs` and return them by setting name: what a
        `config.json` written before `objective_settings` holds (every objective's, whichever was configured)."""
        if self.settings is None or not any(key.startswith(self.flat_name("")) for key in kwargs):
            return {}
        names = {self.flat_name(f.name): f.name for f in fields(self.load_settings())}
        return {names[key]: kwargs.pop(key) for key in list(kwargs) if key in names}


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
            settings=None,
            card_fields=("temperature", "inbatch_layers"),
        ),
        Objective(
            name="replug",
            label="REPLUG",
            forward="revela_hf.objectives.replug:replug_forward",
            collator="RevelaDataCollator",
            rows_from_groups=None,
            settings="revela_hf.objectives.replug:ReplugSettings",
        ),
        Objective(
            name="dream",
            label="DREAM",
            forward="revela_hf.objectives.dream:dream_forward",
            collator="DreamDataCollator",
            rows_from_groups="revela_hf.objectives.data:dream_rows_from_groups",
            settings="revela_hf.objectives.dream:DreamSettings",
            layers_field="layers",
        ),
    )
}
DEFAULT_OBJECTIVE = "revela"


def get_objective(name: str) -> Objective:
    """The registered objective called `name`; a clear error naming the choices otherwise."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
