"""`revela demo`: train SmolLM2-135M into a code retriever from raw source code, on this CPU, with numbers.

Recipe (shared/CALIBRATION.md, the design that learned on 2 cores): the full 30-layer SmolLM2 is
the LM, frozen, with the in-batch term in its top 4 layers only; the retriever is SmolLM2 cut to 6
layers with LoRA and EOS pooling; tau = 1e-3; groups of 16 chunks (<= 128 tokens) taken in turn from
8 neighbouring modules of revela-hf[demo]'s installed dependencies (`interleave`, the paper's grouping),
first-half queries, a constant learning rate of 3e-4 for 90 steps. `--retriever minilm` adapts all-MiniLM-L6-v2 to
the same corpus instead (`RETRIEVERS`).
Evaluation: HumanEval docstring -> solution (doctests stripped), before and after, next to BM25 and
all-MiniLM-L6-v2.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import TrainerCallback

from revela_hf.demo.assets import demo_distributions, minilm_path, smollm2_path, training_python_files
from revela_hf.data.prepare import prepare
from revela_hf.defaults import RECIPE_INBATCH_LAYERS
from revela_hf.evaluation import RetrievalEvaluator, evaluate_retrieval, format_table
from revela_hf.evaluation.plots import pyplot
from revela_hf.demo.humaneval import build_humaneval_beir
from revela_hf.io import write_file_atomically, write_json_atomically
from revela_hf.objectives.registry import DEFAULT_OBJECTIVE, get_objective
from revela_hf.demo.recipes import BUDGETS, DEMO_GROUPING, RETRIEVERS, Budget, projected_name, trained_name, untrained_name
from revela_hf.trainer import RevelaTrainingArguments
from revela_hf.pooling import check_pooling
from revela_hf.retriever import RevelaRetriever
from revela_hf.search.projection import corpus_chunks, docstring_descriptions, project_retriever
from revela_hf.token_weights import load_token_weights
from revela_hf.training import ModelSpec, train


class RetrievalCurve(TrainerCallback):
    """Keeps (step, nDCG@10) of every evaluation of the trainer, `metric` naming nDCG@10 in its metrics."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.points: list[tuple[int, float]] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = metrics[self.metric]
        self.points.append((state.global_step, score))
        print(f"[revela demo] step {state.global_step}: nDCG@10 = {100 * score:.1f}", flush=True)


