"""`RetrievalEvaluator` and retrieval evaluation during training: the scores `evaluate_retrieval` gives, logged
by `RevelaTrainer` at its eval steps, the best checkpoint restored at the end, `revela train --eval-data`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, OneHotEncoder, StopAt, tiny_causal_lm, tiny_decoder, tiny_groups, tiny_revela

from revela_hf import RetrievalEvaluator, RevelaRetriever
from revela_hf.cli import main
from revela_hf.demo import RetrievalCurve
from revela_hf.evaluation import BeirDataset, build_beir_folder, evaluate_retrieval, load_beir
from revela_hf.evaluation.evaluate import HEADLINE_METRICS
from revela_hf.model_card import load_card_info
from revela_hf.trainer import RevelaTrainingArguments
from revela_hf.training import ModelSpec, train

MAX_STEPS, EVAL_STEPS = 4, 2
METRIC = "eval_pairs_ndcg@10"  # the BEIR folder is named "pairs"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny LM, prepared groups, and a BEIR folder "pairs": each text's first three words -> the text."""
    root = tmp_path_factory.mktemp("evaluator")
    pairs = [(str(i), " ".join(text.split()[:3]), text) for i, text in enumerate(TEXTS)]
    beir = build_beir_folder(root / "pairs", lambda: BeirDataset.from_pairs(pairs))
    return tiny_causal_lm(root / "lm"), tiny_groups(root / "data", groups=8), beir


def run(setup, output: Path, callbacks=None, evaluator=None, **training_args):
    lm, data, _ = setup
    args = RevelaTrainingArguments(output_dir=str(output), max_steps=MAX_STEPS, save_steps=EVAL_STEPS, logging_steps=3,
                                   eval_strategy="steps", eval_steps=EVAL_STEPS, learning_rate=1e-2, report_to=[],
                                   use_cpu=True, seed=0, disable_tqdm=True, max_length=16, retriever_max_length=16,
                                   **training_args)
    spec = ModelSpec(lm=str(lm), retriever_lora_r=4, inbatch_layers=[-1])
    return train(spec, data, args, callbacks=callbacks, evaluator=evaluator)


def evaluations(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if METRIC in entry]


@pytest.fixture(scope="module")
def evaluated(setup, tmp_path_factory):
    """A run evaluated every EVAL_STEPS steps by an evaluator passed in, with the demo's curve callback."""
    curve = RetrievalCurve(METRIC)
    trainer = run(setup, tmp_path_factory.mktemp("evaluated") / "run", callbacks=[curve],
                  evaluator=RetrievalEvaluator.from_beir(setup[2]), base_model=BASE_MODEL)
    return trainer, curve


BASE_MODEL = "revela-hf/tiny-llama"  # the Hub id the run names as its retriever's base model


def test_the_trained_card_records_the_run(setup, evaluated):
    # What a sentence-transformers card states about its training, from the run itself: the data in words (the
    # fixture's 8 groups of 4 chunks, two documents per group, source "text"), every schedule setting, the LoRA
    # config, the framework versions; the base model as a Hub id while the local adapter still loads locally.
    import peft
    import transformers

    trainer, _ = evaluated
    folder = Path(trainer.args.output_dir) / "checkpoint-4" / "retriever"
    card = load_card_info(folder)
    words = [len(chunk.split()) for row in trainer.train_dataset for chunk in row["chunks"]]  # chunk lengths, by hand
    assert card.training_summary == (f"8 groups of 4 chunks (32 chunks from 16 documents; {min(words)}-{max(words)} words a "
                                     f"chunk, mean {sum(words) / len(words):.1f}); sources: text")
    assert card.training_samples == trainer.train_dataset[0]["chunks"][:3]  # short chunks: shown whole
    from datasets import Dataset

    from revela_hf.model_card import dataset_summary

    per_file = Dataset.from_list([{"chunks": ["a", "b"], "sources": [f"f{i}.py", f"f{i + 1}.py"]} for i in range(0, 14, 2)])
    assert dataset_summary(per_file, batch_size=3) == "7 groups of 2 chunks (14 chunks; 1-1 words a chunk, mean 1.0); 14 sources (f0.py, f1.py, f10.py, f11.py, f12.py, ...)"
    assert dataset_summary(per_file.to_iterable_dataset()) == ""  # a stream is not read to count it
    from revela_hf.model_card import CardInfo, _training_data, dataset_samples

    samples = dataset_samples(Dataset.from_list([{"chunks": ["x | y\nz", "w" * 250]}]))
    assert samples == ["x | y\nz", "w" * 200 + "..."]  # cut to 200 characters
    assert "| <code>x &#124; y<br>z</code> |" in _training_data(CardInfo(training_samples=samples))  # one table cell
    assert card.base_model == BASE_MODEL
    assert card.framework_versions["transformers"] == transformers.__version__
    assert card.framework_versions["peft"] == peft.__version__
    from revela_hf.environment import package_versions  # the requirements `revela env` reports, where installed

    assert list(card.framework_versions)[2:] == [name for name, version in package_versions(optional=False).items() if version]
    hyper = card.hyperparameters
    assert {k: hyper[k] for k in ("learning_rate", "steps", "seed", "max_length", "groups_per_update")} == {
        "learning_rate": 1e-2, "steps": 4, "seed": 0, "max_length": 16, "groups_per_update": 1}
    assert hyper["retriever_lora"]["r"] == 4 and hyper["objective"] == "revela" and "lm_lora" not in hyper
    readme = (folder / "README.md").read_text()
    assert f"base_model: {BASE_MODEL}" in readme and f"| Base model | {BASE_MODEL} |" in readme
    assert f"- transformers: {transformers.__version__}" in readme
    assert "Training data: 8 groups of 4 chunks" in readme
    assert f"| <code>{card.training_samples[0]}</code> |" in readme
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(setup[0])  # the local run reloads from the local folder
    assert RevelaRetriever.from_pretrained(str(folder)).card.base_model == BASE_MODEL


