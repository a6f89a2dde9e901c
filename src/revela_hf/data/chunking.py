"""Cut documents into chunks of at most N words (or N tokens of a tokenizer).

Prose is cut on sentence boundaries; code blocks (Markdown fences, reST literal blocks and
directives, doctest blocks) and code files are cut between definitions and statements, never
inside one unless a single unit is longer than the limit. Pieces that fit are packed greedily.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Callable, Iterator

from revela_hf.data.python_source import first_line, outermost_functions
from revela_hf.data.sentences import split_sentences

DOCUMENT_KINDS = ("text", "markdown", "rest", "code")

_FENCE = re.compile(r"^\s*(```|~~~)")
_REST_CODE_DIRECTIVE = re.compile(r"^\s*\.\.\s+(code-block|code|sourcecode|doctest|testcode|testoutput|literalinclude)::")
_CLOSER = re.compile(r"^\s*([)\]}]|else\b|elif\b|except\b|finally\b|catch\b)")
_ATTACHES_FORWARD = re.compile(r"^\s*(@|#|//|/\*|\*)")


@dataclass(frozen=True)
class Piece:
    """A unit the packer never cuts (unless it alone exceeds the limit); `sep` joins it to the previous piece."""

    text: str
    sep: str


def _join(pieces: list[Piece]) -> str:
    return "".join(p.text if i == 0 else p.sep + p.text for i, p in enumerate(pieces))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _paragraphs(lines: list[str]) -> Iterator[list[str]]:
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def _code_units(lines: list[str]) -> list[list[str]]:
    """Split lines into units that start at the block's smallest indentation (a def, a statement).

    Closing brackets and `else`/`except`-style continuations stay with the unit above; comments and
    decorators stay with the unit below.
    """
    levels = [_indent(line) for line in lines if line.strip()]
    if not levels:
        return []
    base = min(levels)
    units: list[list[str]] = []
    current: list[str] = []
    leading = False  # current unit so far holds only comments/decorators/blank lines
    for line in lines:
        starts_unit = line.strip() and _indent(line) == base and not _CLOSER.match(line)
        if starts_unit and current and not leading:
            units.append(current)
            current = []
        if line.strip():
            leading = (not current or leading) and bool(_ATTACHES_FORWARD.match(line))
        current.append(line)
    if current:
        units.append(current)
    return units


CODE_UNITS = ("block", "function", "function-head")


def python_functions(text: str) -> list[list[str]] | None:
    """The lines of every outermost function of a Python module (see `outermost_functions`; decorators
    attached, nested functions left inside their parent), in source order; None when the text is not valid Python."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    lines = text.split("\n")
    return [textwrap.dedent("\n".join(lines[first_line(f) - 1 : f.end_lineno])).split("\n") for f in outermost_functions(tree)]


