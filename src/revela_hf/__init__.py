"""revela-hf: dense retrievers trained from raw text by language modeling."""

from revela_hf.ops import inbatch_attention, inbatch_similarity

__all__ = ["inbatch_attention", "inbatch_similarity"]

