"""Sub-commands of the `revela` CLI. Each module defines `register(subparsers)`, which adds its
parser and sets `func` (called with the parsed args, returns an exit code)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type` accepting integers >= `minimum`, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse `type` accepting finite floats > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


positive_int = int_at_least(1)

CENTER_QUERIES_HELP = ("add a row per dense retriever: its scores after query-set centring (each embedding minus its set's "
                       "mean, queries' and documents' apart, normalised again). Alone, the queries are centred on their "
                       "own mean (all the queries at once: batch search); with K, each query on the mean of K other "
                       "queries (the set split in two halves, each centred on K queries of the other): what an index "
                       "built with `revela index --calibration-queries` of K example queries does for a new query")


def add_center_queries(parser: argparse.ArgumentParser, help: str = CENTER_QUERIES_HELP) -> None:
    """`--center-queries [K]`: False when absent, True alone, an int K >= 2 with a number (`retrieve`'s `center`)."""
    parser.add_argument("--center-queries", nargs="?", const=True, default=False, type=int_at_least(2), metavar="K", help=help)


def layer_list(text: str) -> list[int] | None:
    """An argparse `type` for comma-separated layer numbers (negative = from the top), or 'all' (None)."""
    if text == "all":
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers such as -2,-1, or 'all'; got {text!r}") from None
