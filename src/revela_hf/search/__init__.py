"""Search: encoder adapters, sharded faiss indexes, BM25 and reciprocal-rank fusion (hybrid)."""

from revela_hf.search.bm25 import BM25Retriever
from revela_hf.encoders import Encoder
from revela_hf.search.encoders import as_encoder, load_encoder
from revela_hf.search.fusion import reciprocal_rank_fusion
from revela_hf.search.index import Hit, IndexConfig, ShardedIndex, new_faiss_index, search_faiss

__all__ = [
    "BM25Retriever", "Encoder", "Hit", "IndexConfig", "ShardedIndex", "as_encoder", "load_encoder", "new_faiss_index",
    "reciprocal_rank_fusion", "search_faiss",
]
