"""From raw text to training groups: reading, sentence-aware chunking, grouping (re-grouping during
training lives in `revela_hf.data.regroup`). Names are imported on first use."""

from revela_hf.lazy import lazy_exports

_EXPORTS = {
    "Chunker": "revela_hf.data.chunking",
    "HashingEncoder": "revela_hf.data.encoders",
    "SentenceTransformerEncoder": "revela_hf.encoders",
    "STRATEGIES": "revela_hf.data.grouping",
    "Grouping": "revela_hf.data.grouping",
    "group_chunks": "revela_hf.data.grouping",
    "PrepareSummary": "revela_hf.data.prepare",
    "prepare": "revela_hf.data.prepare",
    "DatasetInput": "revela_hf.data.readers",
    "Document": "revela_hf.data.readers",
    "DocumentReader": "revela_hf.data.readers",
    "InputSpec": "revela_hf.data.readers",
    "load_dataset_input": "revela_hf.data.readers",
    "split_sentences": "revela_hf.data.sentences",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
