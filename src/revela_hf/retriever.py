"""`RevelaRetriever`: a transformers backbone plus pooling, prefixes and normalisation."""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from revela_hf.dependency_versions import import_optional
from revela_hf.hub import (
    OFFICIAL_REVELA_SETTINGS,
    appends_eos,
    eos_appending_tokenizer,
    push_folder,
    resolve_model_dir,
    set_adapter_base_model,
    sentence_transformers_modules,
    write_sentence_transformers_files,
)
from revela_hf.io import IncompleteOutputError, absolute, publishing
from revela_hf.model_card import CardInfo, load_card_info, render_model_card, save_card_info
from revela_hf.all_but_the_top import PROJECTION_FILE, AllButTheTop
from revela_hf.pooling import check_pooling, pool, pooled_width, pooling_appends_eos, require_mean_part
from revela_hf.defaults import SIF_A
from revela_hf.token_weights import load_token_weights, save_token_weights, sif_weights

SETTINGS_FILE = "revela_retriever.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
RETRIEVER_KIND = "retriever"
ONNX_KIND = "onnx export"
ONNX_FILE = "model.onnx"
REQUIRED_OVERRIDES = frozenset({"pooling", "query_prefix", "passage_prefix"})  # what loading a bare adapter needs
BASE_CONFIG_KEY = "base_config"  # in SETTINGS_FILE: the config values an adapter's base model loads with (its depth)
ENCODE_WINDOW_BATCHES = 64  # `encode` tokenises and length-sorts this many batches of texts at a time
DEFAULT_MAX_LENGTH = 512  # tokens per text, when a folder records none


