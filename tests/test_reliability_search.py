"""Indexes survive failed rebuilds, record where their retriever is, and local-looking paths never go to the Hub."""

from __future__ import annotations

import json
import os

import pytest
from conftest import OneHotEncoder, tiny_decoder, tiny_revela

from revela_hf.cli import main
from revela_hf.evaluation import BeirDataset, write_beir
from revela_hf.hub import resolve_model_dir
from revela_hf.search import ShardedIndex

OLD = [(f"old{i}", f"document number {i}") for i in range(6)]
NEW = [(f"new{i}", f"document number {i}") for i in range(6)]


def _top_ids(root, queries=("document number 1", "document number 4")):
    index = ShardedIndex.load(root)
    return [hits[0].doc_id for hits in index.search(OneHotEncoder().encode_queries(list(queries)), top_k=1)]


def test_a_failed_rebuild_leaves_the_old_index_whole(tmp_path):
    root = tmp_path / "idx"
    ShardedIndex.build(OneHotEncoder(), iter(OLD), root, shard_size=2)
    config = (root / "index.json").read_text()
    with pytest.raises(RuntimeError, match="encoder crashed"):  # shard 0 is written, shard 1 fails
        ShardedIndex.build(OneHotEncoder(fail_on=2), iter(NEW), root, shard_size=2)
    assert (root / "index.json").read_text() == config
    assert _top_ids(root) == ["old1", "old4"]  # no new document mixed in
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("gen-")) == ["index.json"]


def test_a_rebuild_switches_to_the_new_generation_and_drops_the_old(tmp_path):
    root = tmp_path / "idx"
    ShardedIndex.build(OneHotEncoder(), iter(OLD), root, shard_size=4)
    ShardedIndex.build(OneHotEncoder(), iter(NEW), root, shard_size=4)
    assert _top_ids(root) == ["new1", "new4"]
    generation = json.loads((root / "index.json").read_text())["generation"]
    assert sorted(p.name for p in root.iterdir()) == [generation, "index.json"]


def test_an_index_is_not_written_into_a_foreign_folder_and_a_missing_shard_is_named(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "paper.tex").write_text("keep")
    with pytest.raises(ValueError, match="refusing to write an index into .*docs: it exists and holds no index.json"):
        ShardedIndex.build(OneHotEncoder(), iter(OLD), tmp_path / "docs")
    assert os.listdir(tmp_path / "docs") == ["paper.tex"]
    index = ShardedIndex.build(OneHotEncoder(), iter(OLD), tmp_path / "idx", shard_size=3)
    (tmp_path / "idx" / index.config.generation / "shard_00001.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="lists shard_00001.faiss but .* is missing; rebuild it"):
        index.search(OneHotEncoder().encode_queries(["document number 2"]), top_k=1)


def test_an_index_built_from_a_relative_retriever_path_is_searchable_from_elsewhere(tmp_path, monkeypatch, capsys):
    tiny_revela(tiny_decoder(tmp_path / "base"), max_length=24).save_pretrained(str(tmp_path / "ret"))
    corpus = {f"d{i}": {"title": "", "text": text} for i, text in enumerate(["the cat sat on the mat", "paris is in france"])}
    write_beir(tmp_path / "beir", BeirDataset(corpus=corpus, queries={}, qrels={}))
    monkeypatch.chdir(tmp_path)
    assert main(["index", "--retriever", "ret", "--corpus", "beir/corpus.jsonl", "--output", "idx"]) == 0
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["encoder"] == str(tmp_path / "ret")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["search", "cat", "--index", str(tmp_path / "idx"), "--top-k", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 1


@pytest.mark.parametrize("name", ["run/retriever", "run/retriever/", "a/b/c", "./model", "~/missing-model"])
def test_a_missing_local_looking_path_is_an_error_not_a_hub_download(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()  # `run/` exists, `run/retriever` was mistyped or not written yet
    with pytest.raises(FileNotFoundError, match=r"no model folder at .*; check the path, or write hf://"):
        resolve_model_dir(name)


def test_a_second_index_build_on_one_output_fails_at_once(tmp_path):
    from revela_hf.io import OutputBusyError, output_lock

    with output_lock(tmp_path / "idx"):
        with pytest.raises(OutputBusyError, match="idx is being written by process"):
            ShardedIndex.build(OneHotEncoder(), iter(OLD), tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
