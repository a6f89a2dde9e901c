"""An offline, rule-based sentence splitter for English prose (no downloads, no models).

A boundary is a run of `.`, `!`, `?` or `…` (optionally followed by closing quotes or brackets)
followed by whitespace and a plausible sentence start. It is NOT a boundary when the next word
starts in lower case, when the word before the period is a known abbreviation or a single
initial, or when the period ends a dotted abbreviation such as "e.g." or "U.S." that is followed
by a lower-case word.
"""

from __future__ import annotations

import re

# Abbreviations after which a period almost never ends a sentence, even before a capital.
TITLE_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt ft gen col lt sgt capt rev hon pres gov sen rep
    fig figs eq eqs no nos vol vols ch sec sect art p pp ed eds approx ca cf vs viz al
    jan feb mar apr jun jul aug sep sept oct nov dec inc ltd co corp dept univ""".split()
)

_BOUNDARY = re.compile(r"""([.!?…]+)(["'”’)\]]*)(\s+)(?=\S)""")
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def _is_boundary(text: str, end: int, following: str) -> bool:
    """Whether the punctuation ending at `end` closes a sentence, given the text that follows."""
    first = following[0]
    if first.islower():
        return False
    if text[end - 1] != ".":  # `!`, `?`, `…` before a non-lower-case word
        return True
    match = _WORD_BEFORE.search(text, 0, end - 1)
    if match is None:
        return True
    word = match.group(1)
    bare = word.rstrip(".").lower()
    if bare in TITLE_ABBREVIATIONS:
        return False
    if len(bare) == 1 and bare.isalpha() and first.isupper():  # an initial: "J. Smith"
        return False
    return not (first.isdigit() and bare in {"no", "p", "pp", "vol", "fig", "eq", "sec"})


def split_sentences(text: str) -> list[str]:
    """Split a paragraph of prose into sentences; whitespace inside a sentence is normalised."""
    text = " ".join(text.split())
    if not text:
        return []
    sentences = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.end(2)
        if _is_boundary(text, match.end(1), text[match.end():]):
            sentences.append(text[start:end])
            start = match.end()
    sentences.append(text[start:])
    return [s for s in sentences if s]
