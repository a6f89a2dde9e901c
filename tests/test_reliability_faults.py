"""Fault injection with real processes: `revela prepare`, `index` and `train` killed (kill -9, sent by the
process itself at a named point, see `revela_hf.io.fault_point`) leave the previous output intact or
the new one complete, and a rerun ends exactly where an uninterrupted run does. Plus two concurrent
`prepare` runs on one output."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from safetensors.torch import load_file
from conftest import tiny_causal_lm, tiny_decoder, tiny_groups, tiny_revela

from revela_hf.data import prepare
from revela_hf.evaluation import BeirDataset, write_beir
from revela_hf.evaluation.beir import iter_corpus
from revela_hf.io import is_ours
from revela_hf.search import ShardedIndex, load_encoder

SRC = Path(__file__).resolve().parents[1] / "src"
CORPUS = Path(inspect.getfile(json)).parent
PREPARE = ["--group-size", "4", "--max-words", "50", "--strategy", "interleave", "--no-progress"]
KILLED = -signal.SIGKILL


def _env(fault: str | None, fault_signal: str = "KILL") -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("REVELA_FAULT_AT", None)
    if fault:
        env |= {"REVELA_FAULT_AT": fault, "REVELA_FAULT_SIGNAL": fault_signal}
    return env


def _revela(*args, fault: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "revela_hf.cli", *map(str, args)]
    return subprocess.run(command, env=_env(fault), capture_output=True, text=True, timeout=300)


def _rows(folder: Path) -> list[dict]:
    return datasets.load_from_disk(str(folder)).to_list()


def test_prepare_killed_while_replacing_leaves_the_old_dataset_and_a_rerun_matches(tmp_path):
    out = tmp_path / "groups"
    prepare([CORPUS], out, seed=0, group_size=4, max_words=50, strategy="interleave", show_progress=False)
    old = _rows(out)
    for point in ("publish:built", "publish:marked"):  # dataset written / marked complete, not yet switched in
        run = _revela("prepare", CORPUS, "--output", out, "--overwrite", "--seed", "1", *PREPARE, fault=point)
        assert run.returncode == KILLED, run.stderr[-2000:]
        assert is_ours(out) and _rows(out) == old
    run = _revela("prepare", CORPUS, "--output", out, "--overwrite", "--seed", "1", *PREPARE)
    assert run.returncode == 0, run.stderr[-2000:]
    prepare([CORPUS], tmp_path / "reference", seed=1, group_size=4, max_words=50, strategy="interleave", show_progress=False)
    assert _rows(out) == _rows(tmp_path / "reference") != old
    assert sorted(os.listdir(tmp_path)) == ["groups", "reference"]  # the killed runs' leftovers and locks are gone


def _stopped(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "T":
        assert time.monotonic() < deadline, f"process {pid} did not reach its fault point"
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_two_prepare_runs_on_one_output_one_fails_clearly_the_other_writes_a_valid_dataset(tmp_path):
    out = tmp_path / "groups"
    command = [sys.executable, "-m", "revela_hf.cli", "prepare", str(CORPUS), "--output", str(out), *PREPARE]
    first = subprocess.Popen(command, env=_env("publish:built", "STOP"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _stopped(first.pid)  # the first run holds the output's lock, its dataset built but not published
        second = _revela("prepare", CORPUS, "--output", out, *PREPARE)
        assert second.returncode == 2
        assert f"revela prepare: error: {out} is being written by process {first.pid}" in second.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-2000:]
    prepare([CORPUS], tmp_path / "reference", group_size=4, max_words=50, strategy="interleave", show_progress=False)
    assert _rows(out) == _rows(tmp_path / "reference")


def _search(index_dir: Path, encoder) -> list[list[tuple[str, float]]]:
    hits = ShardedIndex.load(index_dir).search(encoder.encode_queries(["the cat", "paris", "python"]), top_k=3)
    return [[(h.doc_id, round(h.score, 6)) for h in row] for row in hits]


def test_index_killed_while_rebuilding_leaves_the_old_index_and_a_rerun_matches(tmp_path):
    retriever = tmp_path / "ret"
    tiny_revela(tiny_decoder(tmp_path / "base"), max_length=24).save_pretrained(str(retriever))
    encoder = load_encoder(str(retriever))
    texts = ["the cat sat on the mat", "paris is the capital of france", "python functions return values",
             "dogs bark at the mailman", "a list comprehension builds a list"]
    for name, prefix in (("old", "o"), ("new", "n")):
        corpus = {f"{prefix}{i}": {"title": "", "text": text} for i, text in enumerate(texts)}
        write_beir(tmp_path / name, BeirDataset(corpus=corpus, queries={}, qrels={}))
    index = tmp_path / "idx"
    ShardedIndex.build(encoder, iter_corpus(tmp_path / "old"), index, shard_size=2)
    old = _search(index, encoder)
    args = ["index", "--retriever", retriever, "--corpus", tmp_path / "new" / "corpus.jsonl", "--output", index, "--shard-size", "2"]
    for point in ("index:shard#2", "index:generation"):  # two new shards written / the new generation in place
        run = _revela(*args, fault=point)
        assert run.returncode == KILLED, run.stderr[-2000:]
        assert _search(index, encoder) == old
    run = _revela(*args)
    assert run.returncode == 0, run.stderr[-2000:]
    ShardedIndex.build(encoder, iter_corpus(tmp_path / "new"), tmp_path / "reference", shard_size=2)
    assert _search(index, encoder) == _search(tmp_path / "reference", encoder) != old
    generation = json.loads((index / "index.json").read_text())["generation"]
    assert sorted(os.listdir(index)) == [generation, "index.json"]


def _adapter(folder: Path) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_train_killed_during_a_checkpoint_or_the_final_save_resumes_to_the_same_weights(tmp_path):
    lm, data = tiny_causal_lm(tmp_path / "lm"), tiny_groups(tmp_path / "data")
    args = ["train", "--data", data, "--lm", lm, "--max-steps", "2", "--save-steps", "1", "--max-length", "16",
            "--inbatch-layers", "all", "--lora-r", "4"]
    reference = tmp_path / "reference"
    assert _revela(*args, "--output", reference).returncode == 0
    expected = _adapter(reference / "retriever")
    assert _same(expected, _adapter(reference / "checkpoint-2" / "retriever"))

    # killed while writing checkpoint-2 (checkpoint-1 complete: the reference's, so both share one start):
    # while its retriever is written, and after it (before the optimizer and trainer state)
    for point in ("publish:built#1", "trainer:saved#1"):
        mid = tmp_path / point.replace(":", "-").replace("#", "-")
        shutil.copytree(reference / "checkpoint-1", mid / "checkpoint-1")
        assert _revela(*args, "--output", mid, fault=point).returncode == KILLED
        assert (mid / "checkpoint-2").is_dir() and not (mid / "checkpoint-2" / "trainer_state.json").exists()
        rerun = _revela(*args, "--output", mid)
        assert rerun.returncode == 0 and f"skipping the checkpoint {mid / 'checkpoint-2'}" in rerun.stderr, rerun.stderr[-2000:]
        assert _same(_adapter(mid / "retriever"), expected) and not (mid / "checkpoint-3").exists(), point

    # killed while writing the final retriever (saves: checkpoint-1, checkpoint-2, final)
    final = tmp_path / "final-save"
    assert _revela(*args, "--output", final, fault="publish:built#3").returncode == KILLED
    assert not (final / "retriever").exists()
    rerun = _revela(*args, "--output", final)
    assert rerun.returncode == 0 and "saving its final retriever" in rerun.stderr, rerun.stderr[-2000:]
    assert _same(_adapter(final / "retriever"), _adapter(final / "checkpoint-2" / "retriever"))
    assert not (final / "checkpoint-3").exists() and is_ours(final / "retriever")
