"""RevelaTrainer on real multi-process engines: 2 CPU processes (torchrun, gloo) under DDP, DeepSpeed
ZeRO-2 and ZeRO-3 (+ LoRA). Each test launches this file as a torchrun worker; the worker writes what
it saw (step-1 inputs and loss per rank, gathered parameters, embeddings) and the test checks it
against single-process computations.

    torchrun --nproc_per_node 2 tests/test_distributed.py {ddp|zero2|zero3} OUT_DIR
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from conftest import tiny_llama_config, word_groups, word_tokenizer  # noqa: E402
from revela_hf import RevelaConfig, RevelaForCausalLM, RevelaRetriever  # noqa: E402
from revela_hf.checkpoint import TRAINABLE_STATE  # noqa: E402
from revela_hf.trainer import RETRIEVER_SUBFOLDER, RevelaTrainer, RevelaTrainingArguments  # noqa: E402

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "lora_dropout": 0.0}
PROBE_TEXTS = ["w1 w2 w3 w4", "w10 w11 w12", "w40 w41 w42 w43 w44 w45", "w7"]
MAX_STEPS = 2


def build_model(mode: str, out: Path, tok) -> RevelaForCausalLM:
    """Deterministic tiny model. zero3: LoRA on both models, retriever base read from `out/retriever_base`
    (written there by whoever builds it first) so the saved adapter can be reloaded on its base."""
    torch.manual_seed(0)
    if mode != "zero3":
        return RevelaForCausalLM(RevelaConfig(lm_config=tiny_llama_config(tok).to_dict(), temperature=0.5), retriever_tokenizer=tok)
    from transformers import LlamaForCausalLM, LlamaModel

    base_dir = out / "retriever_base"
    lm = LlamaForCausalLM(tiny_llama_config(tok))
    if not (base_dir / "config.json").is_file():
        LlamaModel(tiny_llama_config(tok)).save_pretrained(base_dir)
    base = LlamaModel.from_pretrained(str(base_dir))
    torch.manual_seed(1)
    return RevelaForCausalLM.from_parts(lm, base, lm_lora=LORA, retriever_lora=LORA, temperature=0.5, retriever_tokenizer=tok)


def dataset(n=4, B=4):
    from datasets import Dataset

    return Dataset.from_list(word_groups(n, B))


def deepspeed_config(stage: int) -> dict:
    return {
        # Persistence threshold 0: partition even the tiny test parameters (by default ZeRO-3 keeps
        # parameters under 1e5 elements whole on every rank, which would hide an empty-adapter save).
        "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True,
                              **({"stage3_param_persistence_threshold": 0} if stage == 3 else {})},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,  # the Trainer's torch AdamW (DeepSpeed's CPU Adam is not needed)
        "bf16": {"enabled": False},
    }


# ------------------------------------------------------------------------------------------ worker


def worker(mode: str, out: Path) -> None:
    from transformers import TrainerCallback

    rank = int(os.environ["RANK"])
    tok = word_tokenizer()
    model = build_model(mode, out, tok)  # the launcher wrote the zero3 retriever base beforehand

    class CaptureTrainer(RevelaTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            first = self.state.global_step == 0 and not hasattr(self, "_captured")
            saved = {k: v.detach().clone() for k, v in inputs.items()} if first else None
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if first:
                self._captured = True
                value = (loss[0] if return_outputs else loss).item()
                torch.save({"inputs": saved, "loss": value}, out / f"step1_rank{rank}.pt")
            return loss

        def log(self, logs, start_time=None):
            if "loss" in logs and self.state.global_step == 1 and rank == 0:
                (out / "logged_step1.json").write_text(json.dumps(logs))
            super().log(logs, start_time)

    class GatherOnSave(TrainerCallback):
        """At every checkpoint: the retriever's trainable (LoRA) parameters, gathered on all ranks."""

        def on_save(self, args, state, control, model=None, **kwargs):
            params = {n: p for n, p in model.retriever.backbone.named_parameters() if p.requires_grad}
            if args.deepspeed and any(hasattr(p, "ds_id") for p in params.values()):
                assert all(p.numel() == 0 for p in params.values()), "the parameters are partitioned on this rank"
            values = _gathered_copy(params)
            if rank == 0:
                torch.save(values, Path(args.output_dir) / f"checkpoint-{state.global_step}" / "gathered_retriever.pt")

    args = RevelaTrainingArguments(
        output_dir=str(out / "run"),
        max_steps=MAX_STEPS,
        save_steps=1,
        logging_steps=1,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        use_cpu=True,
        ddp_backend="gloo",
        deepspeed=deepspeed_config(2 if mode == "zero2" else 3) if mode.startswith("zero") else None,
        report_to=[],
        seed=0,
        max_length=12,
        retriever_max_length=16,
        save_only_model=mode != "zero2",
    )
    trainer = CaptureTrainer(model=model, args=args, train_dataset=dataset(), processing_class=tok,
                             callbacks=[GatherOnSave()])
    trainer.train()

    final = {n: p for n, p in trainer.model.named_parameters()}
    values = _gathered_copy(final)
    if rank == 0:
        torch.save(values, out / "final_params.pt")
    digest = sum(float(v.double().sum()) * (i + 1) for i, v in enumerate(values.values()))
    (out / f"digest_rank{rank}.json").write_text(json.dumps({"digest": digest}))
    retriever = trainer.model.retriever
    with torch.no_grad():
        embeddings = retriever.encode(PROBE_TEXTS, show_progress_bar=False) if mode != "zero3" else None
    if mode == "zero3":  # under ZeRO-3 the forward gathers each module's shards itself (all ranks take part)
        batch = retriever.tokenize(PROBE_TEXTS, prefix=retriever.passage_prefix)
        with torch.no_grad():
            embeddings = trainer.model_wrapped.module.retriever(batch["input_ids"], batch["attention_mask"])
    if rank == 0:
        torch.save(embeddings, out / "final_embeddings.pt")
    torch.distributed.barrier()


