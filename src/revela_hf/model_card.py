"""Model cards for published retrievers, rendered from `model_cards/revela_retriever.md`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from importlib import resources
from string import Template
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

TEMPLATE = "revela_retriever.md"
CARD_FILE = "revela_card.json"  # the CardInfo a retriever folder was saved with, so a re-save or push keeps it
METRIC_NAMES = {"ndcg@10": "ndcg_at_10", "mrr@10": "mrr_at_10", "recall@100": "recall_at_100"}


@dataclass
class CardInfo:
    """What the retriever itself does not know: how it was trained and how it scored.

    `training_data` are Hub dataset ids (the card's `datasets` metadata), `training_summary` says in words what
    the training rows held, `eval_results` maps a dataset name to metrics keyed like "ndcg@10" (fractions, not
    percent), `base_model` is the Hub id the card names as the base model (a local run keeps its loadable path in
    the adapter config; `push_to_hub` writes this id there), `framework_versions` the stack it trained with.
    """

    training_data: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    eval_results: dict[str, dict[str, float]] = field(default_factory=dict)
    license: str = "apache-2.0"
    language: list[str] = field(default_factory=lambda: ["en"])
    base_model: str | None = None
    training_summary: str = ""
    framework_versions: dict[str, str] = field(default_factory=dict)


def save_card_info(folder: Path, info: CardInfo) -> None:
    (folder / CARD_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")


def load_card_info(folder: Path) -> CardInfo | None:
    """The CardInfo saved in a retriever folder, or None if it records none."""
    path = folder / CARD_FILE
    return CardInfo(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


MAX_LISTED_SOURCES = 5  # a card lists this many training sources by name, and counts more


def framework_versions() -> dict[str, str]:
    """Python's, revela-hf's and its installed requirements' versions, as a card's "Framework versions" lists
    them (the requirements `revela env` reports, from `revela_hf.environment`)."""
    import platform

    from revela_hf import __version__
    from revela_hf.environment import package_versions

    found = package_versions(optional=False)
    return {"python": platform.python_version(), "revela-hf": __version__, **{k: v for k, v in found.items() if v}}


def dataset_summary(dataset: Any, batch_size: int = 10_000) -> str:
    """In words, what a training set of prepared groups (a `datasets.Dataset` with a `chunks` column, optionally
    `doc_ids` and `sources`) or of other rows holds: groups, chunks, documents and sources, as a card's training
    section says. Read in Arrow batches of `batch_size` rows, so a corpus larger than memory is fine. A dataset of
    unknown length (an `IterableDataset`, a streamed or generated one) is not read: "" (not recorded)."""
    import pyarrow.compute as pc
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        return f"{len(dataset):,} training rows" if hasattr(dataset, "__len__") else ""
    columns = set(dataset.column_names)
    if "chunks" not in columns:
        return f"{len(dataset):,} training rows"
    wanted = [c for c in ("chunks", "doc_ids", "sources") if c in columns]
    sizes: set[int] = set()
    chunks, documents, sources = 0, set(), set()
    for batch in dataset.select_columns(wanted).with_format("arrow").iter(batch_size=batch_size):
        lengths = pc.list_value_length(batch.column("chunks"))
        sizes.update(pc.unique(lengths).to_pylist())
        chunks += pc.sum(lengths).as_py() or 0
        if "doc_ids" in wanted:
            documents.update(pc.unique(pc.list_flatten(batch.column("doc_ids"))).to_pylist())
        if "sources" in wanted:
            sources.update(pc.unique(pc.list_flatten(batch.column("sources"))).to_pylist())
    size = f"{min(sizes)}" if len(sizes) == 1 else f"{min(sizes)}-{max(sizes)}"
    found = f"{chunks:,} chunks" + (f" from {len(documents):,} documents" if "doc_ids" in wanted else "")
    summary = f"{len(dataset):,} group{'s' if len(dataset) != 1 else ''} of {size} chunks ({found})"
    if len(sources) > MAX_LISTED_SOURCES:  # e.g. one source per file: name a few, count the rest
        named = sorted(sources)[:MAX_LISTED_SOURCES]
        return summary + f"; {len(sources):,} sources ({', '.join(named)}, ...)"
    return summary + (f"; sources: {', '.join(sorted(sources))}" if sources else "")


def _training_data(info: CardInfo) -> str:
    parts = [info.training_summary] if info.training_summary else []
    if info.training_data:
        parts.append("datasets: " + ", ".join(info.training_data))
    return "; ".join(parts) or "not recorded"


def _versions_list(versions: dict[str, str]) -> str:
    if not versions:
        return "Not recorded."
    return "\n".join(f"- {name}: {version}" for name, version in versions.items())


def _hyperparameter_table(hyperparameters: dict[str, Any]) -> str:
    if not hyperparameters:
        return "Hyper-parameters were not recorded."
    return "\n".join(["| hyper-parameter | value |", "|---|---|", *(f"| {k} | `{v}` |" for k, v in hyperparameters.items())])


def _evaluation_table(eval_results: dict[str, dict[str, float]]) -> str:
    if not eval_results:
        return "No evaluation results were recorded. Run `revela evaluate --retriever REPO --data BEIR_FOLDER`."
    metrics = sorted({m for scores in eval_results.values() for m in scores}, key=lambda m: (m.split("@")[0], int(m.split("@")[1])) if "@" in m else (m, 0))
    rows = [f"| {name} | " + " | ".join(f"{100 * scores[m]:.2f}" if m in scores else "-" for m in metrics) + " |" for name, scores in eval_results.items()]
    return "\n".join(["| dataset | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics), *rows, "", "Scores in percent."])


def _metadata(repo_id: str, base_model: str, is_adapter: bool, info: CardInfo) -> str:
    eval_results = [
        EvalResult(task_type="Retrieval", dataset_type=name, dataset_name=name, dataset_split="test", metric_type=METRIC_NAMES.get(metric, metric), metric_value=100 * value)
        for name, scores in info.eval_results.items()
        for metric, value in scores.items()
    ]
    data = ModelCardData(
        base_model=base_model,
        datasets=info.training_data or None,
        eval_results=eval_results or None,
        language=info.language,
        library_name="peft" if is_adapter else "sentence-transformers",
        license=info.license,
        model_name=repo_id,
        pipeline_tag="sentence-similarity",
        tags=["revela", "revela-hf", "sentence-transformers", "feature-extraction", "sentence-similarity", "retrieval", "mteb"] + (["peft", "lora"] if is_adapter else []),
    )
    return data.to_yaml()


def _pooling_snippet(settings: dict[str, Any]) -> str:
    if settings["pooling"] == "mean":
        lines = ["mask = batch['attention_mask'].unsqueeze(-1).float()", "embedding = (hidden * mask).sum(1) / mask.sum(1)"]
    elif settings["pooling"] == "cls":
        lines = ["embedding = hidden[:, 0]"]
    else:
        lines = ["embedding = hidden[:, -1]  # the tokenizer appends EOS; its state is the embedding"]
    if settings["normalize"]:
        lines.append("embedding = F.normalize(embedding, dim=-1)")
    return "\n".join(lines)


def render_model_card(
    repo_id: str,
    settings: dict[str, Any],
    base_model: str,
    embedding_dim: int,
    is_adapter: bool,
    info: CardInfo | None = None,
    base_config: dict[str, Any] | None = None,
) -> str:
    """The README.md of a published retriever: Hub/mteb metadata, settings, training, results, usage.

    `base_config`: the config values the base model loads with (`num_hidden_layers`), passed in the usage snippets."""
    info = info or CardInfo()
    base_kwargs = "".join(f", {key}={value!r}" for key, value in (base_config or {}).items())
    template = Template(resources.files("revela_hf").joinpath("model_cards", TEMPLATE).read_text(encoding="utf-8"))
    return template.substitute(
        metadata=_metadata(repo_id, base_model, is_adapter, info),
        title=repo_id.split("/")[-1],
        weights_note="a LoRA adapter for the base model" if is_adapter else "the full encoder weights",
        base_model=base_model,
        pooling=settings["pooling"],
        query_prefix=settings["query_prefix"],
        passage_prefix=settings["passage_prefix"],
        normalize="yes" if settings["normalize"] else "no",
        max_length=settings["max_length"],
        embedding_dim=embedding_dim,
        training_data=_training_data(info),
        framework_versions=_versions_list(info.framework_versions),
        hyperparameters=_hyperparameter_table(info.hyperparameters),
        evaluation=_evaluation_table(info.eval_results),
        repo_id=repo_id,
        transformers_pooling=_pooling_snippet(settings),
        base_kwargs=base_kwargs,
    )