def test_a_resumed_runs_card_holds_the_evaluations_before_the_interruption(setup, evaluated, tmp_path):
    # Interrupted after the evaluation and checkpoint of step 2, then resumed by a new trainer: the final retriever's
    # card has the uninterrupted run's evaluations (the step-2 one too) since both come from the trainer state's
    # log_history, which the checkpoint carries over the interruption. (The loss logged at step 3 differs: the Trainer
    # averages it over the steps since its last log in that process, steps 1-3 straight, step 3 resumed.)
    from huggingface_hub import ModelCard

    from revela_hf.environment import cpu_name

    output = tmp_path / "run"
    run(setup, output, callbacks=[StopAt(2)], evaluator=RetrievalEvaluator.from_beir(setup[2]), base_model=BASE_MODEL)
    assert not (output / "checkpoint-4").exists()
    resumed = run(setup, output, evaluator=RetrievalEvaluator.from_beir(setup[2]), base_model=BASE_MODEL)
    assert resumed.state.global_step == MAX_STEPS
    card = load_card_info(output / "retriever")
    straight = load_card_info(Path(evaluated[0].args.output_dir) / "retriever")
    assert [row["step"] for row in card.training_logs] == [2, 3, 4]  # step 2 was logged before the interruption
    def scores(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "loss"} for row in rows]

    assert scores(card.training_logs) == scores(straight.training_logs) and card.eval_results == straight.eval_results
    logged = evaluations(evaluated[0])
    assert card.training_logs[0][METRIC] == logged[0][METRIC] and card.training_logs[1]["loss"] > 0
    assert card.evaluated_at_step == 4 and card.eval_results["pairs"]["ndcg@10"] == logged[1][METRIC]

    # sentence-transformers' card sections: hyper-parameters split into the non-default ones and all, hardware, time
    assert {k: card.hyperparameters[k] for k in ("learning_rate", "seed", "max_steps", "steps")} == {
        "learning_rate": 1e-2, "seed": 0, "max_steps": MAX_STEPS, "steps": MAX_STEPS}
    assert "adam_beta1" not in card.hyperparameters and card.all_hyperparameters["adam_beta1"] == 0.9
    assert not {"output_dir", "logging_steps", "eval_data", "save_steps", "hub_token"} & set(card.all_hyperparameters)
    assert card.hardware == {"cpu": cpu_name(), "accelerator": "none (CPU)", "processes": "1"}
    assert card.training_time["from_step"] == 2 and card.training_time["to_step"] == 4 and card.training_time["seconds"] > 0
    assert straight.training_time["from_step"] == 0
    readme = (output / "retriever" / "README.md").read_text()
    assert "| Epoch | Step | Training loss | eval_pairs_mrr@10 | eval_pairs_ndcg@10 | eval_pairs_recall@100 |" in readme
    assert f"| 0.2500 | 2 | - | {logged[0]['eval_pairs_mrr@10']:.4f} | {logged[0][METRIC]:.4f} | 1.0000 |" in readme
    assert f"| 0.3750 | 3 | {card.training_logs[1]['loss']:.4f} | - | - | - |" in readme
    assert f"| **0.5000** | **4** | **-** | **{logged[1]['eval_pairs_mrr@10']:.4f}** | **{logged[1][METRIC]:.4f}** |" in readme
    assert "| Backbone | `LlamaModel`, 2 layers, hidden size 32 |" in readme
    assert "| Adapter | LoRA: r 4, alpha 8, dropout 0.0, on `down_proj`, `gate_proj`, `k_proj`" in readme
    assert "resumed from the checkpoint of step 2) |" in readme and f"| CPU | {cpu_name()} |" in readme
    assert "| seed | `0` |" in readme and "| adam_beta1 | `0.9` |" in readme.split("<summary>All training arguments")[1]
    hub_card = ModelCard(readme)  # valid Hub metadata, with the step-4 evaluation as model-index
    results = {r.metric_type: r.metric_value for r in hub_card.data.eval_results}
    assert results["ndcg_at_10"] == pytest.approx(100 * logged[1][METRIC]) and hub_card.data.base_model == BASE_MODEL


