"""The one Markdown table renderer of report.md, docs/experiments.md, `compare` and the paired comparisons."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A Markdown table: the first `text_columns` columns left-aligned (names), the others right-aligned
    (figures)."""
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = [header, align, *rows]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)