class RevelaRetriever(nn.Module):
    r"""A dense retriever: a transformers base model whose pooled, optionally L2-normalised hidden states embed text.

    Queries and passages are encoded with their own text prefix, and a query's score for a passage is the dot
    product of their embeddings (their cosine, with `normalize=True`). Decoder backbones use `"eos"` pooling: an
    EOS token is appended to every text and its final hidden state is the embedding (RepLLaMA style); encoder
    backbones use `"mean"` or `"cls"`. This is the retriever a [`RevelaForCausalLM`] trains (`model.retriever`), and
    what [`RevelaRetriever.save_pretrained`] writes: a folder that revela-hf, transformers (with peft for an
    adapter) and sentence-transformers all load.

    Args:
        backbone ([`PreTrainedModel`]):
            The base model (without a head, e.g. a `LlamaModel`) that encodes the texts; it may carry a PEFT adapter.
        tokenizer ([`PreTrainedTokenizerBase`], *optional*):
            Tokenizer of the backbone. Needed to encode text; without one the retriever only embeds token ids (its
            `forward`). For `"eos"` pooling it must have an EOS token.
        pooling (`str`, *optional*, defaults to `"eos"`):
            How the `(N, L, E)` hidden states become `(N, E)` embeddings: `"eos"` or `"last"` take the last real
            token (with `"eos"`, [`RevelaRetriever.encode`] appends EOS to every text), `"mean"` averages the real
            tokens, `"cls"` takes the first position.
        query_prefix (`str`, *optional*, defaults to `"Query: "`):
            Text put before every query by [`RevelaRetriever.encode_queries`].
        passage_prefix (`str`, *optional*, defaults to `"Passage: "`):
            Text put before every passage by [`RevelaRetriever.encode_corpus`].
        normalize (`bool`, *optional*, defaults to `True`):
            Whether to L2-normalise the embeddings.
        max_length (`int`, *optional*, defaults to 512):
            Longest input in tokens, prefix and EOS included; longer texts are truncated (keeping the EOS).
        projection ([`AllButTheTop`], *optional*):
            Post-processing applied to every embedding after pooling (`revela project`,
            `revela_hf.search.projection`); its output is L2-normalised whatever `normalize` says. Saved and loaded
            with the folder.
        token_weights (`torch.Tensor`, *optional*):
            `(vocab_size,)` weights of the tokens in the mean-pooled part (SIF weights, `revela_hf.token_weights`;
            `revela project --token-weights`); saved and loaded with the folder. Needs a pooling with a mean part.
        mean_from_base (`bool`, *optional*, defaults to `False`):
            Whether the mean-pooled part reads the backbone with its adapter switched off (the base model's states,
            a second forward pass) while the other parts read the adapted backbone: Revela trains the EOS state,
            and its adapter makes the base model's mean-pooled states worse (README, "Yardstick suite").

    Example:

    ```python
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast
    >>> from revela_hf import RevelaRetriever

    >>> words = "[PAD] [UNK] [EOS] Query: Passage: the cat sat on a mat dog ran in park".split()
    >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    >>> backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    >>> tokenizer = PreTrainedTokenizerFast(
    ...     tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    ... )
    >>> config = LlamaConfig(
    ...     vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...     num_attention_heads=4, pad_token_id=0, bos_token_id=None, eos_token_id=2,
    ... )
    >>> retriever = RevelaRetriever(LlamaModel(config), tokenizer)

    >>> queries = retriever.encode_queries(["where is the cat"], show_progress_bar=False)
    >>> passages = retriever.encode_corpus(["the cat sat on a mat", "a dog ran in the park"], show_progress_bar=False)
    >>> scores = queries @ passages.T  # (queries, passages) cosine similarities
    >>> scores.shape
    torch.Size([1, 2])

    ```
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        pooling: str = "eos",
        query_prefix: str = "Query: ",
        passage_prefix: str = "Passage: ",
        normalize: bool = True,
        max_length: int = DEFAULT_MAX_LENGTH,
        projection: AllButTheTop | None = None,
        token_weights: torch.Tensor | None = None,
        mean_from_base: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = check_pooling(pooling)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.normalize = normalize
        self.max_length = max_length
        self.projection = projection
        if token_weights is not None or mean_from_base:
            require_mean_part(self.pooling, "token weights and mean_from_base weigh or re-read")
        vocab = backbone.get_input_embeddings().num_embeddings
        if token_weights is not None and tuple(token_weights.shape) != (vocab,):
            raise ValueError(f"token weights must hold one weight per token of the backbone's {vocab}, got shape {tuple(token_weights.shape)}")
        self.register_buffer("token_weights", token_weights, persistent=False)  # (V,) or None
        self.mean_from_base = mean_from_base
        self.card: CardInfo | None = None  # how it was trained and scored, kept across loads and saves

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        backbone: str | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        lora: Any | None = None,
        **settings: Any,
    ) -> "RevelaRetriever":
        """Build from a model folder or an instantiated model; `lora` is a `peft.LoraConfig` to inject.
        A sentence-transformers folder lends its `max_seq_length` as the default `max_length`."""
        if isinstance(backbone, str):
            st_config = Path(backbone) / "sentence_bert_config.json"
            if st_config.is_file() and "max_length" not in settings:
                settings["max_length"] = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length", 512)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(backbone)
            backbone = AutoModel.from_pretrained(backbone)
        backbone = base_model_of(backbone)
        if lora is not None:
            backbone.add_adapter(lora)
        return cls(backbone, tokenizer, **settings)

    def with_default_tokenizer(self, tokenizer: PreTrainedTokenizerBase | None) -> RevelaRetriever:
        """This retriever, or where it holds no tokenizer (one cut from an LM reads the LM's tokens) a view of it, the
        same modules and weights, that reads with `tokenizer`. `self` is left as it is: the trainer and its callbacks
        encode with what the model was built with."""
        if self.tokenizer is not None or tokenizer is None:
            return self
        view = copy.copy(self)
        view.tokenizer = tokenizer
        return view

    def settings(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "mean_from_base": self.mean_from_base,
        }

    def save_pretrained(
        self,
        save_directory: str,
        repo_id: str | None = None,
        base_model: str | None = None,
        card: CardInfo | None = None,
        merge_lora: bool = False,
    ) -> None:
        r"""Save the retriever to a folder that [`RevelaRetriever.from_pretrained`], transformers and
        sentence-transformers all load (see `revela_hf.hub`).

        The folder holds the backbone (only its adapter when a LoRA adapter is attached), the tokenizer (for a fast
        tokenizer and `"eos"` pooling, one that appends EOS itself, so other loaders embed the same tokens),
        the settings in `revela_retriever.json`, the sentence-transformers files and a `README.md` model card. It
        appears complete or not at all (`revela_hf.io`): it is built next to `save_directory` and moved into place
        at the end.

        Args:
            save_directory (`str`):
                Folder to write. An existing one is replaced only if it is empty or is a retriever folder revela-hf
                wrote; anything else raises `OutputExistsError`.
            repo_id (`str`, *optional*):
                Name the model card is headed with and loads from. Defaults to the folder's name.
            base_model (`str`, *optional*):
                Hub id of the backbone's base model, written in place of the (possibly local) path recorded in the
                adapter config and the model card, so that an adapter can find its base model anywhere.
            card (`revela_hf.model_card.CardInfo`, *optional*):
                How the retriever was trained and scored, for the model card; also kept in `revela_card.json`.
                Defaults to the card the retriever was loaded with, if any.
            merge_lora (`bool`, *optional*, defaults to `False`):
                Whether to merge an attached adapter into a copy of the backbone and write those full weights instead
                of the adapter, so the folder loads without peft. The retriever itself keeps its adapter.

        Example (`retriever` as built in the [`RevelaRetriever`] example):

        ```python
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     retriever.save_pretrained(folder)
        ...     reloaded = RevelaRetriever.from_pretrained(folder)
        >>> reloaded.settings() == retriever.settings()
        True

        ```
        """
        target = Path(save_directory)
        with publishing(target, RETRIEVER_KIND, overwrite=True) as folder:
            self._write_folder(folder, repo_id or absolute(target).name, base_model, card or self.card, merge_lora)

    def _write_folder(self, folder: Path, name: str, base_model: str | None, card: CardInfo | None, merge_lora: bool) -> None:
        """The files of `save_pretrained` in `folder`; `name` heads the model card."""
        if merge_lora and self.mean_from_base:
            raise ValueError("this retriever reads its mean half from the base model under its adapter (mean_from_base): merging the adapter would lose that base")
        backbone = merged_backbone(self.backbone) if merge_lora and has_adapter(self.backbone) else self.backbone
        backbone.save_pretrained(folder)
        is_adapter = (folder / ADAPTER_CONFIG).is_file()
        if is_adapter and base_model is not None:
            set_adapter_base_model(folder, base_model)
        base_config = adapter_base_config(self.backbone.config) if is_adapter else {}
        if self.tokenizer is not None:
            tokenizer = self.tokenizer
            if pooling_appends_eos(self.pooling) and getattr(tokenizer, "is_fast", False):
                tokenizer = eos_appending_tokenizer(tokenizer)
            tokenizer.save_pretrained(folder)
        recorded = {**self.settings(), **({BASE_CONFIG_KEY: base_config} if base_config else {})}
        (folder / SETTINGS_FILE).write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")
        dim = self.backbone.config.hidden_size
        if not self.mean_from_base:  # no stock sentence-transformers module reads the base model under the adapter
            eos_token_id = self.tokenizer.eos_token_id if self.tokenizer is not None else None
            write_sentence_transformers_files(folder, self.settings(), dim, base_config, self.token_weights, eos_token_id)
        if self.token_weights is not None:
            save_token_weights(folder, self.token_weights)
        if self.projection is not None:
            self.projection.save(folder)  # after the sentence-transformers modules it ends
        base = base_model or (card.base_model if card else None) or self.backbone.config.name_or_path
        directions = len(self.projection.directions) if self.projection is not None else None
        card_text = render_model_card(name, self.settings(), base, backbone, is_adapter, card, base_config, directions,
                                      token_weights=self.token_weights is not None, st_modules=sentence_transformers_modules(folder))
        (folder / "README.md").write_text(card_text, encoding="utf-8")
        if card is not None:
            save_card_info(folder, card)

    def export_onnx(self, save_directory: str, overwrite: bool = False, opset_version: int = 18) -> Path:
        r"""Export the retriever as one ONNX graph: the backbone (an attached LoRA adapter merged in, on a copy), the
        pooling and the normalisation, so that onnxruntime turns token ids into the embeddings of
        [`RevelaRetriever.encode`] (tested to 1e-4) without torch, transformers or peft.

        The folder holds `model.onnx` (inputs `input_ids` and `attention_mask`, int64 `(batch, sequence)` of any
        sizes, right-padded as [`RevelaRetriever.encode`] pads; output `embeddings`, float32 `(batch, hidden_size)`;
        past 2 GB the weights go to `model.onnx.data` beside it), the tokenizer (a fast one appends EOS itself for
        `"eos"` pooling) and the settings in `revela_retriever.json` (put `query_prefix` or `passage_prefix` before
        each text yourself). The graph is traced on the CPU in float32 by `torch.onnx.export(dynamo=True)`; that
        needs the `onnx` extra (onnx, onnxscript; onnxruntime runs the graph). Like `save_pretrained`, the folder
        appears complete or not at all (`revela_hf.io`).

        Args:
            save_directory (`str`):
                Folder to write; it must not exist or be empty, unless `overwrite` is set and it is an export
                revela-hf wrote (anything else raises `OutputExistsError`).
            overwrite (`bool`, *optional*, defaults to `False`):
                Whether to replace an earlier ONNX export at `save_directory`.
            opset_version (`int`, *optional*, defaults to 18):
                ONNX opset of the graph.

        Returns:
            `pathlib.Path`: the absolute path of the exported folder.
        """
        check_pooling(self.pooling)  # a retriever whose pooling was set after construction
        for module in ("onnx", "onnxscript"):  # what torch.onnx's exporter needs
            import_optional(module, "onnx", "RevelaRetriever.export_onnx")
        target = Path(save_directory)
        with publishing(target, ONNX_KIND, overwrite=overwrite) as folder:
            self._write_onnx(folder, opset_version)
        return absolute(target)

    def _write_onnx(self, folder: Path, opset_version: int) -> None:
        if self.mean_from_base:
            raise ValueError("an ONNX export holds one model, and this retriever reads its mean half from the base model under its adapter (mean_from_base)")
        backbone = merged_backbone(self.backbone) if has_adapter(self.backbone) else copy.deepcopy(self.backbone)
        projection = copy.deepcopy(self.projection).to("cpu") if self.projection is not None else None
        token_weights = self.token_weights.cpu() if self.token_weights is not None else None
        graph = RevelaRetriever(backbone.to("cpu", torch.float32), None, **self.settings(), projection=projection, token_weights=token_weights).eval()
        example = pad_rows([[1, 2, 3, 4], [1, 2]], 0)  # two lengths, so neither axis is specialised to 1 or equal rows
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        with torch.no_grad():
            program = torch.onnx.export(
                graph, (example["input_ids"], example["attention_mask"]), dynamo=True, opset_version=opset_version,
                input_names=["input_ids", "attention_mask"], output_names=["embeddings"],
                dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
                verbose=False)
        program.save(str(folder / ONNX_FILE))  # weights over 2 GB go to model.onnx.data beside it
        if self.tokenizer is not None:
            tokenizer = self.tokenizer
            if pooling_appends_eos(self.pooling) and getattr(tokenizer, "is_fast", False):
                tokenizer = eos_appending_tokenizer(tokenizer)
            tokenizer.save_pretrained(folder)
        (folder / SETTINGS_FILE).write_text(json.dumps(self.settings(), indent=2) + "\n", encoding="utf-8")

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload Revela retriever",
        base_model: str | None = None,
        card: CardInfo | None = None,
        merge_lora: bool = False,
        revision: str | None = None,
    ) -> str:
        """Upload the retriever only (adapter or weights, tokenizer, settings, card) to `revision` (default: main);
        returns the commit URL.

        Pass `base_model` (a Hub id) when the backbone was loaded from a local folder, so the
        adapter can find its base model wherever it is loaded (default: the card's `base_model`, which
        training records from `RevelaTrainingArguments.base_model`); `merge_lora` uploads the merged
        full weights instead of the adapter (see `save_pretrained`).
        """
        base_model = base_model or (card or self.card or CardInfo()).base_model
        base = base_model or self.backbone.config.name_or_path
        if has_adapter(self.backbone) and not merge_lora and Path(base).expanduser().exists():
            warnings.warn(f"the adapter's base model is the local path {base}; pass base_model='<hub id>' so others can load it")
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, repo_id=repo_id, base_model=base_model, card=card, merge_lora=merge_lora)
            return push_folder(tmp, repo_id, private=private, token=token, commit_message=commit_message, revision=revision)

    @classmethod
    def from_pretrained(
        cls, path: str, revision: str | None = None, token: str | None = None, **overrides: Any
    ) -> "RevelaRetriever":
        r"""Load a retriever from a local folder or a Hub repository written by [`RevelaRetriever.save_pretrained`].

        A folder holding a LoRA adapter loads its base model and then the adapter; the base model loads with the
        config values the folder records (its depth: an adapter trained on the first N layers of a deeper model
        loads on those N layers only). The tokenizer is the folder's own, or the adapter's base model's when the
        folder ships none. Official Revela releases (see `is_official_revela`) load with their own settings: EOS
        pooling, `"query: "` / `"passage: "` prefixes and normalised embeddings. A plain model folder without
        `revela_retriever.json` loads with the default settings. A folder holding an all-but-the-top projection
        (`revela project`) loads with it as `projection`.

        Args:
            path (`str`):
                A local folder, or the id of a Hub repository (`hf://user/name` asks for the Hub explicitly). A
                missing name that looks like a local path is an error, never a download.
            revision (`str`, *optional*):
                Branch, tag or commit of the Hub repository to download.
            token (`str`, *optional*):
                Hub token, for private repositories.
            overrides (`dict[str, Any]`, *optional*):
                Settings that replace the saved ones: `pooling`, `query_prefix`, `passage_prefix`, `normalize`,
                `max_length`.

        Returns:
            [`RevelaRetriever`]: the loaded retriever, with the tokenizer and the model card info (`card`) it was
            saved with.

        Raises:
            `IncompleteOutputError`: for a folder holding an adapter but no `revela_retriever.json` that is not an
            official Revela release (e.g. a save cut short), unless `overrides` give `pooling`, `query_prefix` and
            `passage_prefix`.

        Example (`retriever` as built in the [`RevelaRetriever`] example):

        ```python
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     retriever.save_pretrained(folder)
        ...     reloaded = RevelaRetriever.from_pretrained(folder, max_length=128)
        >>> reloaded.pooling, reloaded.query_prefix, reloaded.max_length
        ('eos', 'Query: ', 128)

        ```
        """
        folder = resolve_model_dir(path, revision=revision, token=token)
        settings = {**saved_settings(folder, overrides), **overrides}
        base_config = settings.pop(BASE_CONFIG_KEY, {})
        has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
        tokenizer_source = str(folder) if has_tokenizer else adapter_base_model(folder) or str(folder)
        backbone = base_model_of(AutoModel.from_pretrained(str(folder), token=token, **base_config))
        projection = AllButTheTop.load(folder) if (folder / PROJECTION_FILE).is_file() else None
        retriever = cls(backbone, AutoTokenizer.from_pretrained(tokenizer_source, token=token), **settings, projection=projection,
                        token_weights=load_token_weights(folder))
        retriever.card = load_card_info(folder)
        return retriever

    # ------------------------------------------------------------------ encoding
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`(N, L)` token ids -> `(N, E)` embeddings."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (N, L, E)
        base_hidden = self._base_hidden(input_ids, attention_mask) if self.mean_from_base else None  # (N, L, E) or None
        weights = attention_mask * self.token_weights[input_ids] if self.token_weights is not None else None  # (N, L)
        emb = pool(hidden, attention_mask, self.pooling, base_hidden, weights)  # (N, E)
        emb = F.normalize(emb, dim=-1) if self.normalize else emb
        return self.projection(emb) if self.projection is not None else emb

    def fit_token_weights(self, texts: list[str], a: float = SIF_A) -> torch.Tensor:
        """Set `token_weights` to SIF weights counted over `texts` as this retriever reads them, each once as a query
        and once as a passage (`revela_hf.token_weights`); returns them."""
        require_mean_part(self.pooling, "token weights weigh")
        if self.tokenizer is None:
            raise ValueError("this RevelaRetriever has no tokenizer; pass one to count token frequencies")
        append_eos = pooling_appends_eos(self.pooling)
        rows = itertools.chain.from_iterable(token_rows(self.tokenizer, texts, prefix, self.max_length, append_eos)
                                             for prefix in (self.query_prefix, self.passage_prefix))
        vocab = self.backbone.get_input_embeddings().num_embeddings
        self.token_weights = sif_weights(rows, vocab, a).to(self.backbone.device)
        return self.token_weights

    def _base_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """`(N, L, E)` final states of the backbone with its adapter switched off (None without an adapter: the same model)."""
        if not has_adapter(self.backbone):
            return None
        self.backbone.disable_adapters()
        try:
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            self.backbone.enable_adapters()

    def tokenize(self, texts: list[str], prefix: str = "", max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise `prefix + text`, appending EOS for "eos" pooling; right-padded."""
        if self.tokenizer is None:
            raise ValueError("this RevelaRetriever has no tokenizer; pass one to encode text")
        return tokenize_texts(self.tokenizer, texts, prefix, max_length or self.max_length, pooling_appends_eos(self.pooling))

    @torch.no_grad()
    def encode(
        self, texts: list[str], prefix: str = "", batch_size: int = 32, show_progress_bar: bool = True
    ) -> torch.Tensor:
        """Encode texts in batches (longest first, to waste little padding); returns `(N, E)` float32 on CPU.

        Texts are sorted by characters, tokenised a window of batches at a time (one fast batched
        tokenizer call), re-sorted by token count inside the window, and each batch is padded to
        its own longest row only.
        """
        if isinstance(texts, str):
            raise ValueError("encode expects a list of texts, got a single string")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if self.tokenizer is None and texts:
            raise ValueError("this RevelaRetriever has no tokenizer; pass one to encode text")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = torch.empty(len(texts), pooled_width(self.pooling, self.backbone.config.hidden_size), dtype=torch.float32)
        by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        window = batch_size * ENCODE_WINDOW_BATCHES
        append_eos = pooling_appends_eos(self.pooling)
        pad_id = _pad_id(self.tokenizer) if texts else 0
        with tqdm(total=len(texts), desc="encoding", disable=not show_progress_bar, unit="text") as bar:
            for start in range(0, len(texts), window):
                idx = by_chars[start : start + window]
                rows = token_rows(self.tokenizer, [texts[i] for i in idx], prefix, self.max_length, append_eos)
                by_tokens = sorted(range(len(rows)), key=lambda k: -len(rows[k]))
                for first in range(0, len(rows), batch_size):
                    batch = by_tokens[first : first + batch_size]
                    enc = pad_rows([rows[k] for k in batch], pad_id)
                    emb = self(enc["input_ids"].to(device), enc["attention_mask"].to(device))
                    out[torch.tensor([idx[k] for k in batch])] = emb.to(device="cpu", dtype=torch.float32)
                    bar.update(len(batch))
        self.train(was_training)
        return out

    def encode_queries(self, queries: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> torch.Tensor:
        r"""Embed search queries, each with `query_prefix` put before it (see [`RevelaRetriever.encode`]).

        Runs without gradients and in eval mode (the retriever's mode is restored afterwards), on the device of
        the retriever's parameters. Texts are truncated to `max_length` tokens, prefix and EOS included.

        Args:
            queries (`list[str]`):
                The query texts (a list, not a single string).
            batch_size (`int`, *optional*, defaults to 32):
                Texts per forward pass; a positive integer.
            show_progress_bar (`bool`, *optional*, defaults to `True`):
                Whether to show a progress bar (on stderr).

        Returns:
            `torch.Tensor` of shape `(len(queries), hidden_size)`: float32 embeddings on the CPU, in the order of
            `queries` (L2-normalised with `normalize=True`).

        Example (`retriever` as built in the [`RevelaRetriever`] example):

        ```python
        >>> retriever.encode_queries(["where is the cat", "who ran"], show_progress_bar=False).shape
        torch.Size([2, 64])

        ```
        """
        return self.encode(queries, self.query_prefix, batch_size, show_progress_bar)

    def encode_corpus(self, corpus: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> torch.Tensor:
        r"""Embed the passages of a corpus, each with `passage_prefix` put before it (see [`RevelaRetriever.encode`]).

        Runs without gradients and in eval mode (the retriever's mode is restored afterwards), on the device of
        the retriever's parameters. Texts are truncated to `max_length` tokens, prefix and EOS included; batches
        are formed longest text first, so little compute goes to padding.

        Args:
            corpus (`list[str]`):
                The passage texts (a list, not a single string).
            batch_size (`int`, *optional*, defaults to 32):
                Texts per forward pass; a positive integer.
            show_progress_bar (`bool`, *optional*, defaults to `True`):
                Whether to show a progress bar (on stderr).

        Returns:
            `torch.Tensor` of shape `(len(corpus), hidden_size)`: float32 embeddings on the CPU, in the order of
            `corpus` (L2-normalised with `normalize=True`).

        Example (`retriever` as built in the [`RevelaRetriever`] example):

        ```python
        >>> corpus = ["the cat sat on a mat", "a dog ran in the park", "the cat ran"]
        >>> passages = retriever.encode_corpus(corpus, batch_size=2, show_progress_bar=False)
        >>> passages.shape, passages.dtype
        (torch.Size([3, 64]), torch.float32)

        ```
        """
        return self.encode(corpus, self.passage_prefix, batch_size, show_progress_bar)


def has_adapter(backbone: PreTrainedModel) -> bool:
    """Whether a PEFT adapter is attached to `backbone` (transformers' PEFT integration)."""
    return bool(getattr(backbone, "_hf_peft_config_loaded", False))


def merged_backbone(backbone: PreTrainedModel) -> PreTrainedModel:
    """A copy of `backbone` with its active adapters merged into the base weights and the PEFT layers
    removed (what peft's `merge_and_unload` does for a `PeftModel`); `backbone` itself is left as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(backbone)
    for name, module in list(merged.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent), child, module.get_base_layer())
    del merged.peft_config
    merged._hf_peft_config_loaded = False
    # Loading an adapter leaves its key renamings (to peft's `base_model.model.` names) for saving it again;
    # the merged weights are saved as a model built in memory is: under the class's own names.
    merged._weight_conversions = None
    return merged


def adapter_base_config(config: PreTrainedConfig) -> dict[str, Any]:
    """The config values an adapter on a backbone of `config` needs its base model loaded with: its depth, since
    the recorded base model may be deeper (a backbone cut in memory, or a Hub id of the uncut model)."""
    depth = getattr(config, "num_hidden_layers", None)
    return {"num_hidden_layers": depth} if depth is not None else {}


def is_official_revela(adapter_config: dict[str, Any]) -> bool:
    """Whether an adapter config is an official Revela release's: the Revela training code saves its
    retriever as a PEFT LoRA adapter for FEATURE_EXTRACTION (revela-hf's own adapters carry no task type)."""
    return adapter_config.get("peft_type") == "LORA" and adapter_config.get("task_type") == "FEATURE_EXTRACTION"


def saved_settings(folder: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The retriever settings a folder records: its settings file, an official Revela release's, or none
    for a plain backbone; IncompleteOutputError for an adapter of neither kind (unless `overrides` cover it)."""
    if (folder / SETTINGS_FILE).is_file():
        return json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    adapter_config = folder / ADAPTER_CONFIG
    if not adapter_config.is_file():
        return {}
    if is_official_revela(json.loads(adapter_config.read_text(encoding="utf-8"))):
        return dict(OFFICIAL_REVELA_SETTINGS)
    if REQUIRED_OVERRIDES <= set(overrides):
        return {}
    raise IncompleteOutputError(
        f"{folder} holds a LoRA adapter but no {SETTINGS_FILE}, and it is not an official Revela release: most likely "
        "a save that was cut short. Save or train it again, or pass pooling=, query_prefix= and passage_prefix= to load it as is")


def adapter_base_model(folder: Path) -> str | None:
    """The base model (folder or Hub id) an adapter folder names; None for a folder of full weights."""
    adapter_config = folder / ADAPTER_CONFIG
    if not adapter_config.is_file():
        return None
    return json.loads(adapter_config.read_text(encoding="utf-8"))["base_model_name_or_path"]


def backbone_config(folder: Path, settings: dict[str, Any], token: str | None = None) -> PreTrainedConfig:
    """The config a retriever folder's backbone loads with, given its `saved_settings`: its own, or its adapter's
    base model's at the recorded depth; read without loading weights."""
    return AutoConfig.from_pretrained(adapter_base_model(folder) or str(folder), token=token, **settings.get(BASE_CONFIG_KEY, {}))


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], prefix: str, max_length: int, append_eos: bool
) -> dict[str, torch.Tensor]:
    """Right-padded `prefix + text` token ids and mask; with `append_eos` the EOS id ends every row (truncation keeps it)."""
    return pad_rows(token_rows(tokenizer, texts, prefix, max_length, append_eos), _pad_id(tokenizer))


def token_rows(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], prefix: str, max_length: int, append_eos: bool
) -> list[list[int]]:
    """Unpadded token ids of `prefix + text` (one batched tokenizer call), at most `max_length` each, EOS-ended with `append_eos`."""
    if append_eos and tokenizer.eos_token_id is None:
        raise ValueError("eos pooling needs a tokenizer with an EOS token")
    if not texts:
        return []
    limit = max_length - 1 if append_eos and not appends_eos(tokenizer) else max_length  # room for the EOS we add
    rows = tokenizer([prefix + t for t in texts], truncation=True, max_length=limit)["input_ids"]
    if append_eos:
        eos = tokenizer.eos_token_id
        rows = [ids if ids and ids[-1] == eos else ids + [eos] for ids in rows]
    return rows


def pad_rows(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token id rows to the longest one: `input_ids` and `attention_mask`, `(N, L)` long tensors."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    mask = np.arange(width) < lengths[:, None]  # (N, L), row-major order matches the concatenated rows
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    input_ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def base_model_of(model: PreTrainedModel) -> PreTrainedModel:
    """The bare transformer of a model with a head (e.g. LlamaModel inside LlamaForCausalLM)."""
    base = getattr(model, "base_model", model)
    return base if isinstance(base, PreTrainedModel) else model
