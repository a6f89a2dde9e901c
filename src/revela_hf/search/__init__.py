"""Search: encoder adapters, sharded faiss indexes, BM25 and the fusion of their rankings (hybrid)."""

from revela_hf.search.bm25 import BM25Retriever
from revela_hf.encoders import Encoder
from revela_hf.search.encoders import as_encoder, load_encoder
from revela_hf.search.fusion import DEFAULT_FUSION, FUSIONS, fuse, reciprocal_rank_fusion, score_fusion
from revela_hf.search.index import Hit, IndexConfig, ShardedIndex, new_faiss_index, search_faiss

__all__ = [
    "DEFAULT_FUSION", "FUSIONS", "BM25Retriever", "Encoder", "Hit", "IndexConfig", "ShardedIndex", "as_encoder", "fuse",
    "load_encoder", "new_faiss_index", "reciprocal_rank_fusion", "score_fusion", "search_faiss",
]