def test_evaluator_scores_equal_evaluate_retrieval(setup, tmp_path):
    beir = setup[2]
    retriever = tiny_revela(tiny_decoder(tmp_path / "base"))
    expected = evaluate_retrieval(retriever, beir)
    evaluator = RetrievalEvaluator.from_beir(beir)
    assert evaluator.primary_metric == "pairs_ndcg@10"
    assert evaluator(retriever) == {f"pairs_{m}": expected[m] for m in HEADLINE_METRICS}
    assert evaluator("bm25") == {f"pairs_{m}": v for m, v in evaluate_retrieval("bm25", beir).items() if m in HEADLINE_METRICS}
    # In memory, sentence-transformers' way: plain-text documents, relevant doc ids as sets, an unjudged query.
    data = load_beir(beir)
    in_memory = RetrievalEvaluator({**data.queries, "unjudged": "the cat"}, {d: doc["text"] for d, doc in data.corpus.items()},
                                   {q: set(rels) for q, rels in data.qrels.items()}, metrics=("mrr@10", "ndcg@10"))
    assert in_memory(retriever) == {"mrr@10": expected["mrr@10"], "ndcg@10": expected["ndcg@10"]}


def test_evaluator_metrics_at_any_cut_off_and_errors():
    corpus = {f"d{i}": f"doc number {i}" for i in range(8)}
    queries = {"q1": "find 1", "q2": "find 2"}
    relevant = {"q1": {"d1"}, "q2": {"d2": 1, "d7": 1}}
    evaluator = RetrievalEvaluator(queries, corpus, relevant, name="toy", metrics=("recall@1", "mrr@5"))
    assert evaluator(OneHotEncoder()) == {"toy_recall@1": 0.75, "toy_mrr@5": 1.0}  # q2 finds one of its two at rank 1
    with pytest.raises(ValueError, match="ndcg@k, mrr@k or recall@k"):
        RetrievalEvaluator(queries, corpus, {"q1": {"d1"}}, metrics=("map@10",))
    with pytest.raises(ValueError, match="have no text, e.g. \\['q9'\\]"):
        RetrievalEvaluator(queries, corpus, {"q9": {"d1"}})


def test_training_logs_the_evaluation_of_each_eval_step(setup, evaluated, capsys):
    trainer, curve = evaluated
    output = Path(trainer.args.output_dir)
    logged = evaluations(trainer)
    assert [entry["step"] for entry in logged] == [2, 4]
    evaluator = RetrievalEvaluator.from_beir(setup[2])
    for entry in logged:
        # The scores of the weights of that step, read back from its checkpoint's retriever folder.
        scores = evaluator(RevelaRetriever.from_pretrained(str(output / f"checkpoint-{entry['step']}" / "retriever")))
        assert {key: entry[f"eval_{key}"] for key in scores} == scores
        assert "eval_runtime" in entry and "sim_entropy" not in entry  # step 2's group metrics wait for the log of step 3
    assert [entry["step"] for entry in trainer.state.log_history if "sim_entropy" in entry and "loss" in entry] == [3]
    assert len({entry[METRIC] for entry in logged} | {entry["eval_pairs_mrr@10"] for entry in logged}) > 1, "scores must move"
    # The demo's curve is the trainer's evaluations, each one the nDCG@10 evaluate_retrieval gives.
    assert curve.points == [(entry["step"], entry[METRIC]) for entry in logged]
    step4 = evaluate_retrieval(RevelaRetriever.from_pretrained(str(output / "checkpoint-4" / "retriever")), setup[2])
    assert curve.points[-1][1] == step4["ndcg@10"]
    # The retriever's card records the evaluation of its weights and when it was measured.
    card = load_card_info(output / "checkpoint-2" / "retriever")
    step2 = {key.removeprefix("eval_pairs_"): value for key, value in logged[0].items() if key.startswith("eval_pairs_")}
    assert card.eval_results == {"pairs": step2}
    assert card.evaluated_at_step == 2
    readme = (output / "checkpoint-2" / "retriever" / "README.md").read_text()
    assert "type: ndcg_at_10" in readme and f"{100 * logged[0][METRIC]:.2f}" in readme

    # trainer.evaluate() by hand: the same metrics again, the retriever back in train mode, the line printed.
    trainer.model.train()
    capsys.readouterr()
    metrics = trainer.evaluate()
    assert trainer.model.retriever.training
    keys = (METRIC, "eval_pairs_mrr@10", "eval_pairs_recall@100")
    assert [metrics[key] for key in keys] == [logged[-1][key] for key in keys]
    assert f"[revela demo] step 4: nDCG@10 = {100 * logged[-1][METRIC]:.1f}" in capsys.readouterr().out


