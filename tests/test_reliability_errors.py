"""Validation at the edge: numeric arguments range-checked, every CLI error one line, bad data named."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_causal_lm, tiny_decoder, tiny_groups
from transformers import AutoTokenizer

from revela_hf.cli import main
from revela_hf.collator import RevelaDataCollator
from revela_hf.evaluation import BeirDataset, load_beir, write_beir
from revela_hf.ops import check_inbatch_weights
from revela_hf.trainer import RevelaTrainingArguments
from revela_hf.training import ModelSpec, train


@pytest.mark.parametrize("argv, message", [
    (["encode", "--retriever", "r", "--input", "t.txt", "--output", "e.npy", "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
    (["evaluate", "--retriever", "bm25", "--data", "d", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["search", "q", "--index", "i", "--top-k", "0"], "--top-k: must be at least 1, got 0"),
    (["train", "--data", "d", "--lm", "l", "--output", "o", "--max-steps", "0"], "--max-steps: must be at least 1, got 0"),
    (["train", "--data", "d", "--lm", "l", "--output", "o", "--max-steps", "-1"], "--max-steps: must be at least 1, got -1"),
    (["train", "--data", "d", "--lm", "l", "--output", "o", "--temperature", "0"], "--temperature: must be a positive number"),
    (["prepare", "x", "--output", "o", "--group-size", "1"], "--group-size: must be at least 2, got 1"),
    (["train", "--data", "d", "--lm", "l", "--output", "o", "--inbatch-layers", "top"], "--inbatch-layers: expected comma-separated"),
    (["index", "--retriever", "r", "--corpus", "c", "--output", "o", "--shard-size", "x"], "--shard-size: expected an integer, got 'x'"),
])
def test_numeric_arguments_are_range_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def _beir(tmp_path, queries, qrels):
    corpus = {"d1": {"title": "", "text": "the cat sat on the mat"}, "d2": {"title": "", "text": "paris is in france"}}
    return write_beir(tmp_path / "beir", BeirDataset(corpus=corpus, queries=queries, qrels=qrels))


def test_a_query_without_text_is_one_line_naming_the_file(tmp_path, capsys):
    data = _beir(tmp_path, {"q1": "cat"}, {"q1": {"d1": 1}})
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1"}) + "\n")
    assert main(["evaluate", "--retriever", "bm25", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err == f"revela evaluate: error: {data / 'queries.jsonl'}: a row has no 'text' field: {{\"_id\": \"q1\"}}\n"


def test_qrels_naming_unknown_documents_are_an_error_not_misses(tmp_path):
    data = _beir(tmp_path, {"q1": "cat"}, {"q1": {"d1": 1, "d9": 1}})
    with pytest.raises(ValueError, match=r"judges 1 documents that are not in corpus.jsonl, e.g. \['d9'\]"):
        load_beir(data)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset_dict.json").write_text("{not json")
    argv = ["prepare", str(tmp_path / "d"), "--output", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"revela prepare: error: {tmp_path / 'd'} is not a readable datasets folder") and err.count("\n") == 1
    with pytest.raises(ValueError, match="not a readable datasets folder"):
        main(["--debug", *argv])


def test_a_dataset_dict_as_training_data_names_its_splits(tmp_path, capsys):
    from datasets import DatasetDict, load_from_disk

    groups = load_from_disk(str(tiny_groups(tmp_path / "groups")))
    DatasetDict({"train": groups}).save_to_disk(str(tmp_path / "dict"))
    argv = ["train", "--data", str(tmp_path / "dict"), "--lm", str(tiny_causal_lm(tmp_path / "lm")), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "holds a DatasetDict (splits ['train']); pass the folder of one split" in capsys.readouterr().err


def test_integer_inbatch_weights_are_a_clear_error():
    with pytest.raises(ValueError, match="in-batch weights must be floating point, got torch.int64"):
        check_inbatch_weights(torch.eye(3, dtype=torch.long)[[1, 2, 0]], 3)


def test_a_group_with_nothing_to_predict_is_an_error_not_loss_zero(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder(tmp_path / "base"))
    collator = RevelaDataCollator(tokenizer=tokenizer, max_length=16)
    with pytest.raises(ValueError, match="a group has no token to predict"):
        collator([{"chunks": ["", "", "", ""]}])
    with pytest.raises(ValueError, match="a group has no token to predict"):
        RevelaDataCollator(tokenizer=tokenizer, max_length=1)([{"chunks": ["the cat sat", "on the mat"]}])


def test_max_length_below_two_is_refused(tmp_path):
    args = RevelaTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, max_length=1, report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        train(ModelSpec(lm=str(tiny_causal_lm(tmp_path / "lm")), inbatch_layers=None), tiny_groups(tmp_path / "data"), args)
