"""`revela prepare` then `revela train` as real subprocesses on a cut SmolLM2 (2 layers, its real
tokenizer), then the trained retriever loaded with `RevelaRetriever.from_pretrained` encodes text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from revela_hf.demo.assets import smollm2_path
from revela_hf.retriever import RevelaRetriever

# A few stdlib modules with docstrings and functions: enough chunks for several groups of 4.
STDLIB_FILES = [Path(textwrap.__file__), Path(json.__file__).with_name("decoder.py"), Path(os.path.__file__)]


def _cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-m", "revela_hf.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"revela {args[0]} exited {run.returncode}\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run


@pytest.fixture(scope="module")
def tiny_lm() -> str:
    return smollm2_path(num_hidden_layers=2)


def test_prepare_then_train_then_load(tmp_path, tiny_lm):
    data, run_dir = tmp_path / "groups", tmp_path / "run"
    _cli("prepare", *map(str, STDLIB_FILES), "--output", str(data), "--group-size", "4", "--strategy", "bm25",
         "--max-tokens", "64", "--tokenizer", tiny_lm, "--no-progress")
    groups = load_from_disk(str(data))
    assert len(groups) >= 2 and all(len(chunks) == 4 for chunks in groups["chunks"])

    train = _cli("train", "--data", str(data), "--lm", tiny_lm, "--output", str(run_dir), "--max-steps", "2",
                 "--save-steps", "1", "--max-length", "64", "--inbatch-layers", "all", "--lora-r", "4")
    assert "retriever saved to" in train.stdout
    assert "restarting with GLIBC_TUNABLES" in train.stderr  # a training command from the command line
    assert (run_dir / "checkpoint-2" / "retriever").is_dir()
    state = json.loads((run_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in state["log_history"] if "loss" in entry)

    retriever = RevelaRetriever.from_pretrained(str(run_dir / "retriever"))
    assert retriever.pooling == "eos" and getattr(retriever.backbone, "_hf_peft_config_loaded", False)
    texts = ["def wrap(text, width): split text into lines of at most width characters", "parse a JSON document"]
    emb = retriever.encode_queries(texts, show_progress_bar=False)
    assert emb.shape == (2, retriever.backbone.config.hidden_size) and torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    # the trained adapter is not a no-op: it moves the embedding away from the bare backbone's
    bare = RevelaRetriever.from_backbone(tiny_lm, **retriever.settings()).encode_queries(texts, show_progress_bar=False)
    assert (emb - bare).abs().max() > 1e-6

    # DREAM on the same prepared groups: its rows are built from them; its LM heads in the top layer.
    dream_dir = tmp_path / "dream"
    _cli("train", "--data", str(data), "--lm", tiny_lm, "--output", str(dream_dir), "--max-steps", "1", "--max-length", "64",
         "--objective", "dream", "--inbatch-layers", "-1", "--lora-r", "4")
    config = json.loads((dream_dir / "config.json").read_text())
    assert config["objective"] == "dream" and config["objective_settings"]["layers"] == [-1]
    assert "| objective | `dream` |" in (dream_dir / "retriever" / "README.md").read_text()
