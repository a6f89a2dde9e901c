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
    the training rows held, `hyperparameters` the run's settings the card shows (as sentence-transformers' cards
    show the non-default ones) and `all_hyperparameters` every training argument, `eval_results` maps a dataset
    name to metrics keyed like "ndcg@10" (fractions, not percent) measured at `evaluated_at_step`,
    `training_logs` one row per logged step (see `training_logs`), `hardware` the CPU, accelerator and processes
    it trained on, `training_time` the seconds the last `train()` call took and the steps it ran (`from_step` is
    the step it resumed at, 0 for a fresh run), `base_model` the Hub id the card names as the base model (a local
    run keeps its loadable path in the adapter config; `push_to_hub` writes this id there), `framework_versions`
    the stack it trained with, `training_samples` a few training chunks (the first group's), as the card shows them.
    """

    training_data: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    all_hyperparameters: dict[str, Any] = field(default_factory=dict)
    eval_results: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluated_at_step: int | None = None
    training_logs: list[dict[str, float]] = field(default_factory=list)
    hardware: dict[str, str] = field(default_factory=dict)
    training_time: dict[str, float] = field(default_factory=dict)
    license: str = "apache-2.0"
    language: list[str] = field(default_factory=lambda: ["en"])
    base_model: str | None = None
    training_summary: str = ""
    framework_versions: dict[str, str] = field(default_factory=dict)
    training_samples: list[str] = field(default_factory=list)


def save_card_info(folder: Path, info: CardInfo) -> None:
    (folder / CARD_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")


def load_card_info(folder: Path) -> CardInfo | None:
    """The CardInfo saved in a retriever folder, or None if it records none."""
    path = folder / CARD_FILE
    return CardInfo(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


MAX_LISTED_SOURCES = 5  # a card lists this many training sources by name, and counts more
EVAL_PREFIX = "eval_"  # what the Trainer puts before the scores of an evaluation during training
SPEED_METRICS = ("runtime", "samples_per_second", "steps_per_second")  # logged with every evaluation, not scores
MAX_SHOWN_LOG_ROWS = 100  # a longer training-logs table is collapsed, as sentence-transformers' cards do
# Training arguments that say where and how often to write, log or report, not how the model was trained: left out
# of a card's hyper-parameters (sentence-transformers leaves out the same kind), with those starting with:
NOT_HYPERPARAMETERS = ("output_dir", "logging_", "log_", "disable_tqdm", "report_to", "run_name", "project", "trackio_",
                       "eval_strategy", "eval_steps", "eval_delay", "eval_data", "save_", "push_to_hub", "hub_",
                       "metric_for_best_model", "greater_is_better", "do_train", "do_eval", "do_predict",
                       "resume_from_checkpoint", "local_rank", "base_model", "deepspeed")


def framework_versions() -> dict[str, str]:
    """Python's, revela-hf's and its installed requirements' versions, as a card's "Framework versions" lists
    them (the requirements `revela env` reports, from `revela_hf.environment`)."""
    import platform

    from revela_hf import __version__
    from revela_hf.environment import package_versions

    found = package_versions(optional=False)
    return {"python": platform.python_version(), "revela-hf": __version__, **{k: v for k, v in found.items() if v}}


def training_arguments(args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hyper-parameters among training arguments `args`, as sentence-transformers' cards split them: those
    that differ from the defaults of `type(args)`, and all of them (`NOT_HYPERPARAMETERS` left out). The defaults
    are built on the configured accelerator state, as sentence-transformers builds them, so that a run goes on."""
    defaults = type(args)(output_dir=args.output_dir, accelerator_config={"use_configured_state": True}).to_dict()
    every = {key: value for key, value in args.to_dict().items() if not key.startswith(NOT_HYPERPARAMETERS)}
    return {key: value for key, value in every.items() if value != defaults.get(key)}, every


def lora_summary(lora: dict[str, Any]) -> dict[str, Any]:
    """The settings of a LoRA config dict worth a card line (rank, alpha, dropout, target modules)."""
    keys = ("r", "lora_alpha", "lora_dropout", "target_modules")
    return {key: sorted(lora[key]) if key == "target_modules" and lora.get(key) else lora.get(key) for key in keys}


def training_logs(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """One row per step of a Trainer's `log_history` that logged a training loss or an evaluation: its `step`,
    `epoch`, `loss` and evaluation scores under their logged names (`eval_<name>_ndcg@10`, ...; an evaluation's
    runtime and speed left out), as sentence-transformers' "Training Logs" table."""
    speed = {EVAL_PREFIX + metric for metric in SPEED_METRICS}
    rows: dict[int, dict[str, float]] = {}
    for entry in log_history:
        values = {k: v for k, v in entry.items() if (k == "loss" or k.startswith(EVAL_PREFIX)) and k not in speed}
        if values:
            rows.setdefault(entry["step"], {"step": entry["step"], "epoch": entry.get("epoch")}).update(values)
    return list(rows.values())


def evaluation_at(logs: list[dict[str, float]], step: int) -> dict[str, float] | None:
    """The last row of `logs` (see `training_logs`) with evaluation scores, logged at or before `step`."""
    evaluated = (row for row in reversed(logs) if row["step"] <= step and any(k.startswith(EVAL_PREFIX) for k in row))
    return next(evaluated, None)


def dataset_summary(dataset: Any, batch_size: int = 10_000) -> str:
    """In words, what a training set of prepared groups (a `datasets.Dataset` with a `chunks` column, optionally
    `doc_ids` and `sources`) or of other rows holds: groups, chunks, documents, chunk lengths in words and sources, as
    a card's training section says. Read in Arrow batches of `batch_size` rows, so a corpus larger than memory is fine.
    A dataset of unknown length (an `IterableDataset`, a streamed or generated one) is not read: "" (not recorded)."""
    import pyarrow.compute as pc
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        return f"{len(dataset):,} training rows" if hasattr(dataset, "__len__") else ""
    columns = set(dataset.column_names)
    if "chunks" not in columns:
        return f"{len(dataset):,} training rows"
    wanted = [c for c in ("chunks", "doc_ids", "sources") if c in columns]
    sizes: set[int] = set()
    chunks, words, fewest, most = 0, 0, None, None
    documents, sources = set(), set()
    for batch in dataset.select_columns(wanted).with_format("arrow").iter(batch_size=batch_size):
        lengths = pc.list_value_length(batch.column("chunks"))
        sizes.update(pc.unique(lengths).to_pylist())
        chunks += pc.sum(lengths).as_py() or 0
        counts = pc.list_value_length(pc.utf8_split_whitespace(pc.list_flatten(batch.column("chunks"))))  # words a chunk
        if len(counts):
            words += pc.sum(counts).as_py()
            low, high = pc.min_max(counts).values()
            fewest = low.as_py() if fewest is None else min(fewest, low.as_py())
            most = high.as_py() if most is None else max(most, high.as_py())
        if "doc_ids" in wanted:
            documents.update(pc.unique(pc.list_flatten(batch.column("doc_ids"))).to_pylist())
        if "sources" in wanted:
            sources.update(pc.unique(pc.list_flatten(batch.column("sources"))).to_pylist())
    size = f"{min(sizes)}" if len(sizes) == 1 else f"{min(sizes)}-{max(sizes)}"
    found = f"{chunks:,} chunks" + (f" from {len(documents):,} documents" if "doc_ids" in wanted else "")
    if chunks:
        found += f"; {fewest}-{most} words a chunk, mean {words / chunks:.1f}"
    summary = f"{len(dataset):,} group{'s' if len(dataset) != 1 else ''} of {size} chunks ({found})"
    if len(sources) > MAX_LISTED_SOURCES:  # e.g. one source per file: name a few, count the rest
        named = sorted(sources)[:MAX_LISTED_SOURCES]
        return summary + f"; {len(sources):,} sources ({', '.join(named)}, ...)"
    return summary + (f"; sources: {', '.join(sorted(sources))}" if sources else "")


SHOWN_SAMPLES = 3  # training chunks a card shows, as sentence-transformers' cards show a few training rows
SAMPLE_CHARS = 200  # each cut to this many characters


def dataset_samples(dataset: Any) -> list[str]:
    """The first `SHOWN_SAMPLES` chunks of a prepared dataset's first group, each cut to `SAMPLE_CHARS` characters;
    [] for other rows or a dataset that cannot be indexed."""
    from datasets import Dataset

    if not isinstance(dataset, Dataset) or "chunks" not in dataset.column_names or len(dataset) == 0:
        return []
    return [text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "..." for text in dataset[0]["chunks"][:SHOWN_SAMPLES]]


def _training_data(info: CardInfo) -> str:
    parts = [info.training_summary] if info.training_summary else []
    if info.training_data:
        parts.append("datasets: " + ", ".join(info.training_data))
    text = "; ".join(parts) or "not recorded"
    if info.training_samples:  # one cell each, as code: a chunk's newlines and pipes would break the table
        cells = [sample.replace("&", "&amp;").replace("<", "&lt;").replace("|", "&#124;").replace("\n", "<br>") for sample in info.training_samples]
        text += "\n\n" + _table(["samples (the first group's first chunks)"], [[f"<code>{cell}</code>"] for cell in cells])
    return text


def _versions_list(versions: dict[str, str]) -> str:
    if not versions:
        return "Not recorded."
    return "\n".join(f"- {name}: {version}" for name, version in versions.items())


def _table(header: list[str], rows: list[list[Any]], numeric: bool = False) -> str:
    """A Markdown table; with `numeric`, every column after the first is right-aligned."""
    rule = "|---|" + ("---:|" if numeric else "---|") * (len(header) - 1)
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(map(str, row)) + " |" for row in rows)])


