"""`flexrl zoo ls | export`: the shipped policies, and how one is made from a training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flexrl import zoo
from flexrl.cli.common import DEFAULT_WORKSPACE, JsonOption, WorkspaceOption, console, print_json
from flexrl.errors import FlexrlError
from flexrl.workspace import Workspace

app = typer.Typer(
    help="Shipped policies (zoo:NAME works wherever a run is accepted).", no_args_is_help=True
)


@app.command("ls")
def ls(json_out: JsonOption = False) -> None:
    """List the shipped policies with their training budget and eval figures."""
    infos = [zoo.read_info(zoo.zoo_path(zoo.PREFIX + name)) for name in zoo.names()]
    if json_out:
        print_json(infos)
        return
    table = Table(header_style="bold")
    for column in ("policy", "env steps", "train time", "tasks: speed m/s · yaw err · falls"):
        table.add_column(column, justify="left" if column[0] in "pt" else "right")
    for info in infos:
        figures = [
            f"{task} {_maybe(row.get('forward_speed'))} · {_maybe(row.get('yaw_rate_error'))}"
            f" · {row['fall_rate']:.0%}"
            for task, row in info.get("eval", {}).get("tasks", {}).items()
        ]
        steps, seconds = f"{info['global_step']:,}", _minutes(info.get("train_seconds"))
        if info.get("lineage"):  # a fine-tune: also what it took from nothing
            total = info.get("total_global_step")
            steps += f"\n{'-' if total is None else f'{total:,}'} in all"
            seconds += f"\n{_minutes(info.get('total_train_seconds'))} in all"
        table.add_row(info["name"], steps, seconds, "\n".join(figures) or "-")
    console.print(table)


@app.command("export")
def export(
    run: Annotated[str, typer.Argument(help="A train run (id, prefix or name) or checkpoint.")],
    name: Annotated[str, typer.Argument(help="Zoo name, e.g. walk_forward.")],
    eval_json: Annotated[
        Path | None,
        typer.Option("--eval", help="`flexrl eval ... --json` output to ship beside it."),
    ] = None,
    to: Annotated[Path, typer.Option(help="Directory to write into.")] = zoo.ZOO_DIR,
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror",
            help="Export the Humanoid policy's mirror image, left and right swapped (a turn_left "
            "policy as turn_right): exact, no training. Evaluate the export, then export again "
            "with --eval.",
        ),
    ] = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Export a training checkpoint as a shipped policy: NAME.safetensors and NAME.json."""
    from flexrl.rl.checkpoint import load_checkpoint
    from flexrl.rollout.sources import resolve_source
    from flexrl.workspace.runs import check_name

    check_name(name, "zoo name")
    if to.exists() and not to.is_dir():
        raise FlexrlError(f"--to {to}: a file; give the directory to write into")
    ws = Workspace(workspace)
    checkpoint, _, record = resolve_source(ws, run)
    info: dict[str, Any] = {}
    if record is not None:
        info["run"] = {"id": record.id, "name": record.name}
        info["train_seconds"] = _train_seconds(ws.run_dir(record.id) / "metrics.csv")
    data = load_checkpoint(checkpoint)
    lineage = _lineage(ws, data["recipe"])
    if lineage:  # a fine-tune: the trainings it started from, and the cost from nothing
        info["lineage"] = lineage
        this = {"global_step": int(data["global_step"]), "train_seconds": info.get("train_seconds")}
        for key in this:
            values = [stage[key] for stage in [*lineage, this]]
            info[f"total_{key}"] = None if None in values else sum(values)
    if eval_json is not None:
        try:
            report = json.loads(eval_json.read_text(encoding="utf-8"))
            info["eval"] = {"settings": report["settings"], "tasks": report["tasks"]}
        except (OSError, ValueError, KeyError) as e:
            message = f"--eval {eval_json}: not a `flexrl eval --json` report ({e})"
            raise FlexrlError(message) from None
    if mirror:
        from flexrl.rl.symmetry import mirror_policy

        try:
            data = mirror_policy(data)
        except ValueError as e:  # not a policy of the Humanoid skills
            raise FlexrlError(f"--mirror: {run}: {e}") from None
    path = zoo.export_policy(checkpoint, data, name, info, to, mirrored=mirror)
    size = f"{path.stat().st_size / 1024:.0f} KiB"
    # emoji=False: "zoo:x: ..." must not print as the :x: emoji
    console.print(f"exported {zoo.PREFIX}{name}: {path} ({size})", emoji=False)


def _lineage(ws: Workspace, recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """The trainings a recipe's `ppo.init_from` started from, first to last, back to a start
    from nothing (a shipped policy brings the lineage in its JSON)."""
    from flexrl.rl.checkpoint import load_checkpoint
    from flexrl.rollout.sources import resolve_source

    source = recipe.get("ppo", {}).get("init_from")
    if source is None:
        return []
    if zoo.is_zoo_ref(source):
        info = zoo.read_info(zoo.zoo_path(source))
        stage = {"ref": info["name"], "run": info.get("run")}
        stage |= {key: info.get(key) for key in ("global_step", "train_seconds")}
        return [*info.get("lineage", []), stage]
    try:
        path, _, record = resolve_source(ws, source)
    except FlexrlError:  # gone from this workspace: named, its cost unknown
        return [{"ref": source, "run": None, "global_step": None, "train_seconds": None}]
    data = load_checkpoint(path)
    stage = {"ref": source, "run": None, "global_step": int(data["global_step"])}
    stage["train_seconds"] = None
    if record is not None:
        stage["run"] = {"id": record.id, "name": record.name}
        stage["train_seconds"] = _train_seconds(ws.run_dir(record.id) / "metrics.csv")
    return [*_lineage(ws, data["recipe"]), stage]


def _train_seconds(metrics: Path) -> float | None:
    """Wall time of the training behind a run (resumed runs carry their parents' time)."""
    if not metrics.is_file():
        return None
    with open(metrics, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["time_s"]) if rows else None


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