def _gathered_copy(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Full-size copies of `params` (ZeRO-3 shards are gathered; a collective call on every rank)."""
    if any(hasattr(p, "ds_id") for p in params.values()):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
            return {n: p.detach().clone() for n, p in params.items()}
    return {n: p.detach().clone() for n, p in params.items()}


# ------------------------------------------------------------------------------------------ tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def extensions_dir(tmp_path_factory) -> Path:
    """DeepSpeed JIT-builds its shared-memory allreduce op into TORCH_EXTENSIONS_DIR behind a lock file;
    a build killed half-way leaves the lock, and every later build in that folder waits on it forever
    (CI hung 3 x 600 s on a stale one in ~/.cache). Each test session builds into a folder of its own."""
    return tmp_path_factory.mktemp("torch_extensions")


def _launch_env(extensions_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_DISABLED": "true",
            "TORCH_EXTENSIONS_DIR": str(extensions_dir)}


def torchrun(args: list[str], log_dir: Path, extensions_dir: Path) -> None:
    """2 CPU processes under torchrun; each rank's output goes to its own file under `log_dir`, and a
    failure reports every rank's last lines (rank 0 alone only says its peer went away)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "--log-dir", str(log_dir), "--redirects", "3", *args]
    proc = subprocess.run(cmd, env=_launch_env(extensions_dir), capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        ranks = "\n".join(f"--- {f.relative_to(log_dir)}:\n{f.read_text()[-3000:]}" for f in sorted(log_dir.rglob("std*.log")))
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{ranks}\n--- torchrun:\n{proc.stderr[-3000:]}")


def launch(mode: str, out: Path, extensions_dir: Path) -> None:
    if mode == "zero3":
        build_model(mode, out, word_tokenizer())  # writes the retriever base the workers (and the adapter) refer to
    torchrun([__file__, mode, str(out)], out / "logs", extensions_dir)


def single_process_loss(mode: str, out: Path, inputs: dict) -> float:
    model = build_model(mode, out, word_tokenizer()).train()
    inputs = dict(inputs)
    inputs.pop("same_document", None)
    with torch.no_grad():
        return model(**inputs).loss.item()


def check_step1_losses(mode: str, out: Path) -> list[float]:
    """Each rank's step-1 loss equals a single-process forward on that rank's group; the ranks saw different groups."""
    seen = [torch.load(out / f"step1_rank{r}.pt") for r in range(2)]
    assert not torch.equal(seen[0]["inputs"]["input_ids"], seen[1]["inputs"]["input_ids"]), "each rank gets its own group"
    for record in seen:
        assert record["loss"] == pytest.approx(single_process_loss(mode, out, record["inputs"]), rel=1e-5, abs=1e-6)
    logged = json.loads((out / "logged_step1.json").read_text())["loss"]
    assert logged == pytest.approx(sum(r["loss"] for r in seen) / 2, rel=1e-3), "the logged loss is the mean over ranks"
    return [r["loss"] for r in seen]


def check_ranks_agree(out: Path) -> None:
    digests = [json.loads((out / f"digest_rank{r}.json").read_text())["digest"] for r in range(2)]
    assert digests[0] == pytest.approx(digests[1], rel=1e-6), "both ranks hold the same weights after training"


EXITING_SCRIPT = """
import atexit, threading, time
from revela_hf.distributed import exit_launched_process
atexit.register(print, "first registered")
atexit.register(print, "last registered")
threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
print("buffered", end="")
exit_launched_process(3)
"""


def test_exit_launched_process_does_what_an_exit_does_before_finalising():
    """Without finalising the interpreter, what a normal exit does before that still happens: a non-daemon thread
    finishes, atexit handlers run (the last registered first), buffered output reaches the pipe; the code is kept."""
    proc = subprocess.run([sys.executable, "-c", EXITING_SCRIPT], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "bufferedthread done\nlast registered\nfirst registered\n"


@pytest.mark.slow
def test_ddp_two_processes(tmp_path, extensions_dir):
    launch("ddp", tmp_path, extensions_dir)
    check_step1_losses("ddp", tmp_path)
    check_ranks_agree(tmp_path)
    final = torch.load(tmp_path / "final_params.pt")
    start = build_model("ddp", tmp_path, word_tokenizer()).state_dict()
    assert any(not torch.equal(final[n], start[n]) for n in final), "training changed the weights"
    check_reloaded_retriever(tmp_path / "run" / f"checkpoint-{MAX_STEPS}", tmp_path)


def check_reloaded_retriever(checkpoint: Path, out: Path) -> None:
    """The checkpoint's retriever/ folder reloads to the embeddings the trained model gave."""
    retriever = RevelaRetriever.from_pretrained(str(checkpoint / RETRIEVER_SUBFOLDER))
    emb = retriever.encode(PROBE_TEXTS, show_progress_bar=False)
    torch.testing.assert_close(emb, torch.load(out / "final_embeddings.pt"), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_deepspeed_zero2_two_processes(tmp_path, extensions_dir):
    pytest.importorskip("deepspeed")
    launch("zero2", tmp_path, extensions_dir)
    check_step1_losses("zero2", tmp_path)
    check_ranks_agree(tmp_path)
    ckpt = tmp_path / "run" / f"checkpoint-{MAX_STEPS}"
    assert any(p.name.startswith("global_step") for p in ckpt.iterdir()), "DeepSpeed engine state is in the checkpoint"
    check_reloaded_retriever(ckpt, tmp_path)


@pytest.mark.slow
def test_deepspeed_zero3_lora_saves_complete_retriever_adapters(tmp_path, extensions_dir):
    pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    launch("zero3", tmp_path, extensions_dir)
    check_step1_losses("zero3", tmp_path)
    check_ranks_agree(tmp_path)
    model = build_model("zero3", tmp_path, word_tokenizer())
    expected_shapes = {n: p.shape for n, p in model.retriever.backbone.named_parameters() if p.requires_grad}
    assert expected_shapes and all("lora_" in n for n in expected_shapes)
    for step in range(1, MAX_STEPS + 1):
        ckpt = tmp_path / "run" / f"checkpoint-{step}"
        saved = load_file(ckpt / RETRIEVER_SUBFOLDER / "adapter_model.safetensors")
        gathered = torch.load(ckpt / "gathered_retriever.pt")
        assert len(saved) == len(gathered) == len(expected_shapes)
        for name, value in gathered.items():
            key = next(k for k in saved if k.endswith(name.replace(".default", "")))
            assert saved[key].numel() > 0, f"{key} was saved empty"
            assert saved[key].shape == expected_shapes[name] == value.shape
            torch.testing.assert_close(saved[key], value, atol=0, rtol=0)
        trainable = load_file(ckpt / TRAINABLE_STATE)  # both models' LoRA tensors, gathered; no frozen weight
        assert trainable.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
        assert all(v.numel() > 0 for v in trainable.values()) and not (ckpt / "model.safetensors").exists()
        for name, value in gathered.items():
            torch.testing.assert_close(trainable[f"retriever.backbone.{name}"], value, atol=0, rtol=0)
    final_params = torch.load(tmp_path / "final_params.pt")
    last = load_file(tmp_path / "run" / f"checkpoint-{MAX_STEPS}" / TRAINABLE_STATE)
    for name, value in last.items():
        torch.testing.assert_close(value, final_params[name], atol=0, rtol=0)
    retriever = RevelaRetriever.from_pretrained(str(tmp_path / "run" / f"checkpoint-{MAX_STEPS}" / RETRIEVER_SUBFOLDER))
    batch = retriever.tokenize(PROBE_TEXTS, prefix=retriever.passage_prefix)
    with torch.no_grad():
        emb = retriever(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(emb, torch.load(tmp_path / "final_embeddings.pt"), atol=1e-5, rtol=1e-5)
    # The adapter trained: it differs from the one built at step 0.
    start = {n: p for n, p in model.retriever.backbone.named_parameters() if p.requires_grad}
    final = torch.load(tmp_path / "run" / f"checkpoint-{MAX_STEPS}" / "gathered_retriever.pt")
    assert any(not torch.equal(final[n], start[n]) for n in final)


@pytest.mark.slow
def test_revela_train_runs_the_paper_zero3_recipe(tmp_path, extensions_dir):
    """`revela train --config examples/paper_recipe.yaml` (bf16, ZeRO-3 with "auto" buckets, LoRA on both
    models) as 2 CPU processes under torchrun, tiny models: one lock for the launch, complete retriever
    adapters in the final folder and the checkpoint, reloadable."""
    pytest.importorskip("deepspeed")
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM, LlamaModel

    tok = word_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tok)).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    LlamaModel(tiny_llama_config(tok)).save_pretrained(tmp_path / "retriever")
    dataset(4).save_to_disk(str(tmp_path / "data"))
    recipe = json.loads((ROOT / "examples" / "zero3_paper_recipe.json").read_text())
    assert recipe["zero_optimization"]["stage"] == 3 and recipe["zero_optimization"]["reduce_bucket_size"] == "auto"
    command = ["-m", "revela_hf.cli", "train", "--config", str(ROOT / "examples" / "paper_recipe.yaml"),
               "--deepspeed", str(ROOT / "examples" / "zero3_paper_recipe.json"), "--use_cpu", "--ddp_backend", "gloo",
               "--data", str(tmp_path / "data"), "--lm", str(tmp_path / "lm"), "--retriever", str(tmp_path / "retriever"),
               "--output_dir", str(tmp_path / "run"), "--lora_r", "8", "--lm_lora_r", "8", "--lora_alpha", "16",
               "--max_steps", "2", "--gradient_accumulation_steps", "2", "--warmup_steps", "1", "--save_steps", "2",
               "--report_to", "none"]
    torchrun(command, tmp_path / "logs", extensions_dir)
    for folder in (tmp_path / "run" / RETRIEVER_SUBFOLDER, tmp_path / "run" / "checkpoint-2" / RETRIEVER_SUBFOLDER):
        saved = load_file(folder / "adapter_model.safetensors")
        assert len(saved) == 2 * 7 * 2  # lora_A and lora_B on 7 projections of 2 layers
        for key, value in saved.items():
            assert value.numel() > 0 and value.shape[0 if "lora_A" in key else 1] == 8, key
        emb = RevelaRetriever.from_pretrained(str(folder)).encode(PROBE_TEXTS, show_progress_bar=False)
        assert emb.shape == (len(PROBE_TEXTS), 32) and torch.isfinite(emb).all()
    config = json.loads((tmp_path / "run" / RETRIEVER_SUBFOLDER / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (8, 16, 0.1)  # the recipe's dropout


@pytest.mark.slow
def test_revela_train_runs_under_accelerate_launch(tmp_path, extensions_dir):
    """`accelerate launch --multi_gpu --num_processes 2 -m revela_hf.cli train --use_cpu ...` (accelerate's torchrun
    launcher; its `--cpu` launcher runs one process and expects MPI for more): two real processes train one run
    (each step takes a group per process, so 2 steps cover 4 groups: one epoch), and the final retriever reloads."""
    from transformers import LlamaForCausalLM

    tok = word_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tok)).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    dataset(4).save_to_disk(str(tmp_path / "data"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               "-m", "revela_hf.cli", "train", "--data", str(tmp_path / "data"), "--lm", str(tmp_path / "lm"),
               "--output_dir", str(tmp_path / "run"), "--retriever_layers", "1", "--lora_r", "4", "--max_steps", "2",
               "--inbatch_layers", "-1", "--save_steps", "2", "--report_to", "none", "--use_cpu", "--ddp_backend", "gloo"]
    proc = subprocess.run(command, env=_launch_env(extensions_dir), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(1.0), "two processes shared the 4 groups"
    emb = RevelaRetriever.from_pretrained(str(tmp_path / "run" / RETRIEVER_SUBFOLDER)).encode(PROBE_TEXTS, show_progress_bar=False)
    assert emb.shape[0] == len(PROBE_TEXTS) and torch.isfinite(emb).all()


if __name__ == "__main__":
    from revela_hf.distributed import exit_launched_process

    worker(sys.argv[1], Path(sys.argv[2]))
    exit_launched_process(0)