def _collapsed(summary: str, text: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{text}\n\n</details>"


def _hyperparameters(info: CardInfo) -> str:
    if not info.hyperparameters and not info.all_hyperparameters:
        return "Hyper-parameters were not recorded."
    shown = _table(["hyper-parameter", "value"], [[k, f"`{v}`"] for k, v in info.hyperparameters.items()])
    if not info.all_hyperparameters:
        return shown
    every = _table(["argument", "value"], [[k, f"`{v}`"] for k, v in info.all_hyperparameters.items()])
    return ("The model's and the run's settings, and the training arguments that differ from their defaults:\n\n" + shown
            + "\n\n" + _collapsed("All training arguments", every))


def _metric_order(metric: str) -> tuple[str, int]:
    """Metrics by name, then cut-off: "mrr@10", "ndcg@5", "ndcg@10", ... (a trainer's log keeps them sorted by name)."""
    name, _, cutoff = metric.partition("@")
    return name, int(cutoff) if cutoff.isdigit() else 0


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


def _training_logs(info: CardInfo) -> str:
    if not info.training_logs:
        return ""
    scores = sorted({k for row in info.training_logs for k in row if k.startswith(EVAL_PREFIX)}, key=_metric_order)
    rows = []
    for row in info.training_logs:
        cells = [_number(row.get(key)) for key in ("epoch", "step", "loss", *scores)]
        rows.append([f"**{cell}**" for cell in cells] if row["step"] == info.evaluated_at_step else cells)
    table = _table(["Epoch", "Step", "Training loss", *scores], rows, numeric=True)
    if len(rows) > MAX_SHOWN_LOG_ROWS:
        table = _collapsed(f"{len(rows)} logged steps", table)
    note = "\n\nThe bold row is the evaluation the Evaluation section reports." if info.evaluated_at_step is not None else ""
    return "### Training logs\n\n" + table + note


def _duration(seconds: float) -> str:
    """Like sentence-transformers' cards: "12.3 seconds", "4.2 minutes", "1.6 hours", "2.0 days"."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} seconds"


def _hardware(info: CardInfo) -> str:
    if not info.hardware:
        return ""
    rows = [[label, info.hardware[key]] for label, key in (("CPU", "cpu"), ("Accelerator", "accelerator"), ("Processes", "processes"))]
    time = info.training_time
    if time:
        steps = f"steps {time['from_step'] + 1}-{time['to_step']}"
        resumed = f", resumed from the checkpoint of step {time['from_step']}" if time["from_step"] else ""
        rows.append(["Training time", f"{_duration(time['seconds'])} ({steps}{resumed})"])
    return "### Training hardware and time\n\n" + _table(["", ""], rows)


def _evaluation_table(info: CardInfo) -> str:
    if not info.eval_results:
        return "No evaluation results were recorded. Run `revela evaluate --retriever REPO --data BEIR_FOLDER`."
    metrics = sorted({m for scores in info.eval_results.values() for m in scores}, key=_metric_order)
    rows = [[name, *(f"{100 * scores[m]:.2f}" if m in scores else "-" for m in metrics)]
            for name, scores in info.eval_results.items()]
    when = f", measured at step {info.evaluated_at_step}" if info.evaluated_at_step is not None else ""
    return _table(["dataset", *metrics], rows, numeric=True) + f"\n\nScores in percent{when}."


_ST_USAGE = """```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{repo_id}")
queries = model.encode_query(["how do I sort a list in python?"])
docs = model.encode_document(["sorted(xs) returns a new sorted list", "the capital of France is Paris"])
print(model.similarity(queries, docs))
```"""
_NO_ST_USAGE = ("Not available for this read-out: stock sentence-transformers modules cannot read the base model "
                "under the adapter, so the folder ships no "
                "sentence-transformers configuration. Load it with revela-hf or transformers.")


def _architecture(backbone: Any, settings: dict[str, Any], base_model: str, is_adapter: bool, projection_directions: int | None,
                  token_weights: bool = False, st_modules: list[str] | None = None) -> str:
    """The "Full model architecture" table: base model, backbone, adapter, pooling, normalisation, lengths, prefixes,
    similarity, post-processing and the sentence-transformers modules the folder loads as."""
    from revela_hf.hub import ST_POOLING

    config = backbone.config
    layers = getattr(config, "num_hidden_layers", None)
    depth = f", {layers} layers" if layers else ""
    rows = [["Base model", base_model], ["Backbone", f"`{type(backbone).__name__}`{depth}, hidden size {config.hidden_size}"]]
    if is_adapter:
        lora = lora_summary(next(iter(backbone.peft_config.values())).to_dict())
        targets = ", ".join(f"`{t}`" for t in lora["target_modules"] or [])
        rows.append(["Adapter", f"LoRA: r {lora['r']}, alpha {lora['lora_alpha']}, dropout {lora['lora_dropout']}, on {targets}"])
    from revela_hf.pooling import pooled_width

    unit = settings["normalize"] or projection_directions is not None
    mean_notes = ((["tokens weighted by SIF weights (`token_weights.npy`)"] if token_weights else [])
                  + (["read from the base model, adapter off"] if settings.get("mean_from_base") else []))
    pooling = settings["pooling"] + (f" (the mean part: {'; '.join(mean_notes)})" if mean_notes else "")
    rows += [["Pooling", pooling],
             ["Normalised embeddings", "yes" if unit else "no"],
             ["Similarity", "cosine" if unit else "dot product"],
             ["Max length (tokens)", settings["max_length"]],
             ["Query prefix", f"`{settings['query_prefix']}`"],
             ["Passage prefix", f"`{settings['passage_prefix']}`"],
             ["Embedding dimension", pooled_width(settings["pooling"], config.hidden_size)]]
    if projection_directions is not None:
        rows.append(["Post-processing", f"all-but-the-top: the mean and top {projection_directions} principal directions of "
                                        "description embeddings removed, then normalised (`all_but_the_top.npz`)"])
    modes = " + ".join(ST_POOLING[settings["pooling"]])
    modules = [f"`{name}` ({modes})" if name == "Pooling" else f"`{name}`" for name in st_modules or []]
    rows.append(["sentence-transformers modules", " → ".join(modules) if st_modules else "none (see Usage)"])
    return _table(["", ""], rows)


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


# each pooled part as an expression over `hidden` (the tokenizer appends EOS, so its state is hidden[:, -1])
_PART_SNIPPETS = {"mean": "(hidden * mask).sum(1) / mask.sum(1)", "cls": "hidden[:, 0]", "eos": "hidden[:, -1]",
                  "last": "hidden[:, -1]"}


def _pooling_snippet(settings: dict[str, Any], repo_id: str, projection_directions: int | None, token_weights: bool = False) -> str:
    from revela_hf.pooling import POOLED_PARTS

    names = POOLED_PARTS[settings["pooling"]]
    parts = [_PART_SNIPPETS[name] for name in names]
    lines = []
    if token_weights or projection_directions is not None:
        lines += ["import numpy as np", "from huggingface_hub import hf_hub_download"]
    if settings.get("mean_from_base"):
        parts = [part.replace("hidden", "base_hidden") if name == "mean" else part for name, part in zip(names, parts)]
        lines += ["model.disable_adapters()  # the mean part reads the base model", "with torch.no_grad():",
                  "    base_hidden = model(**batch).last_hidden_state", "model.enable_adapters()"]
    if "mean" in names:
        lines.append("mask = batch['attention_mask'].unsqueeze(-1).float()")
    if token_weights:
        lines += [f'token_weights = torch.from_numpy(np.load(hf_hub_download("{repo_id}", "token_weights.npy")))',
                  "mask = mask * token_weights[batch['input_ids']].unsqueeze(-1)  # SIF weights of the mean part"]
    lines.append(f"embedding = {parts[0]}" if len(parts) == 1 else f"embedding = torch.cat([{', '.join(parts)}], dim=-1)")
    if settings["normalize"]:
        lines.append("embedding = F.normalize(embedding, dim=-1)")
    if projection_directions is not None:
        lines += ["# all-but-the-top post-processing, as every loader above applies it",
                  f'stored = np.load(hf_hub_download("{repo_id}", "all_but_the_top.npz"))',
                  'mean, top = torch.from_numpy(stored["mean"]), torch.from_numpy(stored["directions"])',
                  "centred = F.normalize(embedding, dim=-1) - mean",
                  "embedding = F.normalize(centred - (centred @ top.T) @ top, dim=-1)"]
    return "\n".join(lines)


def render_model_card(
    repo_id: str,
    settings: dict[str, Any],
    base_model: str,
    backbone: Any,
    is_adapter: bool,
    info: CardInfo | None = None,
    base_config: dict[str, Any] | None = None,
    projection_directions: int | None = None,
    token_weights: bool = False,
    st_modules: list[str] | None = None,
) -> str:
    """The README.md of a published retriever: Hub/mteb metadata, architecture, training, results, usage.

    `backbone`: the model the folder holds (a `PreTrainedModel`, with its LoRA adapter when `is_adapter`).
    `base_config`: the config values the base model loads with (`num_hidden_layers`), passed in the usage snippets.
    `projection_directions`: k of the all-but-the-top projection the folder holds, if any; `token_weights`: whether it
    holds SIF token weights; `st_modules`: the class names of the sentence-transformers modules it ships, in order
    (`revela_hf.hub.sentence_transformers_modules`; None where it ships none)."""
    info = info or CardInfo()
    base_kwargs = "".join(f", {key}={value!r}" for key, value in (base_config or {}).items())
    template = Template(resources.files("revela_hf").joinpath("model_cards", TEMPLATE).read_text(encoding="utf-8"))
    return template.substitute(
        metadata=_metadata(repo_id, base_model, is_adapter, info),
        title=repo_id.split("/")[-1],
        weights_note="a LoRA adapter for the base model" if is_adapter else "the full encoder weights",
        base_model=base_model,
        architecture=_architecture(backbone, settings, base_model, is_adapter, projection_directions, token_weights, st_modules),
        st_files=" and the sentence-transformers configuration" if st_modules else "",
        sentence_transformers_usage=_ST_USAGE.format(repo_id=repo_id) if st_modules else _NO_ST_USAGE,
        query_prefix=settings["query_prefix"],
        training_data=_training_data(info),
        framework_versions=_versions_list(info.framework_versions),
        training_details="\n\n".join(filter(None, (_hyperparameters(info), _training_logs(info), _hardware(info)))),
        evaluation=_evaluation_table(info),
        repo_id=repo_id,
        transformers_pooling=_pooling_snippet(settings, repo_id, projection_directions, token_weights),
        base_kwargs=base_kwargs,
    )
