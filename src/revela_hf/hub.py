"""Publishing a retriever folder: sentence-transformers files, EOS-appending tokenizers, Hub I/O.

A published Revela retriever folder loads four ways: `RevelaRetriever.from_pretrained`,
`AutoModel.from_pretrained` (transformers' PEFT integration: base model + adapter),
`PeftModel.from_pretrained(base, folder)` and `SentenceTransformer(folder)`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import HfApi, snapshot_download
from transformers import PreTrainedTokenizerBase

from revela_hf.io import MARKER, write_json_atomically

if TYPE_CHECKING:
    import torch

ST_POOLING = {"eos": ("lasttoken",), "last": ("lasttoken",), "mean": ("mean",), "cls": ("cls",), "mean+eos": ("mean", "lasttoken")}
HUB_PREFIX = "hf://"  # names the Hub explicitly: hf://user/name
OFFICIAL_REVELA_SETTINGS = {"pooling": "eos", "query_prefix": "query: ", "passage_prefix": "passage: ", "normalize": True}


def resolve_model_dir(name_or_path: str | Path, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as is; a Hub repo id is downloaded with `snapshot_download` (logged on stderr).

    `hf://user/name` asks for the Hub explicitly. A missing name that looks like a local path is an
    error, never a download: see `_local_looking`.
    """
    name = str(name_or_path)
    if name.startswith(HUB_PREFIX):
        return Path(snapshot_download(repo_id=name[len(HUB_PREFIX):], revision=revision, token=token))
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{name} is a file, not a model folder")
    reason = _local_looking(name)
    if reason:
        raise FileNotFoundError(f"no model folder at {name} ({reason}); check the path, or write {HUB_PREFIX}{name} "
                                "to download the Hub repo of that name")
    print(f"[revela-hf] {name} is not a local folder: downloading the Hub repo {name}", file=sys.stderr, flush=True)
    return Path(snapshot_download(repo_id=name, revision=revision, token=token))


def _local_looking(name: str) -> str | None:
    """Why a name that is not an existing folder must be a local path, not a Hub repo id (None if it may be one)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/"):
        return "a path, not a Hub repo id"
    if name.count("/") > 1:
        return "more than one '/': a path, not a Hub repo id"
    first = name.split("/")[0]
    if "/" in name and Path(first).is_dir():
        return f"{first}/ is a local folder, so this is a path inside it"
    return None


def model_reference(name_or_path: str | Path) -> str:
    """What to record so that a model is found again from any directory: an absolute path for a local folder, else the id."""
    path = Path(str(name_or_path)).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name_or_path)


def push_folder(folder: str | Path, repo_id: str, private: bool | None = None, token: str | None = None, commit_message: str = "Upload Revela retriever", revision: str | None = None) -> str:
    """Create `repo_id` if needed and upload `folder` to it; returns the commit URL. The folder's completion marker
    (local bookkeeping, with the time it was written) stays behind, so uploading the same files again commits nothing."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message, revision=revision,
                             ignore_patterns=[MARKER])
    return info.commit_url


def appends_eos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer itself ends every encoding with its EOS token."""
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def eos_appending_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy of a fast tokenizer whose post-processor also appends EOS (so any library pools the EOS state).

    Special tokens the tokenizer already adds around the text (e.g. a BOS) are kept.
    """
    if appends_eos(tokenizer):
        return tokenizer
    if not getattr(tokenizer, "is_fast", False) or tokenizer.eos_token is None:
        raise ValueError("appending EOS through the tokenizer needs a fast tokenizer with an EOS token")
    from tokenizers import processors

    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain)
    before = tokenizer.convert_ids_to_tokens(full[:start])
    after = tokenizer.convert_ids_to_tokens(full[start + len(plain) :]) + [tokenizer.eos_token]
    single = " ".join([*(f"{t}:0" for t in before), "$A:0", *(f"{t}:0" for t in after)])
    pair = " ".join([single, *(f"{t}:1" for t in before), "$B:1", *(f"{t}:1" for t in after)])
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in [*before, *after]}
    result = copy.deepcopy(tokenizer)
    result.backend_tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=list(special.items()))
    return result


def _add_module(root: Path, modules: list[dict[str, Any]], kind: str) -> Path:
    """Append a stock module of `kind` (e.g. "Pooling") to `modules` and make its folder, `{idx}_{kind}`."""
    path = f"{len(modules)}_{kind}"
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": path, "type": f"sentence_transformers.models.{kind}"})
    (root / path).mkdir(parents=True, exist_ok=True)
    return root / path


