"""What every report's tables share: one number formatter for cells ("—" for a missing or non-finite value),
a row's label and status cells, and the Markdown and HTML table syntax (numeric columns right-aligned)."""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resbench.results import ResultRow

MISSING = "—"


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """`value` in the format `spec` (+ `suffix`), or "—" when it is None, NaN or infinite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return format(value, spec) + suffix


def row_label(row: ResultRow) -> str:
    """'resnet50 compile[mode=max-autotune] b32 bf16' (+ ' server' on a serving row): a row in a list."""
    scenario = f" {row.scenario}" if row.scenario else ""
    return f"{row.model} {row.backend_label} b{row.batch_size} {row.dtype}{scenario}"


def status_reason(row: ResultRow) -> str:
    """'failed: <reason>' ('no reason recorded' when there is none): a row that has no figures to show."""
    return f"{row.status}: {row.reason or 'no reason recorded'}"


def ok_status(row: ResultRow) -> str:
    """'ok', or 'ok (2 warnings)' when the row carries warnings."""
    count = len(row.warnings)
    return f"ok ({count} warning{'s' if count != 1 else ''})" if count else "ok"


def markdown_table(headers: Sequence[str], body: Iterable[Sequence[str]], numeric: Collection[str] = ()) -> list[str]:
    """A Markdown pipe table's lines: the header, its alignment row (`numeric` columns right-aligned), a
    line per row. Cells are written as given: each caller escapes them as its text needs."""
    return ["| " + " | ".join(headers) + " |",
            "|" + "|".join("---:" if header in numeric else "---" for header in headers) + "|",
            *("| " + " | ".join(cells) + " |" for cells in body)]


def html_table(headers: Sequence[str], body: Sequence[Sequence[str]], numeric: Collection[str] = (),
               row_classes: Sequence[str] | None = None) -> str:
    """An HTML table, every header and cell escaped: `numeric` columns' cells get class "num", row i the
    class row_classes[i] when that is not empty."""
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for index, cells in enumerate(body):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        tds = "".join(f'<td class="num">{html.escape(c)}</td>' if h in numeric else f"<td>{html.escape(c)}</td>"
                      for h, c in zip(headers, cells, strict=True))
        out.append(f"<tr{css}>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)
