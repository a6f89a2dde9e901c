"""mteb integration: an encoder wrapper + ModelMeta for Revela retrievers, and a task for local BEIR folders.

Any mteb retrieval task works, e.g. BEIR (`"SciFact"`, `"NFCorpus"`, `"FiQA2018"`, ...), CoIR
(`"CodeSearchNetCCRetrieval"`, `"CosQA"`, `"StackOverflowQA"`, `"AppsRetrieval"`, ...) and BRIGHT
(`"BrightRetrieval"`):

    import mteb
    model = revela_model_meta("user/revela-135m").load_model()
    mteb.evaluate(model, tasks=mteb.get_tasks(tasks=["SciFact"]))
    mteb.evaluate(model, tasks=[beir_folder_task("path/to/beir_folder")])
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType
from safetensors import safe_open
from transformers import AutoModel

from revela_hf.evaluation.beir import load_beir
from revela_hf.io import MARKER


class RevelaMtebEncoder(AbsEncoder):
    """mteb encoder over a RevelaRetriever: query prefix for queries, passage prefix for documents."""

    def __init__(self, model_name: str, revision: str | None = None, path: str | None = None, retriever: Any = None, device: str | None = None, **kwargs: Any) -> None:
        from revela_hf.retriever import RevelaRetriever

        self.model = retriever if retriever is not None else RevelaRetriever.from_pretrained(path or model_name, revision=revision)
        if device is not None:
            self.model.to(device)

    def encode(self, inputs, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str, prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        prefix = self.model.query_prefix if prompt_type == PromptType.query else self.model.passage_prefix
        return self.model.encode(texts, prefix=prefix, batch_size=kwargs.get("batch_size", 32), show_progress_bar=False).numpy()


UNHASHED_FILES = frozenset({"README.md", "revela_card.json", MARKER})  # files that do not change the embeddings


def folder_metadata(folder: Path) -> dict[str, Any]:
    """`embed_dim`, `n_parameters`, `max_tokens` and `revision` of a retriever folder, read from its files without
    loading weights: the backbone is built on the meta device from its config, an adapter's tensors are counted in
    its safetensors header. `revision` is the commit of a Hub snapshot (its folder's name), else `sha256:` + the
    first 16 hex digits of a hash of every file but the model card and the completion marker."""
    from revela_hf.pooling import pooled_width
    from revela_hf.retriever import ADAPTER_WEIGHTS, DEFAULT_MAX_LENGTH, backbone_config, saved_settings

    settings = saved_settings(folder, {})
    config = backbone_config(folder, settings)
    with torch.device("meta"):
        n_parameters = sum(p.numel() for p in AutoModel.from_config(config).parameters())
    if (folder / ADAPTER_WEIGHTS).is_file():
        with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as adapter:
            n_parameters += sum(math.prod(adapter.get_slice(name).get_shape()) for name in adapter.keys())
    return {
        "embed_dim": pooled_width(settings.get("pooling", "eos"), config.hidden_size),
        "n_parameters": n_parameters,
        "max_tokens": settings.get("max_length", DEFAULT_MAX_LENGTH),
        "revision": folder.name if folder.parent.name == "snapshots" else _content_hash(folder),
    }


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in UNHASHED_FILES):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def revela_model_meta(name_or_path: str, revision: str | None = None) -> ModelMeta:
    """ModelMeta whose `load_model()` returns a `RevelaMtebEncoder` for a Revela folder or Hub repo, with the
    embedding size, parameter count, token limit and revision of `folder_metadata` (a Hub repo is downloaded
    here; `load_model` reuses the snapshot)."""
    from revela_hf.hub import resolve_model_dir

    metadata = folder_metadata(resolve_model_dir(name_or_path, revision=revision))
    return ModelMeta(
        loader=RevelaMtebEncoder,
        name=name_or_path if "/" in name_or_path and not Path(name_or_path).exists() else f"local/{Path(name_or_path).name}",
        release_date=None,
        languages=["eng-Latn"],
        memory_usage_mb=None,
        **metadata,
        license=None,
        open_weights=True,
        public_training_code="https://github.com/revela-hf/revela-hf",
        public_training_data=None,
        framework=["PyTorch"],
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=set(),
        loader_kwargs={"path": name_or_path},
    )


class _BeirFolderTask(AbsTaskRetrieval):
    """Retrieval task reading `data_dir` (set, with `metadata`, by `beir_folder_task`)."""

    data_dir: Path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        split = self.metadata.eval_splits[0]
        data = load_beir(self.data_dir, split=split)
        corpus = Dataset.from_list([{"id": i, "title": d["title"], "text": d["text"]} for i, d in data.corpus.items()])
        queries = Dataset.from_list([{"id": i, "text": t} for i, t in data.queries.items()])
        self.dataset = {"default": {split: {"corpus": corpus, "queries": queries, "relevant_docs": data.qrels, "top_ranked": None}}}
        self.data_loaded = True


def beir_folder_task(data_dir: str | Path, name: str | None = None, split: str = "test") -> AbsTaskRetrieval:
    """An mteb retrieval task over a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""
    folder = Path(data_dir)
    metadata = TaskMetadata(
        name=name or folder.name,
        dataset={"path": str(folder), "revision": "local"},
        description=f"Local BEIR folder {folder}",
        reference=None,
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )
    task_class = type(f"BeirFolder_{metadata.name}", (_BeirFolderTask,), {"metadata": metadata, "data_dir": folder})
    return task_class()
