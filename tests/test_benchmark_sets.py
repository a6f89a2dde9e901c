"""The yardstick builders on tiny real-format inputs: CONCODE jsonl, a stdlib-like folder, a dictd dictionary."""

from __future__ import annotations

import gzip
import json
import pathlib
import textwrap

import pytest

from revela_hf.demo import assets, benchmark_sets
from revela_hf.demo.benchmark_sets import (
    build_concode_beir,
    default_concode_path,
    build_foldoc_beir,
    build_stdlib_beir,
    build_suite,
    evaluation_source_roots,
    foldoc_pair,
    function_pairs,
    spread,
)
from revela_hf.evaluation import load_beir
from revela_hf.io import MARKER

_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _folder_bytes(folder: str) -> dict[str, bytes]:
    """Every file's bytes but the completion marker's, which records when the folder was written."""
    root = pathlib.Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != MARKER}


def _pairs(folder: str) -> list[tuple[str, str]]:
    """(query, its one relevant document) per query, checking the qrels are one-to-one and complete."""
    data = load_beir(folder)
    assert set(data.qrels) == set(data.queries)
    assert all(len(rels) == 1 and set(rels.values()) == {1} for rels in data.qrels.values())
    assert sorted(d for rels in data.qrels.values() for d in rels) == sorted(data.corpus)
    return [(data.queries[q], data.corpus[next(iter(rels))]["text"]) for q, rels in data.qrels.items()]


def _assert_deterministic(build, tmp_path: pathlib.Path, *args) -> str:
    first, second = build(str(tmp_path / "a"), *args), build(str(tmp_path / "b"), *args)
    assert _folder_bytes(first) == _folder_bytes(second)
    return first


def test_concode(tmp_path: pathlib.Path) -> None:
    rows = [
        {"nl": "returns the number of items . concode_field_sep int _count concode_field_sep int size", "code": "int function ( ) { return _count ; }"},
        {"nl": "clears the map concode_field_sep Map _map", "code": "void function ( ) { _map . clear ( ) ; }"},
    ]
    source = tmp_path / "concode.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    folder = _assert_deterministic(build_concode_beir, tmp_path, str(source))
    assert _pairs(folder) == [
        ("returns the number of items .", "int function ( ) { return _count ; }"),
        ("clears the map", "void function ( ) { _map . clear ( ) ; }"),
    ]


def test_concode_missing_file_names_the_variable(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="REVELA_CONCODE"):
        build_concode_beir(str(tmp_path / "out"), str(tmp_path / "nope.jsonl"))


_MODULE = textwrap.dedent(
    '''
    def parse_header(line):
        """Split one header line into its field name and its value, stripping blanks.

        More detail that stays out of the query.
        """
        name, _, value = line.partition(":")
        return name.strip(), value.strip()


    def tiny(x):
        """Return the square of the argument given by the caller, as a number."""
        return x * x


    def named(path):
        """The named helper opens a file and returns every line of its text."""
        with open(path) as f:
            return f.read().splitlines()


    class Queue:
        def pending(self):
            """How many jobs wait in this queue before the workers take them."""
            jobs = self._jobs
            return len(jobs)

        def short(self):
            """Too short."""
            return 1
    '''
)


def test_function_pairs_drop_names_and_docstrings() -> None:
    pairs = dict(function_pairs(_MODULE))
    assert list(pairs) == [
        "Split one header line into its field name and its value, stripping blanks.",
        "How many jobs wait in this queue before the workers take them.",
    ]  # tiny: 2 lines of code; named: names itself; short: 2 words
    doc = pairs["How many jobs wait in this queue before the workers take them."]
    assert doc == "def pending(self):\n    jobs = self._jobs\n    return len(jobs)"
    assert '"""' not in "".join(pairs.values())


def test_stdlib_set(tmp_path: pathlib.Path) -> None:
    lib = tmp_path / "lib"
    for rel in ("email/header.py", "queue.py", "test/test_queue.py", "idlelib/tool.py", "broken.py"):
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_text("def (:\n" if rel == "broken.py" else _MODULE, encoding="utf-8")
    folder = _assert_deterministic(build_stdlib_beir, tmp_path, str(lib))
    pairs = _pairs(folder)
    # email and queue hold the same two functions: duplicates are kept once, tests and IDLE are skipped
    assert [q for q, _ in pairs] == [
        "Split one header line into its field name and its value, stripping blanks.",
        "How many jobs wait in this queue before the workers take them.",
    ]
    assert all("pending" not in q and "parse_header" not in q for q, _ in pairs)


