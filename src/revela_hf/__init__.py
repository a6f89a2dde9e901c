"""revela-hf: dense retrievers trained from raw text by language modeling.

The package imports lazily (like trl): `import revela_hf` loads neither torch nor transformers, so
`revela --help` is instant. The first use of any name below imports the model code, checks the
installed versions of the stack, and registers model_type `revela` with `AutoConfig`, `AutoModel`
and `AutoModelForCausalLM` (importing `revela_hf.modeling_revela` does the same).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from revela_hf.dependency_versions import check_versions
from revela_hf.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ATTN_IMPLEMENTATION": "revela_hf.attention",
    "InBatchContext": "revela_hf.attention",
    "enable_inbatch_attention": "revela_hf.attention",
    "RevelaConfig": "revela_hf.configuration_revela",
    "RevelaForCausalLM": "revela_hf.modeling_revela",
    "RevelaOutput": "revela_hf.modeling_outputs",
    "inbatch_attention": "revela_hf.ops",
    "inbatch_similarity": "revela_hf.ops",
    "similarity_weights": "revela_hf.ops",
    "RevelaRetriever": "revela_hf.retriever",
    "RetrievalEvaluator": "revela_hf.evaluation.evaluator",
    "RevelaTrainer": "revela_hf.trainer",
    "RevelaTrainingArguments": "revela_hf.trainer",
    "RevelaDataCollator": "revela_hf.collator",
    "DreamDataCollator": "revela_hf.collator",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from revela_hf.attention import ATTN_IMPLEMENTATION, InBatchContext, enable_inbatch_attention
    from revela_hf.collator import DreamDataCollator, RevelaDataCollator
    from revela_hf.configuration_revela import RevelaConfig
    from revela_hf.evaluation.evaluator import RetrievalEvaluator
    from revela_hf.modeling_outputs import RevelaOutput
    from revela_hf.modeling_revela import RevelaForCausalLM
    from revela_hf.ops import inbatch_attention, inbatch_similarity, similarity_weights
    from revela_hf.retriever import RevelaRetriever
    from revela_hf.trainer import RevelaTrainer, RevelaTrainingArguments


def _prepare_model_api() -> None:
    check_versions()
    importlib.import_module("revela_hf.modeling_revela")  # registers the Auto classes


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, _prepare_model_api)
