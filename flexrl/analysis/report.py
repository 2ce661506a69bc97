"""One self-contained HTML page of a dataset version: every plot embedded as a base64 PNG,
the CSS inline, no script and no network, so it opens anywhere (mail it, attach it to an
issue) and reads the same offline."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from matplotlib.figure import Figure

from flexrl.analysis import dataset as da
from flexrl.analysis.tables import Table
from flexrl.store import Dataset, open_dataset

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; }
.meta { color: #666; margin-top: 0; }
table.flexrl { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
table.flexrl caption { text-align: left; font-weight: bold; padding-bottom: 0.3em; }
table.flexrl th, table.flexrl td { border: 1px solid #ddd; padding: 3px 9px; text-align: left; }
table.flexrl td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.flexrl th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
.note, .skipped { color: #666; font-style: italic; }
"""


def figure_to_data_uri(fig: Figure, dpi: int = 80) -> str:
    """A figure as a `data:image/png;base64,...` URI (PNG: small, renders the same anywhere)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='{figure_to_data_uri(fig)}'>"


def _section(title: str, body: Callable[[], list[str]]) -> str:
    """A section; analyses that do not apply to this dataset say why instead of failing."""
    try:
        parts = body()
    except da.NotApplicable as e:
        parts = [f"<p class='skipped'>Skipped: {html.escape(str(e))}.</p>"]
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def _table(t: Table) -> str:
    return t.to_html()


def dataset_report_html(
    ds: Dataset | str, workspace: str | Path | None = None, previous: Dataset | str | None = None
) -> str:
    """The report of one version. `previous` (default: the version before, when there is one)
    adds a section on what changed."""
    ds = da.load(ds, workspace)
    if previous is None and ds.version > 1:
        previous = open_dataset(f"{ds.name}@v{ds.version - 1}", workspace)
    prev = da.load(previous, workspace) if previous is not None else None

    def humanoid_gate() -> None:
        reason = da.why_not_humanoid(ds)
        if reason:
            raise da.NotApplicable(reason)

    def coverage() -> list[str]:
        humanoid_gate()
        return [
            "<p>Torso x-y paths are integrated from the stored heading-frame velocity "
            "(<code>infos/lin_vel</code>) rotated by the torso heading in the next "
            "observation; Humanoid-v5 observations exclude x and y.</p>",
            _img(da.trajectories_figure(ds), "torso x-y trajectories"),
        ]

    def tracking() -> list[str]:
        humanoid_gate()
        return [
            _img(da.tracking_figure(ds), "velocity vs command"),
            _table(da.tracking_table(ds)),
        ]

    def told() -> list[str]:
        from flexrl.analysis.language import instruction_table

        return [_table(instruction_table(ds))]

    def diff() -> list[str]:
        if prev is None:
            raise da.NotApplicable(f"{ds.ref} is the first version: nothing to compare with")
        return [_table(da.diff_versions(prev, ds).table()), _img(da.diff_figure(prev, ds), "diff")]

    sections = [
        _section("Summary", lambda: [_table(da.summary_table(ds))]),
        _section(
            "Returns and lengths", lambda: [_img(da.return_length_figure(ds), "returns, lengths")]
        ),
        _section("Per producing policy", lambda: [_table(da.per_policy_table(ds))]),
        _section(
            "Per task",
            lambda: [_table(da.per_task_table(ds)), _img(da.per_task_figure(ds), "per task")],
        ),
        _section("State visitation", coverage),
        _section("Speed and yaw rate against the commanded goal", tracking),
        _section("Instructions and what the body did", told),
        _section(
            "Actions per joint",
            lambda: [_img(da.action_figure(ds), "actions"), _table(da.action_table(ds))],
        ),
        _section("Change from the previous version", diff),
    ]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>flexrl dataset report: {html.escape(ds.ref)}</title><style>{_CSS}</style>"
        f"</head><body><h1>Dataset report: {html.escape(ds.ref)}</h1>"
        f"<p class='meta'>{len(ds)} episodes, {ds.num_steps} steps · digest "
        f"<code>{html.escape(ds.digest)}</code> · generated {now} by flexrl</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