class Chunker:
    """Cut text into chunks of at most `max_words` words, or `max_tokens` tokens of `tokenizer`.

    `code_units`: "block" packs a code file's statements and definitions into chunks as they come;
    "function" makes every Python function (and method) start a chunk of its own, so a chunk opens
    with a signature and docstring (its first half is what a natural-language code query resembles),
    and drops module-level statements (imports, constants); "function-head" keeps only the first chunk
    of each function (signature, docstring, the body's start), so no chunk starts mid-body. Code that
    does not parse as Python falls back to "block".
    """

    def __init__(self, max_words: int = 120, max_tokens: int | None = None, tokenizer=None, code_units: str = "block"):
        if code_units not in CODE_UNITS:
            raise ValueError(f"code_units must be one of {CODE_UNITS}, got {code_units!r}")
        self.code_units = code_units
        if max_tokens is not None:
            if tokenizer is None:
                raise ValueError("max_tokens needs a tokenizer to count tokens with")
            if max_tokens < 1:
                raise ValueError(f"max_tokens must be positive, got {max_tokens}")
            self.limit = max_tokens
            self.measure: Callable[[str], int] = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
            self.unit = "tokens"
        else:
            if max_words < 1:
                raise ValueError(f"max_words must be positive, got {max_words}")
            self.limit = max_words
            self.measure = lambda text: len(text.split())
            self.unit = "words"

    # -- pieces -------------------------------------------------------------------------------
    def _code_pieces(self, lines: list[str], sep: str) -> list[Piece]:
        """Pieces of a code block: whole units where they fit, else their sub-units, else lines."""
        text = "\n".join(lines).strip("\n")
        if self.measure(text) <= self.limit:
            return [Piece(text, sep)]
        units = _code_units(lines)
        if len(units) == 1:  # a single unit: keep its header, split its body one level deeper
            units = _code_units(lines[1:])
            if len(units) < 2:  # no structure left to follow: pack line by line
                return [Piece(line, sep if i == 0 else "\n") for i, line in enumerate(lines) if line.strip()]
            units.insert(0, lines[:1])
        pieces: list[Piece] = []
        for i, unit in enumerate(units):
            gap = sep if i == 0 else ("\n\n" if not units[i - 1][-1].strip() else "\n")
            pieces.extend(self._code_pieces(unit, gap))
        return [p for p in pieces if p.text.strip()]

    def _prose_pieces(self, lines: list[str], sep: str) -> list[Piece]:
        sentences = split_sentences(" ".join(lines))
        return [Piece(s, sep if i == 0 else " ") for i, s in enumerate(sentences)]

    def pieces(self, text: str, kind: str) -> list[Piece]:
        """Turn a document into pieces according to its kind (text, markdown, rest, code)."""
        if kind not in DOCUMENT_KINDS:
            raise ValueError(f"unknown document kind {kind!r}; expected one of {DOCUMENT_KINDS}")
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if kind == "code":
            return self._code_pieces(lines, "")
        pieces: list[Piece] = []
        for block, is_code in self._blocks(lines, kind):
            sep = "\n\n" if pieces else ""
            if is_code:
                pieces.extend(self._code_pieces(textwrap.dedent("\n".join(block)).split("\n"), sep))
            else:
                pieces.extend(self._prose_pieces(block, sep))
        return pieces

    @staticmethod
    def _blocks(lines: list[str], kind: str) -> Iterator[tuple[list[str], bool]]:
        """Yield (lines, is_code) blocks: paragraphs, and code blocks kept whole across blank lines."""
        if kind == "markdown":
            in_fence, fence = False, []
            prose: list[str] = []
            for line in lines:
                if _FENCE.match(line):
                    if in_fence:
                        yield fence + [line], True
                        in_fence, fence = False, []
                    else:
                        yield from ((p, False) for p in _paragraphs(prose))
                        prose, in_fence, fence = [], True, [line]
                elif in_fence:
                    fence.append(line)
                else:
                    prose.append(line)
            yield from ((p, False) for p in _paragraphs(prose))
            if fence:
                yield fence, True
            return
        paragraphs = list(_paragraphs(lines))
        literal_indent: int | None = None  # reST: indentation of the paragraph introducing a literal block
        code: list[str] = []
        for para in paragraphs:
            indent = _indent(para[0])
            if literal_indent is not None and indent > literal_indent:
                code.extend([""] + para if code else para)
                continue
            if code:
                yield code, True
                code = []
            literal_indent = None
            is_doctest = para[0].lstrip().startswith(">>>")
            if kind == "rest" and _REST_CODE_DIRECTIVE.match(para[0]):
                literal_indent = indent
                code = para  # the directive line stays with its code, as a Markdown fence does
                continue
            if is_doctest:
                yield para, True
                continue
            if kind == "rest" and para[-1].rstrip().endswith("::"):
                literal_indent = indent
            yield para, False
        if code:
            yield code, True

    # -- packing ------------------------------------------------------------------------------
    def _hard_split(self, text: str) -> Iterator[str]:
        """Cut an over-long piece into word windows that each fit the limit."""
        words = text.split()
        start = 0
        while start < len(words):
            size = min(self.limit, len(words) - start)
            while size > 1 and self.measure(" ".join(words[start:start + size])) > self.limit:
                size = max(1, size * 3 // 4) if size > 8 else size - 1
            if size == 1 and self.measure(words[start]) > self.limit:
                yield from self._split_word(words[start])
            else:
                yield " ".join(words[start:start + size])
            start += size

    def _split_word(self, word: str) -> Iterator[str]:
        """Cut a single word longer than the limit (a long identifier, URL or literal) by characters."""
        while word:
            low, high = 1, len(word)  # longest prefix that fits: binary search
            while low < high:
                middle = (low + high + 1) // 2
                if self.measure(word[:middle]) <= self.limit:
                    low = middle
                else:
                    high = middle - 1
            yield word[:low]
            word = word[low:]

    def chunks(self, text: str, kind: str = "text") -> list[str]:
        """Cut a document into chunks that each measure at most the limit."""
        if kind == "code" and self.code_units != "block":
            functions = python_functions(text.replace("\r\n", "\n").replace("\r", "\n"))
            if functions is not None:
                per_function = [self._pack(self._code_pieces(lines, "")) for lines in functions]
                keep = 1 if self.code_units == "function-head" else None
                return [c for chunks in per_function for c in chunks[:keep]]
        return self._pack(self.pieces(text, kind))

    def _pack(self, pieces: list[Piece]) -> list[str]:
        """Join consecutive pieces into chunks that each measure at most the limit."""
        chunks: list[str] = []
        current: list[Piece] = []
        size = 0

        def flush() -> None:
            nonlocal current, size
            if current:
                chunks.append(textwrap.dedent(_join(current)).strip("\n").rstrip())
            current, size = [], 0

        for piece in pieces:
            piece_size = self.measure(piece.text)
            if piece_size > self.limit:
                flush()
                chunks.extend(self._hard_split(piece.text))
                continue
            if size + piece_size > self.limit:
                flush()
            current.append(piece)
            size += piece_size
            if self.unit == "tokens" and len(current) > 1 and size >= self.limit // 2:
                # token counts are not additive across joins; check the joined text when close
                if self.measure(_join(current)) > self.limit:
                    current.pop()
                    flush()
                    current, size = [piece], piece_size
        flush()
        return [c for c in chunks if c.strip()]
