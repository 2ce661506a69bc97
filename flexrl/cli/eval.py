"""`flexrl eval SOURCE`: roll a policy out per task; metrics, optionally a video; a recorded run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flexrl import evaluation
from flexrl.cli.common import (
    DEFAULT_WORKSPACE,
    CommandOption,
    InstructionOption,
    InstructionsOption,
    JsonOption,
    WorkspaceOption,
    console,
    parse_command,
    print_json,
    read_instructions,
)
from flexrl.config import SEED_MAX
from flexrl.errors import FlexrlError
from flexrl.rollout import video as rollout_video
from flexrl.rollout.sources import load_policy_source
from flexrl.workspace import Workspace


def eval_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A run (id, unique id prefix, or name), a checkpoint file, or a shipped "
            "policy zoo:NAME (see `flexrl zoo ls`)."
        ),
    ],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per task.")] = 10,
    task: Annotated[
        str | None,
        typer.Option(
            help="Evaluate this task only (walk_forward, turn_left, turn_right, goal). "
            "Default: the tasks the policy was trained on."
        ),
    ] = None,
    command: CommandOption = None,
    instruction: InstructionOption = None,
    instructions: InstructionsOption = None,
    instruction_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Steps each instruction holds (default: the episode's length over their "
            "number); the last holds to the end.",
            show_default=False,
        ),
    ] = None,
    deterministic: Annotated[
        bool,
        typer.Option("--deterministic/--stochastic", help="Act with the policy's mean, or sample."),
    ] = True,
    seed: Annotated[
        int, typer.Option(min=0, max=SEED_MAX, help="Seeds the episodes and the policy.")
    ] = 0,
    video: Annotated[
        Path | None,
        typer.Option(help="Render the first episode offscreen into this .mp4 (MUJOCO_GL=egl)."),
    ] = None,
    video_steps: Annotated[
        int, typer.Option(min=1, help="At most this many steps of video (software GL is slow).")
    ] = rollout_video.VIDEO_STEPS,
    num_envs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Envs stepped together, one batched policy call per step (the same number "
            "gives the same episodes bit for bit).",
        ),
    ] = evaluation.DEFAULT_NUM_ENVS,
    target_return: Annotated[
        float | None,
        typer.Option(help="Decision Transformer: the return to condition on (default: recipe's)."),
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Evaluate a policy per task: return, length, fall rate, tracking errors; recorded as a run.

    With --instruction (repeated: given in turn over each episode, --instruction-steps each)
    the goal task follows what the words mean, and each episode gets feedback per instruction:
    what the body did, its similarity to the instruction, and whether it was followed.
    """
    if video is not None:
        if video.suffix.lower() != ".mp4":
            raise FlexrlError(f"--video {video}: expected a path ending in .mp4")
        if not video.parent.is_dir():
            raise FlexrlError(f"--video {video}: directory {video.parent} does not exist")
        # Before anything imports mujoco: it chooses its GL backend once, on import.
        rollout_video.use_offscreen_gl()
        rollout_video.check_gl()
    fixed = parse_command(command)
    texts = read_instructions(instruction, instructions)
    if texts and fixed is not None:
        raise FlexrlError("--command and --instruction exclude each other: give one")
    ws = Workspace(workspace)
    policy = load_policy_source(ws, source, target_return)
    if policy.env is None:
        raise FlexrlError("flexrl eval takes a trained policy; 'random' has no env of its own")
    commands = [fixed] if fixed is not None else []
    if texts:
        from flexrl.language.parser import parse_many

        parsed = parse_many(texts)
        commands = [p.command for p in parsed]
        policy.told.update({p.command: p.text for p in parsed})  # instruction-trained BC/DT
    if commands:
        from flexrl.envs.tasks import at_command, untrained_commands

        for c in untrained_commands(policy.env, commands):  # allowed: a researcher may probe
            cfg = policy.env.command
            sys.stderr.write(
                f"warning: command {list(c)} lies outside the ranges {source} trained on "
                f"(vx {list(cfg.vx_range)}, vy {list(cfg.vy_range)}, "
                f"yaw rate {list(cfg.yaw_rate_range)})\n"
            )
        policy.env = at_command(policy.env, commands, task, instruction_steps)
        task = "goal"
    settings = evaluation.EvalSettings(
        episodes=episodes,
        tasks=evaluation.select_tasks(policy.env, task),
        deterministic=deterministic,
        seed=seed,
        command=list(fixed) if fixed is not None else None,
        num_envs=num_envs,
        instructions=texts or None,
        instruction_steps=policy.env.command.resample_steps if texts else None,
    )
    outcome = evaluation.evaluate_and_record(ws, policy, settings, video, video_steps)
    if json:
        print_json(outcome.to_json())
        return
    _print_table(outcome)


def _print_table(outcome: evaluation.EvalOutcome) -> None:
    report, humanoid = outcome.report, evaluation.is_humanoid(outcome.source.env)
    n = report.settings.episodes
    mode = "deterministic" if report.settings.deterministic else "stochastic"
    target = outcome.source.target_return
    target = "" if target is None else f", target return {target:g}"
    if report.settings.command is not None:
        target += f", command {report.settings.command}"
    table = Table(
        title=f"{outcome.source.name}: {n} {mode} episode{'s' if n != 1 else ''} per task, "
        f"seed {report.settings.seed}{target}",
        header_style="bold",
    )
    table.add_column("task")
    table.add_column("return", justify="right")
    table.add_column("length", justify="right")
    table.add_column("fall rate" if humanoid else "terminated", justify="right")
    if humanoid:
        table.add_column("vel. error (m/s)", justify="right")
        table.add_column("yaw-rate error (rad/s)", justify="right")
        table.add_column("forward speed (m/s)", justify="right")
        table.add_column("distance (m)", justify="right")
        table.add_column("turned (rad)", justify="right")
    for t in report.tasks:
        row = [
            t.task,
            f"{t.return_mean:.1f} ± {t.return_std:.1f}",
            f"{t.length_mean:.0f}",
            f"{t.fall_rate:.0%}",
        ]
        if humanoid:
            row += [
                _maybe(t.lin_vel_error),
                _maybe(t.yaw_rate_error),
                _maybe(t.forward_speed),
                _maybe(t.distance),
                _maybe(t.turned),
            ]
        table.add_row(*row)
    console.print(table)
    if report.settings.instructions:
        _print_feedback(report)
    if outcome.video is not None:
        v = outcome.video
        console.print(
            f"video {v.path}: {v.frames} frames at {v.fps:g} fps "
            f"(rendered at {v.render_fps:.1f} frames/s)"
        )
    console.print(f"[green]recorded[/green] {outcome.run_id}")


def _print_feedback(report: evaluation.EvalReport) -> None:
    """Per instruction: how often it was followed, and what the first episode did."""
    table = Table(title="instructions: what the body did", header_style="bold")
    for column in ("instruction", "followed", "similarity", "first episode"):
        table.add_column(
            column, justify="right" if column in ("followed", "similarity") else "left"
        )
    for k, text in enumerate(report.settings.instructions or []):
        judged = [e.feedback[k] for e in report.episodes if e.feedback and len(e.feedback) > k]
        if not judged:
            table.add_row(text, "-", "-", "(never reached: every episode ended before it)")
            continue
        followed = sum(f["success"] for f in judged)
        similarity = sum(f["similarity"] for f in judged) / len(judged)
        table.add_row(
            text, f"{followed}/{len(judged)}", f"{similarity:.2f}", judged[0]["description"]
        )
    console.print(table)


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