def demo_source_files(plan: Budget, distributions: list[str] | None) -> list[Path]:
    """`plan.source_files` `.py` files spread evenly over the training text of `distributions` (None: every installed
    one): the demo's training files."""
    sources = training_python_files(distributions)
    return sources[:: max(1, len(sources) // plan.source_files)][: plan.source_files]


def prepare_demo_corpus(
    corpus: Path, plan: Budget, grouping: str, code_units: str, seed: int, distributions: list[str] | None
) -> None:
    """Write the demo's training groups to `corpus`: `demo_source_files(plan, distributions)`, chunked and grouped as
    `plan` says."""
    prepare(
        [str(p) for p in demo_source_files(plan, distributions)],
        corpus,
        group_size=plan.group_size,
        strategy=grouping,
        interleave_width=plan.interleave_width,
        max_tokens=plan.max_tokens,
        tokenizer=smollm2_path(),
        seed=seed,
        # First-half queries on code too, so the retriever learns to find what continues a chunk.
        # Block units (statements packed as they come) beat one-function-per-chunk on the suite
        # (README, "Yardstick suite").
        full_chunk_sources={"code": False},
        code_units=code_units,
    )


def run_demo(
    output_dir: str = "revela-demo",
    budget: str = "default",
    seed: int = 0,
    eval_dir: str | None = None,
    objective: str = DEFAULT_OBJECTIVE,
    inbatch_top_k: int | None = None,
    grouping: str = DEMO_GROUPING,
    temperature: float | None = None,
    code_units: str = "block",
    pooling: str | None = None,
    retriever: str = "smollm2",
) -> dict:
    """Prepare, evaluate the untrained retriever, train, evaluate again; write results.json and a plot.

    `eval_dir` is a BEIR-layout folder to evaluate on (None = HumanEval docstring -> code);
    `objective` the training objective (revela, replug or dream; the LM stays frozen in all three);
    `inbatch_top_k` Revela's sparse in-batch attention (None = exact); `grouping` how chunks are
    grouped (`interleave`: chunks taken in turn from 4 neighbouring modules; `document`: consecutive
    chunks of one module; `random` is the control: a group of unrelated chunks gives the retriever
    nothing to find); `code_units` how code is chunked (see `Chunker`); `retriever` which retriever
    trains (`RETRIEVERS`: SmolLM2 from scratch, or all-MiniLM-L6-v2 adapted to the corpus);
    `temperature` (Sim's tau) and `pooling` override its recipe's.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    get_objective(objective)  # a clear error for an unknown name, before any work
    if retriever not in RETRIEVERS:
        raise ValueError(f"unknown retriever {retriever!r}; choose one of {', '.join(RETRIEVERS)}")
    plan, recipe = BUDGETS[budget], RETRIEVERS[retriever]
    pooling, temperature = check_pooling(pooling or recipe.pooling), temperature or recipe.temperature
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    beir = eval_dir or build_humaneval_beir(str(out / "humaneval"))
    # The LM's tokens: the same for every retriever; a budget with other data gets a folder of its own.
    corpus = out / f"corpus-{grouping}-{code_units}-{plan.source_files}x{plan.group_size}x{plan.max_tokens}-seed{seed}"
    if not corpus.exists():
        # The source of revela-hf[demo]'s own dependencies, so that other installed packages (a test
        # extra, a user's own) do not change the training text: the lock fixes it.
        prepare_demo_corpus(corpus, plan, grouping, code_units, seed, distributions=demo_distributions())
    top_layers = list(RECIPE_INBATCH_LAYERS)
    settings = {**get_objective(objective).config_kwargs(top_layers), "inbatch_top_k": inbatch_top_k}
    spec = ModelSpec(
        lm=smollm2_path(num_hidden_layers=plan.lm_layers),
        retriever=minilm_path() if recipe.encoder else smollm2_path(num_hidden_layers=plan.retriever_layers),
        inbatch_layers=top_layers,
        temperature=temperature,
        encoder_retriever=recipe.encoder,
        retriever_pooling=pooling,
        config_overrides=settings if recipe.encoder else {**settings, "pooling": pooling},
    )
    # The untrained retriever alone (a fresh LoRA's B = 0 adds nothing): no need to load the LM for it.
    prefixes = {"query_prefix": "", "passage_prefix": ""} if recipe.encoder else {}
    before = RevelaRetriever.from_backbone(spec.retriever, pooling=pooling, **prefixes)
    table = {untrained_name(retriever): evaluate_retrieval(before, beir)}
    evaluator = RetrievalEvaluator.from_beir(beir)
    curve = RetrievalCurve(f"eval_{evaluator.primary_metric}")
    args = RevelaTrainingArguments(
        output_dir=str(out / ("run" if objective == DEFAULT_OBJECTIVE else f"run-{objective}")),
        max_steps=plan.max_steps,
        learning_rate=recipe.learning_rate,
        # Constant, then (where the budget says) a cosine to zero over its last steps: a cosine over
        # the whole run stopped the curve early (HumanEval 29.8 vs 40.9 constant, issue #16), a rate
        # constant to the end lets long runs oscillate (the `full` budget, README "Yardstick suite").
        **plan.lr_schedule(),
        logging_steps=max(1, plan.max_steps // 30),
        save_steps=max(1, plan.max_steps // 3),
        save_total_limit=1,
        eval_strategy="steps",
        eval_steps=plan.eval_every,
        max_length=plan.max_tokens,
        retriever_max_length=plan.max_tokens,
        report_to=[],
        seed=seed,
        use_cpu=True,
        base_model=recipe.hub_id,
    )
    trainer = train(spec, corpus, args, callbacks=[curve], evaluator=evaluator)
    trained_dir = Path(args.output_dir) / "retriever"
    table[trained_name(objective, retriever)] = evaluate_retrieval(trainer.model.retriever, beir)
    projected_dir = None
    if recipe.projection_pooling is not None:
        # Re-pooled and all-but-the-top fitted on the docstrings of the demo's training text: inductive, one query at a time.
        projected_dir = trained_dir.with_name("retriever-all-but-the-top")
        descriptions = docstring_descriptions(training_python_files(demo_distributions()))
        # The mean half's tokens SIF-weighted by their frequency in the training chunks (README).
        projection = project_retriever(trained_dir, projected_dir, descriptions, pooling=recipe.projection_pooling, overwrite=True,
                                       token_weight_texts=corpus_chunks(corpus) if recipe.projection_token_weights else None)
        # Scored on the trained backbone in memory, with the copy's small read-out files (no second model load).
        trained = trainer.model.retriever
        settings = {**trained.settings(), "pooling": recipe.projection_pooling}
        projected = RevelaRetriever(trained.backbone, trained.tokenizer, **settings, projection=projection,
                                    token_weights=load_token_weights(projected_dir))
        table[projected_name(trained_name(objective, retriever))] = evaluate_retrieval(projected, beir)
    table["BM25"] = evaluate_retrieval("bm25", beir)
    table["all-MiniLM-L6-v2 (supervised)"] = evaluate_retrieval(minilm_path(), beir)
    results = {
        "budget": budget,
        "objective": objective,
        "retriever_recipe": retriever,
        "inbatch_top_k": inbatch_top_k,
        "grouping": grouping,
        "code_units": code_units,
        "temperature": temperature,
        "pooling": pooling,
        "seed": seed,
        "eval_data": str(beir),
        "plan": asdict(plan),
        "wall_time_s": round(time.time() - started, 1),
        "threads": torch.get_num_threads(),
        "table": table,
        "curve": [{"step": s, "ndcg@10": v} for s, v in curve.points],
        "train_loss": [
            {"step": e["step"], "loss": e["loss"], "learning_rate": e["learning_rate"]}
            for e in trainer.state.log_history
            if "loss" in e
        ],
        "retriever": str(trained_dir),
        "projected_retriever": str(projected_dir) if projected_dir else None,
    }
    stem = "results" if objective == DEFAULT_OBJECTIVE else f"results-{objective}"
    write_json_atomically(out / f"{stem}.json", results)
    _plot(results, out / f"{stem}.png", "HumanEval docstring -> code" if eval_dir is None else Path(eval_dir).name)
    print(format_table(table))
    return results


def _plot(results: dict, path: Path, data_name: str) -> None:
    """Training loss and HumanEval nDCG@10 over steps, with BM25 as a reference line."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    loss = results["train_loss"]
    left.plot([p["step"] for p in loss], [p["loss"] for p in loss])
    left.set(title="LM loss (in-batch pass)", xlabel="step", ylabel="loss")
    first = results["table"][untrained_name(results["retriever_recipe"])]["ndcg@10"]
    steps = [0] + [p["step"] for p in results["curve"]]
    scores = [first] + [p["ndcg@10"] for p in results["curve"]]
    right.plot(steps, [100 * s for s in scores], marker="o", label=trained_name(results["objective"], results["retriever_recipe"]))
    right.axhline(100 * results["table"]["BM25"]["ndcg@10"], color="gray", linestyle="--", label="BM25")
    projected = projected_name(trained_name(results["objective"], results["retriever_recipe"]))
    if projected in results["table"]:
        right.plot([steps[-1]], [100 * results["table"][projected]["ndcg@10"]], marker="*", markersize=12,
                   linestyle="none", label="SIF mean + EOS, all-but-the-top")
    right.set(title=data_name, xlabel="step", ylabel="nDCG@10 (%)")
    right.legend()
    fig.tight_layout()
    write_file_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    plt.close(fig)
