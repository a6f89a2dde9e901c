"""revela-hf: dense retrievers trained from raw text by language modeling."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from revela_hf.attention import ATTN_IMPLEMENTATION, InBatchContext, enable_inbatch_attention
from revela_hf.configuration_revela import RevelaConfig
from revela_hf.modeling_revela import RevelaForCausalLM, RevelaOutput
from revela_hf.ops import inbatch_attention, inbatch_similarity, similarity_weights
from revela_hf.retriever import RevelaRetriever

AutoConfig.register("revela", RevelaConfig)
AutoModel.register(RevelaConfig, RevelaForCausalLM)
AutoModelForCausalLM.register(RevelaConfig, RevelaForCausalLM)

__all__ = [
    "ATTN_IMPLEMENTATION",
    "InBatchContext",
    "RevelaConfig",
    "RevelaForCausalLM",
    "RevelaOutput",
    "RevelaRetriever",
    "enable_inbatch_attention",
    "inbatch_attention",
    "inbatch_similarity",
    "similarity_weights",
]