def test_stdlib_sampling_takes_modules_in_turn(tmp_path: pathlib.Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for module in ("alpha", "beta"):
        body = "".join(
            f'def f{module}{i}(x):\n    """Step {i} of the {module} recipe turns the input into output."""\n    y = x\n    return y + {i}\n\n'
            for i in range(4)
        )
        (lib / f"{module}.py").write_text(body, encoding="utf-8")
    folder = build_stdlib_beir(str(tmp_path / "out"), str(lib), max_pairs=4)
    assert [q for q, _ in _pairs(folder)] == [
        "Step 0 of the alpha recipe turns the input into output.",
        "Step 2 of the alpha recipe turns the input into output.",
        "Step 0 of the beta recipe turns the input into output.",
        "Step 2 of the beta recipe turns the input into output.",
    ]


def _write_dictd(folder: pathlib.Path, entries: list[str]) -> None:
    """A dictd dictionary: gzip data (dictzip reads as gzip) + index lines `headword<TAB>offset<TAB>length` in base64."""

    def number(value: int) -> str:
        digits = ""
        while True:
            digits = _BASE64[value % 64] + digits
            value //= 64
            if not value:
                return digits

    data, index, offset = b"", [], 0
    for entry in entries:
        raw = entry.encode("utf-8")
        for headword in entry.split("\n\n")[0].splitlines():
            index.append(f"{headword.lower()}\t{number(offset)}\t{number(len(raw))}")
        data, offset = data + raw, offset + len(raw)
    folder.mkdir()
    (folder / "foldoc.dict.dz").write_bytes(gzip.compress(data))
    (folder / "foldoc.index").write_text("\n".join(sorted(index)) + "\n", encoding="utf-8")


_FOLDOC = [
    "00-database-short\n\n     The Free On-line Dictionary of Computing\n\n",
    "algorithm\n\n   <algorithm, programming> A detailed sequence of actions to\n   perform to accomplish some task.  Named after the <Iranian>\n"
    "   mathematician {Muhammad ibn Musa al-Khwarizmi}, who wrote on\n   arithmetic and algebra.\n\n   (2002-02-05)\n\n",
    "Algorithmic Language\n\n   {Algol 60}\n\n",
    "byte\n\n   <unit> A byte is a component in the machine data hierarchy\n   larger than a bit.  Usually eight bits, it is the smallest\n"
    "   addressable unit of storage on most computers today.\n\n   (1997-03-13)\n\n",
    "ALgorithm DEScription\nALDES\n\n   1. <language> (ALDES) The description language of Loos, for computer\n   algebra systems.  It was "
    "used in the SAC-2 system and translated\n   to Fortran by a preprocessor (http://example.org/aldes).\n\n   (1995-04-19)\n\n",
]


def test_foldoc_set(tmp_path: pathlib.Path) -> None:
    _write_dictd(tmp_path / "dictd", _FOLDOC)
    folder = _assert_deterministic(build_foldoc_beir, tmp_path, str(tmp_path / "dictd"))
    assert _pairs(folder) == [
        (
            "A detailed sequence of actions to perform to accomplish some task.",
            "algorithm. Named after the <Iranian> mathematician Muhammad ibn Musa al-Khwarizmi, who wrote on arithmetic and algebra.",
        ),
        (
            "The description language of Loos, for computer algebra systems.",
            "ALgorithm DEScription. It was used in the SAC-2 system and translated to Fortran by a preprocessor.",
        ),
    ]  # the database header and the cross-reference are no entries; byte names itself


def test_foldoc_pair_rejects_headword_in_query() -> None:
    assert foldoc_pair(_FOLDOC[3]) is None


def test_foldoc_missing_names_apt_get(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install -y dict-foldoc"):
        build_foldoc_beir(str(tmp_path / "out"), str(tmp_path / "none"))


def test_build_suite_reuses_and_checks_names(tmp_path: pathlib.Path) -> None:
    _write_dictd(tmp_path / "dictd", _FOLDOC)
    folders = build_suite(tmp_path / "suite", {"foldoc": str(tmp_path / "dictd")}, names=["foldoc"])
    assert folders == {"foldoc": str(tmp_path / "suite" / "foldoc")}
    assert build_suite(tmp_path / "suite", {"foldoc": str(tmp_path / "none")}, names=["foldoc"]) == folders  # reused
    with pytest.raises(ValueError, match="unknown sets"):
        build_suite(tmp_path / "suite", names=["nope"])


def test_spread() -> None:
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread([1, 2], 5) == [1, 2]


def test_training_text_excludes_evaluation_roots(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdlib, packages = tmp_path / "lib", tmp_path / "lib" / "site-packages"
    (stdlib / "json").mkdir(parents=True)
    (stdlib / "json" / "decoder.py").write_text("x = 1\n")
    (packages / "pkg").mkdir(parents=True)
    (packages / "pkg" / "mod.py").write_text("y = 2\n")
    for module in (assets, benchmark_sets):
        monkeypatch.setattr(module, "python_roots", lambda: (stdlib, [packages]))
    monkeypatch.setattr(assets, "PYTHON_DOC_SOURCES", tmp_path / "no-docs")
    assert evaluation_source_roots()[:2] == [stdlib, benchmark_sets.FOLDOC_DIR]
    assert assets.training_text_sources() == [packages / "pkg" / "mod.py"]
    assert assets.training_text_sources(exclude_roots=()) == [stdlib / "json" / "decoder.py", packages / "pkg" / "mod.py"]
    assert assets.training_text_sources(exclude_roots=[stdlib / "json"]) == [packages / "pkg" / "mod.py"]


def test_default_concode_path_lies_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    # shared/ sits next to the repository folder (../shared/data/codexglue/ from the checkout's root)
    monkeypatch.delenv("REVELA_CONCODE", raising=False)
    checkout = pathlib.Path(__file__).resolve().parents[1]
    assert default_concode_path() == checkout.parent / "shared" / "data" / "codexglue" / "concode-dev.jsonl"
