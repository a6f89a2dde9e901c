"""Dense search: encoder adapters and sharded faiss indexes."""

from revela_hf.search.encoders import Encoder, as_encoder, load_encoder
from revela_hf.search.index import Hit, IndexConfig, ShardedIndex, new_faiss_index, search_faiss

__all__ = ["Encoder", "Hit", "IndexConfig", "ShardedIndex", "as_encoder", "load_encoder", "new_faiss_index", "search_faiss"]
