"""Training objectives beyond Revela, on the same `RevelaForCausalLM` (frozen LM, trained retriever).

- `objective="replug"` (`replug.py`): KL(P_LM || P_retriever) over the other chunks of a group,
  P_LM from the frozen LM's loss on chunk i after chunk j. Rows: `{"chunks": [...]}`
  (`RevelaDataCollator`).
- `objective="dream"` (`dream.py`): the retriever's scores bias selected attention heads of the
  frozen LM towards candidates; NTP loss on the target. Rows: `{"query", "target", "candidates"}`
  (`DreamDataCollator`; `data.py` builds them from raw-text groups or (query, answer) pairs).

`RevelaForCausalLM.forward` routes to `objective_forward` when the config's objective is not
"revela" and retriever inputs (or weights) are given.
"""

from __future__ import annotations

from typing import Any

from revela_hf.objectives.data import dream_rows_from_groups, dream_rows_from_pairs
from revela_hf.objectives.dream import (
    DREAM_ATTN_IMPLEMENTATION,
    DREAM_EAGER_ATTN_IMPLEMENTATION,
    DreamContext,
    DreamOutput,
    RetrievalHeads,
    dream_forward,
    resolve_dream_heads,
    select_retrieval_heads,
    use_dream_attention,
)
from revela_hf.objectives.replug import ReplugOutput, pair_lm_losses, replug_forward, replug_loss
from revela_hf.objectives.scoring import sequence_target_losses

OBJECTIVE_FORWARDS = {"replug": replug_forward, "dream": dream_forward}


def objective_forward(model, **inputs: Any):
    """Run `model.config.objective`'s loss on one batch (the inputs of `RevelaForCausalLM.forward`)."""
    objective = model.config.objective
    if objective not in OBJECTIVE_FORWARDS:
        raise ValueError(f"no objective forward for {objective!r}; choose one of {', '.join(OBJECTIVE_FORWARDS)}")
    return OBJECTIVE_FORWARDS[objective](model, **inputs)


def data_collator_for(config, tokenizer, retriever_tokenizer=None, **kwargs: Any):
    """The collator of `config.objective`: `DreamDataCollator` for "dream", `RevelaDataCollator` otherwise.

    `RevelaTrainer` builds it when no `data_collator` is given.
    """
    from revela_hf.collator import DreamDataCollator, RevelaDataCollator

    cls = DreamDataCollator if config.objective == "dream" else RevelaDataCollator
    return cls.from_model_config(tokenizer, retriever_tokenizer, config, **kwargs)


def training_hyperparameters(config) -> dict[str, Any]:
    """The settings worth a line in a retriever's model card (`CardInfo(hyperparameters=...)`)."""
    objective = config.objective
    out: dict[str, Any] = {"objective": objective}
    if objective == "revela":
        out.update(temperature=config.temperature, inbatch_layers=config.inbatch_layers, freeze_lm=config.freeze_lm)
    elif objective == "replug":
        out.update(
            replug_retriever_temperature=config.replug_retriever_temperature,
            replug_lm_temperature=config.replug_lm_temperature,
            replug_target=config.replug_target,
        )
    else:
        out.update(dream_temperature=config.dream_temperature, dream_layers=config.dream_layers, dream_heads=config.dream_heads)
    return out


def card_info(config, **kwargs: Any):
    """A `CardInfo` whose hyper-parameters record the objective and its settings."""
    from revela_hf.model_card import CardInfo

    hyperparameters = {**training_hyperparameters(config), **kwargs.pop("hyperparameters", {})}
    return CardInfo(hyperparameters=hyperparameters, **kwargs)


__all__ = [
    "DREAM_ATTN_IMPLEMENTATION",
    "DREAM_EAGER_ATTN_IMPLEMENTATION",
    "OBJECTIVE_FORWARDS",
    "DreamContext",
    "DreamOutput",
    "ReplugOutput",
    "RetrievalHeads",
    "card_info",
    "data_collator_for",
    "dream_forward",
    "dream_rows_from_groups",
    "dream_rows_from_pairs",
    "objective_forward",
    "pair_lm_losses",
    "replug_forward",
    "replug_loss",
    "resolve_dream_heads",
    "select_retrieval_heads",
    "sequence_target_losses",
    "training_hyperparameters",
    "use_dream_attention",
]