def _write_dense(folder: Path, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """A `Dense` module's files: `x -> weight @ x + bias`, `weight` `(out, in)`, no activation."""
    from safetensors.torch import save_file

    out_features, in_features = weight.shape
    write_json_atomically(folder / "config.json", {"in_features": in_features, "out_features": out_features, "bias": True,
                                                   "activation_function": "torch.nn.modules.linear.Identity"})
    save_file({"linear.weight": weight.contiguous(), "linear.bias": bias.contiguous()}, str(folder / "model.safetensors"))


def write_sentence_transformers_files(
    folder: str | Path, settings: dict[str, Any], embedding_dim: int, base_config: dict[str, Any] | None = None,
    token_weights: torch.Tensor | None = None, eos_token_id: int | None = None,
) -> None:
    """modules.json, sentence_bert_config.json, the modules' folders and config_sentence_transformers.json.

    Written in the long-standing layout every sentence-transformers release reads: `Transformer`, `Pooling` and, for
    normalised embeddings, `Normalize`. With "eos" pooling the saved tokenizer appends EOS itself (see
    `eos_appending_tokenizer`). `base_config` (e.g. the depth of an adapter's base model) becomes the `config_args` the
    model config loads with. `token_weights` `(V,)` (SIF weights of the mean part) add a `WordWeights` module before the
    pooling, keyed by token id; since it scales every token's state, the last (EOS, `eos_token_id`) state too, a
    diagonal `Dense` after a pooling with an EOS part divides that part by the EOS token's weight again.
    """
    import torch

    root = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modes = ST_POOLING[settings["pooling"]]
    if token_weights is not None:
        weights = token_weights.detach().cpu().float().tolist()
        write_json_atomically(_add_module(root, modules, "WordWeights") / "config.json", {
            "vocab": [str(i) for i in range(len(weights))],  # token ids: WordWeights looks a token's weight up by its id
            "word_weights": {str(i): w for i, w in enumerate(weights) if w != 1.0},
            "unknown_word_weight": 1.0,
        })
    pooling = _add_module(root, modules, "Pooling")
    write_json_atomically(pooling / "config.json", {
        "word_embedding_dimension": embedding_dim,
        "pooling_mode_cls_token": "cls" in modes,
        "pooling_mode_mean_tokens": "mean" in modes,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": "lasttoken" in modes,
        "include_prompt": True,
    })
    if token_weights is not None and "lasttoken" in modes:
        if eos_token_id is None:
            raise ValueError("token weights with an EOS part need the EOS token's id to undo its weight on that part")
        part = modes.index("lasttoken")
        scale = torch.ones(len(modes) * embedding_dim)  # (P * E,) over the pooled parts side by side
        scale[part * embedding_dim : (part + 1) * embedding_dim] = 1.0 / token_weights[eos_token_id].item()
        _write_dense(_add_module(root, modules, "Dense"), torch.diag(scale), torch.zeros_like(scale))
    if settings["normalize"]:
        _add_module(root, modules, "Normalize")
    write_json_atomically(root / "modules.json", modules)
    sbert_config = {"max_seq_length": settings["max_length"], "do_lower_case": False}
    write_json_atomically(root / "sentence_bert_config.json", {**sbert_config, **({"config_args": base_config} if base_config else {})})
    write_json_atomically(root / "config_sentence_transformers.json", {
        "prompts": {"query": settings["query_prefix"], "document": settings["passage_prefix"]},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine" if settings["normalize"] else "dot",
    })


def sentence_transformers_modules(folder: str | Path) -> list[str] | None:
    """The class names of `folder`'s sentence-transformers modules in order (e.g. "Pooling"), or None where it ships none."""
    path = Path(folder) / "modules.json"
    return [m["type"].rsplit(".", 1)[1] for m in json.loads(path.read_text(encoding="utf-8"))] if path.is_file() else None


def append_sentence_transformers_projection(folder: str | Path, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """End `folder`'s sentence-transformers modules with `normalise(weight @ normalise(x) + bias)`: a `Normalize`
    (unless the modules already end with one), a `Dense` of `weight` `(E, E)` and `bias` `(E,)` with no activation,
    and a `Normalize`; the similarity becomes cosine. Stock modules only, so no loader needs `trust_remote_code`."""
    root = Path(folder)
    modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
    if not modules[-1]["type"].endswith(".Normalize"):
        _add_module(root, modules, "Normalize")
    _write_dense(_add_module(root, modules, "Dense"), weight, bias)
    _add_module(root, modules, "Normalize")
    write_json_atomically(root / "modules.json", modules)
    settings_path = root / "config_sentence_transformers.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    write_json_atomically(settings_path, {**settings, "similarity_fn_name": "cosine"})


def set_adapter_base_model(folder: str | Path, base_model: str) -> None:
    """Point a saved adapter at `base_model` (a Hub repo id), so loaders elsewhere can fetch it."""
    path = Path(folder) / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    write_json_atomically(path, config)
