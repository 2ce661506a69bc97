"""`flexrl train`: online PPO from a recipe, recorded as a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flexrl.cli.common import DEFAULT_WORKSPACE, WorkspaceOption, console
from flexrl.config import TrainRecipe, load_recipe
from flexrl.workspace import Workspace

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: key.path=value (repeatable)."),
]


def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML file.")],
    name: Annotated[str | None, typer.Option(help="Run name (default: the recipe's name).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: the recipe's seed).")] = None,
    overrides: SetOption = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue a run from its last checkpoint.")
    ] = None,
    record_to: Annotated[
        str | None,
        typer.Option(
            help="Also store the training rollouts as this dataset (a mixed-quality 'replay'); "
            "a version is committed with every checkpoint.",
        ),
    ] = None,
    record_every: Annotated[
        int, typer.Option(min=1, help="With --record-to: keep one episode in this many.")
    ] = 1,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Train a PPO policy from a recipe; run, metrics and checkpoints go to the workspace."""
    recipe = load_recipe(config, TrainRecipe, overrides or [])
    if seed is not None:
        recipe.seed = seed
    ws = Workspace(workspace)
    if record_to is not None:  # refuse a bad target before a run exists
        from flexrl.collection import check_dataset_name, probe_env
        from flexrl.rl.replay import check_record_target
        from flexrl.store import ShardWriter

        check_dataset_name(record_to, "--record-to")
        observation_shape, _bounded = probe_env(recipe.env)
        check_record_target(ShardWriter(record_to, ws.root), observation_shape)
    from flexrl.rl import train_ppo  # torch and mujoco load only for commands that need them

    resume_from = resume and ws.resolve_run(resume)
    with ws.start_run("train", name or recipe.name, recipe=recipe, seed=recipe.seed) as run:
        console.print(f"run [bold]{run.id}[/bold] in {run.dir}")
        train_ppo(
            recipe,
            run,
            resume_from=resume_from,
            record_to=record_to,
            record_every=record_every,
        )
    console.print(f"[green]completed[/green] {run.id}")
    replay = [a.ref for a in run.record.outputs if a.role == "replay"]
    if replay:
        console.print(f"training rollouts recorded as [bold]{replay[-1]}[/bold]")
