"""`flexrl train`: online PPO from a recipe, recorded as a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flexrl.cli.common import DEFAULT_WORKSPACE, WorkspaceOption, console
from flexrl.config import SEED_MAX, TrainRecipe, load_recipe
from flexrl.errors import FlexrlError
from flexrl.workspace import Workspace
from flexrl.workspace.runs import RECIPE_FILE

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: key.path=value (repeatable)."),
]


def train(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Recipe YAML file. Required, unless --resume names a run (then its recipe).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Run name (default: the recipe's name; with --resume, the run's)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, max=SEED_MAX, help="Seed (default: the recipe's seed)."),
    ] = None,
    overrides: SetOption = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue a train run from its last checkpoint, as a new run of the same name "
            "that holds the whole metrics history (the interrupted run stays as it is)."
        ),
    ] = None,
    record_to: Annotated[
        str | None,
        typer.Option(
            help="Also store the training rollouts as this dataset (a name, or a URI such as "
            "s3://bucket/prefix/NAME; a mixed-quality 'replay'); a version is committed with "
            "every checkpoint.",
        ),
    ] = None,
    record_every: Annotated[
        int, typer.Option(min=1, help="With --record-to: keep one episode in this many.")
    ] = 1,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Train a PPO policy from a recipe; run, metrics and checkpoints go to the workspace."""
    ws = Workspace(workspace)
    # Everything that can be wrong with the input is checked before a run is recorded.
    resumed = ws.resolve_run(resume) if resume else None
    if resumed is not None:
        if resumed.kind != "train":
            raise FlexrlError(f"--resume: run {resumed.id} is a {resumed.kind} run, not train")
        from flexrl.rl.checkpoint import load_checkpoint, run_checkpoint

        load_checkpoint(run_checkpoint(ws, resumed)[0])  # present, unchanged and readable
        if config is None:
            config = ws.run_dir(resumed.id) / RECIPE_FILE
        name = name or resumed.name  # `eval NAME` then finds the run that continued
    if config is None:
        raise FlexrlError(
            "--config is required (a recipe YAML, e.g. recipes/quickstart.yaml), "
            "unless --resume names a run"
        )
    seed_override = [] if seed is None else [f"seed={seed}"]
    recipe = load_recipe(config, TrainRecipe, [*(overrides or []), *seed_override])
    if record_to is not None:  # refuse a bad target before a run exists
        from flexrl.rl.replay import check_record_target
        from flexrl.rollout.slots import probe_env
        from flexrl.store import ShardWriter
        from flexrl.store.recording import check_dataset_name

        check_dataset_name(record_to, "--record-to")
        observation_shape, _dtype, _bounded = probe_env(recipe.env)
        check_record_target(ShardWriter(record_to, ws.root), observation_shape)
    init_from = None
    if recipe.ppo.init_from is not None and resumed is None:
        from flexrl.envs import make_flat_env
        from flexrl.rl.checkpoint import check_init_source
        from flexrl.rollout.sources import resolve_source

        try:
            path, artifact, _ = resolve_source(ws, recipe.ppo.init_from)
            env = make_flat_env(recipe.env)
            obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
            env.close()
            check_init_source(path, recipe, obs_dim, act_dim)
        except FlexrlError as e:
            raise FlexrlError(f"ppo.init_from: {e}") from None
        init_from = (path, artifact)
    from flexrl.rl import train_ppo  # torch and mujoco load only for commands that need them

    with ws.start_run("train", name or recipe.name, recipe=recipe, seed=recipe.seed) as run:
        console.print(f"run [bold]{run.id}[/bold] in {run.dir}")
        if resumed is not None:
            console.print(f"continuing {resumed.id}")
        train_ppo(
            recipe,
            run,
            resume_from=resumed,
            init_from=init_from,
            record_to=record_to,
            record_every=record_every,
        )
    console.print(f"[green]completed[/green] {run.id}")
    replay = [a.ref for a in run.record.outputs if a.role == "replay"]
    if replay:
        console.print(f"training rollouts recorded as [bold]{replay[-1]}[/bold]")
