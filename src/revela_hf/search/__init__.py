"""Search: encoder adapters, sharded faiss indexes, BM25 and the fusion of their rankings (hybrid).
Names are imported on first use, so `revela --help` reads the fusion names without loading faiss or torch."""

from revela_hf.lazy import lazy_exports

_EXPORTS = {
    "BM25Retriever": "revela_hf.search.bm25",
    "Encoder": "revela_hf.encoders",
    "as_encoder": "revela_hf.search.encoders",
    "center_held_out": "revela_hf.search.centering",
    "center_query_set": "revela_hf.search.centering",
    "load_encoder": "revela_hf.search.encoders",
    "DEFAULT_FUSION": "revela_hf.search.fusion",
    "FUSIONS": "revela_hf.search.fusion",
    "fuse": "revela_hf.search.fusion",
    "reciprocal_rank_fusion": "revela_hf.search.fusion",
    "score_fusion": "revela_hf.search.fusion",
    "z_score_fusion": "revela_hf.search.fusion",
    "Hit": "revela_hf.search.index",
    "IndexConfig": "revela_hf.search.index",
    "ShardedIndex": "revela_hf.search.index",
    "new_faiss_index": "revela_hf.search.index",
    "search_faiss": "revela_hf.search.index",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
