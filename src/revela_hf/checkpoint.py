"""Adapter-only checkpoints: the trainable tensors of a model, and a check that they fit the model loaded into.

A checkpoint holds no copy of frozen weights (a frozen LM, the base weights under LoRA adapters):
those are rebuilt from the model folders the run names (`ModelSpec`, recorded in the checkpoint's
`config.json`), and `load_trainable_state` copies the trainable tensors into them. The file also
records the folders the frozen weights came from and a fingerprint of them, so a checkpoint loaded
into a model with other base weights fails with an error naming both.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from revela_hf.io import write_file_atomically

TRAINABLE_STATE = "revela_trainable.safetensors"
METADATA_KEY = "revela"
FINGERPRINT_SAMPLES = 16  # values read from each frozen tensor
SHOWN_NAMES = 3  # tensor names quoted in an error


class TrainableStateMismatchError(ValueError):
    """A checkpoint's trainable tensors do not fit the model they are loaded into."""


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} of every parameter of `model` that trains (requires grad)."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def frozen_fingerprint(model: nn.Module) -> str | None:
    """A digest of the frozen parameters: each one's name, shape and `FINGERPRINT_SAMPLES` evenly spaced
    values rounded to bfloat16 (so an fp32 copy and its bf16 cast agree). None where DeepSpeed ZeRO-3
    partitions them (no process holds them whole)."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        if hasattr(param, "ds_id"):
            return None
        flat = param.detach().reshape(-1)
        count = min(FINGERPRINT_SAMPLES, flat.numel())
        index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
        values = flat[index].to(device="cpu", dtype=torch.bfloat16).view(torch.int16)  # (count,)
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def base_folders(model: nn.Module) -> dict[str, str]:
    """The folders a RevelaForCausalLM's LM and retriever were loaded from (their configs' `name_or_path`)."""
    return {"lm": model.lm.config.name_or_path, "retriever": model.retriever.backbone.config.name_or_path}


def save_trainable_state(model: nn.Module, folder: str | Path) -> Path:
    """Write the trainable tensors of a RevelaForCausalLM to `folder/TRAINABLE_STATE` (atomically), with the
    folders of its frozen weights and their fingerprint in the file's metadata. Under ZeRO-3 the caller
    gathers the trainable parameters first."""
    tensors = {name: param.detach().to("cpu").contiguous() for name, param in trainable_parameters(model).items()}
    record = {**base_folders(model), "frozen_fingerprint": frozen_fingerprint(model)}
    payload = safetensors_bytes(tensors, metadata={"format": "pt", METADATA_KEY: json.dumps(record)})
    return write_file_atomically(Path(folder) / TRAINABLE_STATE, lambda handle: handle.write(payload), mode="wb")


def has_trainable_state(folder: str | Path) -> bool:
    """Whether `folder` is an adapter-only checkpoint (or final folder)."""
    return (Path(folder) / TRAINABLE_STATE).is_file()


def load_trainable_state(model: nn.Module, folder: str | Path) -> None:
    """Copy the trainable tensors saved in `folder` into `model` (a RevelaForCausalLM built from the same
    model folders and settings, not yet partitioned by ZeRO-3); TrainableStateMismatchError, naming the
    problem, when they do not fit (then nothing is copied)."""
    path = Path(folder) / TRAINABLE_STATE
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    params = trainable_parameters(model)
    _check_fits(path, tensors, record, model, params)
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def _check_fits(
    path: Path, tensors: dict[str, torch.Tensor], record: dict, model: nn.Module, params: dict[str, nn.Parameter]
) -> None:
    """Raise TrainableStateMismatchError unless `tensors` (saved at `path` with `record`) are exactly the
    trainable parameters `params` of `model`, with their shapes, saved over the same frozen weights."""
    folders = base_folders(model)
    origin = f"saved from LM {record.get('lm')!r} and retriever {record.get('retriever')!r}"
    here = f"this model has LM {folders['lm']!r} and retriever {folders['retriever']!r}"
    unexpected, missing = sorted(tensors.keys() - params.keys()), sorted(params.keys() - tensors.keys())
    if unexpected or missing:
        found = [f"{what}: {_names(names)}" for what, names in (("trained here but not saved", missing),
                                                                 ("saved but not trained here", unexpected)) if names]
        raise TrainableStateMismatchError(
            f"{path} does not hold this model's trainable parameters ({origin}; {here}): {'; '.join(found)}. "
            "Build the model with the settings the checkpoint was trained with (LoRA targets, freeze_lm, share_base)")
    wrong = {name: (tuple(t.shape), tuple(params[name].shape)) for name, t in tensors.items() if t.shape != params[name].shape}
    if wrong:
        cause = "with other LoRA ranks" if all(_rank_only(name, *shapes) for name, shapes in wrong.items()) else "on another base model"
        shown = [f"{name} {there} there, {mine} here" for name, (there, mine) in wrong.items()]
        raise TrainableStateMismatchError(f"{path} was trained {cause} ({origin}; {here}): {_names(shown)}")
    saved, current = record.get("frozen_fingerprint"), frozen_fingerprint(model)
    if saved and current and saved != current:
        raise TrainableStateMismatchError(
            f"{path} was trained over other frozen weights than this model's ({origin}; {here}): "
            "resume with the LM and retriever folders it was trained with")


def _rank_only(name: str, saved: tuple[int, ...], here: tuple[int, ...]) -> bool:
    """Whether two shapes of LoRA tensor `name` differ only in the rank (dim 0 of lora_A, dim 1 of lora_B)."""
    rank_dim = 0 if ".lora_A." in name else 1 if ".lora_B." in name else None
    return rank_dim is not None and all(a == b for dim, (a, b) in enumerate(zip(saved, here)) if dim != rank_dim)


def _names(items: list[str]) -> str:
    more = f" (+{len(items) - SHOWN_NAMES} more)" if len(items) > SHOWN_NAMES else ""
    return ", ".join(items[:SHOWN_NAMES]) + more
