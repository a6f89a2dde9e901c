"""What the model and the trainer take from the configured objective's registry entry."""

from __future__ import annotations

from typing import Any

from revela_hf.objectives.registry import get_objective


def data_collator_for(config, tokenizer, retriever_tokenizer=None, **kwargs: Any):
    """The collator of `config.objective` (its registry entry's class in `revela_hf.collator`), with the
    config's retriever settings. `RevelaTrainer` builds it when no `data_collator` is given."""
    from revela_hf import collator

    cls = getattr(collator, get_objective(config.objective).collator)
    return cls.from_model_config(tokenizer, retriever_tokenizer, config, **kwargs)


def training_hyperparameters(config) -> dict[str, Any]:
    """The settings worth a line in a retriever's model card: the objective, its registry `card_fields` and its
    settings' `card_values` (named `flat_name`, e.g. `dream_layers`)."""
    objective = get_objective(config.objective)
    settings = config.resolved_objective_settings()
    return {
        "objective": objective.name,
        **{field: getattr(config, field) for field in objective.card_fields},
        **{objective.flat_name(name): value for name, value in (settings.card_values() if settings else {}).items()},
    }


def card_info(config, **kwargs: Any):
    """A `CardInfo` whose hyper-parameters record the objective and its settings."""
    from revela_hf.model_card import CardInfo

    hyperparameters = {**training_hyperparameters(config), **kwargs.pop("hyperparameters", {})}
    return CardInfo(hyperparameters=hyperparameters, **kwargs)
