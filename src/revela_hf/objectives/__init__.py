"""Training objectives on the same `RevelaForCausalLM`, named in one registry (`registry.OBJECTIVES`).

- `"revela"`: the model's own in-batch pass (`modeling_revela.py`).
- `"replug"` (`replug.py`): KL(P_LM || P_retriever) over the other chunks of a group, P_LM from the
  frozen LM's loss on chunk i after chunk j. Rows: `{"chunks": [...]}` (`RevelaDataCollator`).
- `"dream"` (`dream.py`): the retriever's scores bias selected attention heads of the frozen LM
  towards candidates; NTP loss on the target. Rows: `{"query", "target", "candidates"}`
  (`DreamDataCollator`; `data.py` builds them from raw-text groups or (query, answer) pairs).

Each registry entry names its forward, collator, row builder, settings class (`ReplugSettings`,
`DreamSettings`: `RevelaConfig.objective_settings`) and model-card fields; `dispatch.py`
serves the configured one to the model and the trainer. Names are imported on first use, so the
registry stays importable without torch.
"""

from revela_hf.lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_OBJECTIVE": "revela_hf.objectives.registry",
    "OBJECTIVES": "revela_hf.objectives.registry",
    "Objective": "revela_hf.objectives.registry",
    "get_objective": "revela_hf.objectives.registry",
    "ObjectiveSettings": "revela_hf.objectives.base",
    "card_info": "revela_hf.objectives.dispatch",
    "data_collator_for": "revela_hf.objectives.dispatch",
    "training_hyperparameters": "revela_hf.objectives.dispatch",
    "dream_rows_from_groups": "revela_hf.objectives.data",
    "dream_rows_from_pairs": "revela_hf.objectives.data",
    "DREAM_ATTN_IMPLEMENTATION": "revela_hf.objectives.dream",
    "DREAM_EAGER_ATTN_IMPLEMENTATION": "revela_hf.objectives.dream",
    "DreamContext": "revela_hf.objectives.dream",
    "DreamOutput": "revela_hf.objectives.dream",
    "DreamSettings": "revela_hf.objectives.dream",
    "RetrievalHeads": "revela_hf.objectives.dream",
    "dream_forward": "revela_hf.objectives.dream",
    "select_retrieval_heads": "revela_hf.objectives.dream",
    "use_dream_attention": "revela_hf.objectives.dream",
    "ReplugOutput": "revela_hf.objectives.replug",
    "ReplugSettings": "revela_hf.objectives.replug",
    "pair_lm_losses": "revela_hf.objectives.replug",
    "replug_forward": "revela_hf.objectives.replug",
    "replug_loss": "revela_hf.objectives.replug",
    "sequence_target_losses": "revela_hf.objectives.scoring",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