def test_load_best_model_at_end_restores_the_best_checkpoints_retriever(setup, evaluated, tmp_path):
    scores = list({entry["step"]: entry[METRIC] for entry in evaluations(evaluated[0])}.values())  # one per step
    # The runs are deterministic: pick the direction in which the best evaluation is not the last one, so that
    # restoring it changes the weights (on ties the first evaluation stays best).
    greater_is_better = not scores[-1] > max(scores[:-1])
    output = tmp_path / "run"
    trainer = run(setup, output, eval_data=str(setup[2]), metric_for_best_model=METRIC, load_best_model_at_end=True,
                  greater_is_better=greater_is_better)
    assert [entry[METRIC] for entry in evaluations(trainer)] == scores
    assert trainer.state.best_model_checkpoint == str(output / "checkpoint-2")

    def embeddings(retriever: RevelaRetriever) -> torch.Tensor:
        return retriever.encode_corpus(TEXTS, show_progress_bar=False)

    best = embeddings(RevelaRetriever.from_pretrained(str(output / "checkpoint-2" / "retriever")))
    assert torch.equal(embeddings(trainer.model.retriever), best)
    assert not torch.equal(embeddings(RevelaRetriever.from_pretrained(str(output / "checkpoint-4" / "retriever"))), best)
    final = output / "retriever"
    assert torch.equal(embeddings(RevelaRetriever.from_pretrained(str(final))), best)
    card = load_card_info(final)
    assert card.evaluated_at_step == 2 and card.eval_results["pairs"]["ndcg@10"] == scores[0]
    assert "| **0.2500** | **2** |" in (final / "README.md").read_text()  # the training logs' row of these weights

    # The final save lost: rerunning the finished run saves the best checkpoint's retriever, as the run ended on.
    shutil.rmtree(final)
    run(setup, output, eval_data=str(setup[2]), metric_for_best_model=METRIC, load_best_model_at_end=True,
        greater_is_better=greater_is_better)
    assert torch.equal(embeddings(RevelaRetriever.from_pretrained(str(final))), best)
    assert load_card_info(final).evaluated_at_step == 2


def test_revela_train_eval_data_writes_the_metrics_to_trainer_state(setup, tmp_path):
    lm, data, beir = setup
    output = tmp_path / "run"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = ["train", "--data", str(data), "--lm", str(lm), "--output", str(output), "--max-steps", "2", "--save-steps", "1",
            "--max-length", "16", "--lora-r", "4", "--inbatch-layers", "-1", "--eval-data", str(beir), "--eval-steps", "2"]
    proc = subprocess.run([sys.executable, "-m", "revela_hf.cli", *argv], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if METRIC in entry]
    assert [entry["step"] for entry in logged] == [2]
    assert {"eval_pairs_mrr@10", "eval_pairs_recall@100"} <= set(logged[0])
    scores = evaluate_retrieval(RevelaRetriever.from_pretrained(str(output / "checkpoint-2" / "retriever")), beir)
    assert logged[0][METRIC] == scores["ndcg@10"]


def test_revela_train_eval_steps_needs_eval_data(capsys):
    assert main(["train", "--data", "d", "--lm", "l", "--output", "o", "--eval-steps", "2"]) == 2
    assert "--eval-steps needs --eval-data" in capsys.readouterr().err
