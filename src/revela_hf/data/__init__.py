"""From raw text to training groups: reading, sentence-aware chunking, grouping, re-grouping."""

from revela_hf.data.chunking import Chunker
from revela_hf.data.encoders import HashingEncoder, SentenceTransformerEncoder
from revela_hf.data.grouping import STRATEGIES, Grouping, group_chunks
from revela_hf.data.prepare import PrepareSummary, prepare
from revela_hf.data.readers import Document, DocumentReader, InputSpec
from revela_hf.data.regroup import GroupDataset, RegroupCallback, embedding_groups
from revela_hf.data.sentences import split_sentences

__all__ = [
    "Chunker", "Document", "DocumentReader", "GroupDataset", "Grouping", "HashingEncoder", "InputSpec",
    "PrepareSummary", "RegroupCallback", "STRATEGIES", "SentenceTransformerEncoder", "embedding_groups",
    "group_chunks", "prepare", "split_sentences",
]
