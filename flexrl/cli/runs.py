"""`flexrl runs ls | show | lineage`: what was run, how it went, what it came from and fed."""

from __future__ import annotations

import fnmatch
import math
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from flexrl.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    print_fields,
    print_json,
)
from flexrl.errors import FlexrlError
from flexrl.workspace import LineageGraph, RunStatus, Workspace, build_graph, resolve_target

app = typer.Typer(help="List runs, show one, walk its lineage.", no_args_is_help=True)

STATUS_STYLE = {
    RunStatus.RUNNING: "cyan",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.INTERRUPTED: "yellow",
    RunStatus.LOST: "magenta",
}


@app.command("ls")
def ls(
    kind: Annotated[
        str | None, typer.Option(help="Only runs of this kind (train, collect, ...).")
    ] = None,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Only runs whose name matches (glob: walk*).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the N most recent matching runs.")] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """List runs, oldest first."""
    records = Workspace(workspace).list_runs()
    if kind:
        records = [r for r in records if r.kind == kind]
    if status:
        records = [r for r in records if r.status == status]
    if name:
        records = [r for r in records if fnmatch.fnmatchcase(r.name, name)]
    if limit is not None:
        records = records[-limit:] if limit > 0 else []
    if json:  # serialised by pydantic's compiled encoder: thousands of runs in milliseconds
        sys.stdout.write("[" + ",\n".join(r.model_dump_json() for r in records) + "]\n")
        return
    if not records:
        console.print(f"no runs in {workspace}")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "kind", "name", "status", "started (UTC)", "duration"):
        table.add_column(column, no_wrap=True)
    table.add_column("last metrics", overflow="fold")
    for r in records:
        table.add_row(
            r.id,
            r.kind,
            r.name,
            f"[{STATUS_STYLE[r.status]}]{r.status.value}[/]",
            r.created_at[:19].replace("T", " "),
            _duration(r.duration_s),
            _metrics_summary(r.metrics_last),
        )
    console.print(table)


@app.command("show")
def show(
    run: Annotated[
        str, typer.Argument(help="Run id, unique id prefix, or name (latest of that name).")
    ],
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Everything recorded about one run."""
    ws = Workspace(workspace)
    record = ws.resolve_run(run)
    provenance = ws.load_provenance(record.id)
    if json:
        print_json(
            {
                "run": record.model_dump(mode="json"),
                "provenance": provenance.model_dump(mode="json") if provenance else None,
                "dir": str(ws.run_dir(record.id)),
            }
        )
        return
    style = STATUS_STYLE[record.status]
    console.print(f"[bold]{record.id}[/bold]  {record.kind}  [{style}]{record.status.value}[/]")
    rows = [
        ("name", record.name),
        ("directory", str(ws.run_dir(record.id))),
        ("started", record.created_at),
        ("ended", record.ended_at or "-"),
        ("duration", _duration(record.duration_s)),
        ("seed", str(record.seed) if record.seed is not None else "-"),
    ]
    if record.status == RunStatus.LOST:
        rows.append(
            ("note", f"process {record.pid} on {record.host} is gone without recording an end")
        )
    if record.error:
        rows.append(("error", record.error))
    if provenance:
        code = provenance.code
        commit = code.git_commit[:12] if code.git_commit else "not a git checkout"
        dirty = (
            " (dirty: see code.diff)"
            if code.diff_file
            else (" (untracked files)" if code.git_dirty else "")
        )
        rows += [
            ("command", " ".join(provenance.argv)),
            ("code", f"flexrl {code.flexrl_version}, {commit}{dirty}"),
            ("host", f"{provenance.host}, Python {provenance.python}, {provenance.platform}"),
            ("packages", ", ".join(f"{k} {v}" for k, v in provenance.packages.items())),
        ]
    for label, artifacts in (("inputs", record.inputs), ("outputs", record.outputs)):
        for i, a in enumerate(artifacts):
            digest = f"  {a.digest[:19]}" if a.digest else ""
            role = escape(f" [{a.role}]") if a.role else ""  # brackets are rich markup
            rows.append((label if i == 0 else "", f"{a.kind.value} {a.ref}{role}{digest}"))
    if record.metrics_last:
        rows.append(
            (
                "metrics",
                f"{record.metrics_rows} rows; last: {_metrics_summary(record.metrics_last, 8)}",
            )
        )
    print_fields(rows)


@app.command("lineage")
def lineage(
    target: Annotated[
        str,
        typer.Argument(help="A run (id, prefix, name), a dataset reference (name@v3) or a file."),
    ],
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """What a run or dataset came from (upstream) and what was made from it (downstream)."""
    ws = Workspace(workspace)
    graph = build_graph(ws)
    key = resolve_target(graph, ws, target, dataset_digest=lambda ref: _dataset_digest(ref, ws))
    up, down = graph.walk(key, "upstream"), graph.walk(key, "downstream")
    if json:
        involved = {key} | {n for edge in up + down for n in edge}
        print_json(
            {
                "target": key,
                "nodes": {
                    k: {"kind": graph.nodes[k].kind, **graph.nodes[k].info}
                    for k in sorted(involved)
                },
                "upstream": list(dict.fromkeys(parent for _, parent in up)),
                "downstream": list(dict.fromkeys(child for _, child in down)),
                # edges in the direction data flowed: producer -> artifact -> consumer
                "edges": [{"from": b, "to": a} for a, b in up]
                + [{"from": a, "to": b} for a, b in down],
            }
        )
        return
    tree = Tree(f"[bold]{escape(graph.nodes[key].label)}[/bold]")
    for direction, title in (
        ("upstream", "upstream (came from)"),
        ("downstream", "downstream (made from it)"),
    ):
        branch = tree.add(f"[dim]{title}[/dim]")
        step = graph.parents if direction == "upstream" else graph.children
        if not step.get(key):
            branch.add("[dim]nothing recorded[/dim]")
        _grow(branch, graph, key, step, seen=set())
    console.print(tree)


def _dataset_digest(ref: str, ws: Workspace) -> str | None:
    """The digest of a dataset version in the store, or None when `ref` names none."""
    from flexrl.store import resolve  # numpy + zarr: loaded only for lineage

    try:
        return resolve(ref, ws.root).digest
    except FlexrlError:
        return None


def _grow(
    branch: Tree, graph: LineageGraph, key: str, step: dict[str, list[str]], seen: set[str]
) -> None:
    for other in step.get(key, []):
        node = graph.nodes[other]
        label = f"[bold cyan]{escape(node.label)}[/]" if node.kind == "run" else escape(node.label)
        if other in seen:  # a DAG: show each node's history once
            branch.add(f"{label} [dim](shown above)[/dim]")
            continue
        seen.add(other)
        _grow(branch.add(label), graph, other, step, seen)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else (f"{m}m{s:02d}s" if m else f"{seconds:.1f}s")


# Shown first in summaries: what a researcher looks for before the bookkeeping columns.
HEADLINE_METRICS = ("episodic_return", "eval_return", "return", "val_loss", "loss")
BOOKKEEPING_METRICS = {"global_step", "learning_rate", "SPS"}


def _metrics_summary(metrics: dict[str, float], n: int = 3) -> str:
    headline = [k for k in HEADLINE_METRICS if k in metrics]
    rest = [k for k in metrics if k not in headline and k not in BOOKKEEPING_METRICS]
    return ", ".join(f"{k}={_number(metrics[k])}" for k in (headline + rest)[:n])


def _number(value: float) -> str:
    """Counts as counts (steps=30,720, not 3.072e+04); other values to 4 significant digits."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
