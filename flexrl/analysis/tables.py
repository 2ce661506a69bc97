"""A small table type: printable in a terminal, rendered as HTML in notebooks and reports.

Plain rows rather than pandas, so the analysis helpers add no heavy dependency; `to_dicts()`
feeds `pandas.DataFrame` for anyone who wants one.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

_NUM = " class='num'"  # numbers align right, text left


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str | None = None  # shown under the table: units, what was skipped and why

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td{_NUM if isinstance(v, int | float) else ''}>{html.escape(_cell(v))}</td>"
                for v in row
            )
            + "</tr>"
            for row in self.rows
        )
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (
            f"<table class='flexrl'><caption>{html.escape(self.title)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"
        )

    def _repr_html_(self) -> str:  # Jupyter
        return self.to_html()

    def __str__(self) -> str:
        cells = [self.columns, *[[_cell(v) for v in row] for row in self.rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [self.title]
        for n, row in enumerate(cells):
            lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)
