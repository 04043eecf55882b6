"""Markdown tables, and replacing a marked section of the results page."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence


def number(value: object, digits: int = 3) -> str:
    """Format a metric: fixed decimals, "n/a" for None or NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], text_columns: int = 1) -> str:
    """Format a GitHub-flavoured markdown table: the first `text_columns` left-aligned, the rest right-aligned."""
    alignments = ["---"] * text_columns + ["---:"] * (len(headers) - text_columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(alignments) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(page: Path, name: str, body: str) -> None:
    """Replace the text between the page's start and end markers of section `name`.

    The page must already contain both markers, so hand-written text around them is kept.
    """
    start, end = section_markers(name)
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{page} has no section {name}: add the lines {start!r} and {end!r} where it belongs")
    replacement = f"{start}\n{body.strip()}\n{end}"
    page.write_text(pattern.sub(lambda _: replacement, text, count=1), encoding="utf-8")
