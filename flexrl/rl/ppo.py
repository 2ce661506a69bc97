"""PPO for continuous actions, after CleanRL's ppo_continuous_action.py, read top to bottom.

Hyperparameters come from the recipe (`TrainRecipe.ppo`, CleanRL's names). What flexrl adds:
observation and reward normalisation held here so checkpoints carry them, bootstrapping from
the final observation when an episode is truncated (CleanRL treats a time limit as a death),
checkpoints with everything needed to resume bit-exactly on CPU, and run records.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn, optim

from flexrl.config import TrainRecipe, recipe_to_yaml
from flexrl.errors import FlexrlError
from flexrl.rl import checkpoint as ckpt
from flexrl.rl.agent import Agent
from flexrl.rl.envs import (
    get_vector_env_state,
    make_vector_env,
    set_every_env,
    set_vector_env_state,
)
from flexrl.rl.normalization import ObsNormalizer, RewardScaler, ValueNormalizer
from flexrl.rl.symmetry import MirrorLoss
from flexrl.rl.tracking import CommandTracking
from flexrl.seeding import seed_everything
from flexrl.workspace.records import Artifact, ArtifactKind, RunRecord
from flexrl.workspace.runs import Run

RECENT_EPISODES = 20  # the progress bar shows the mean return of this many latest episodes


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a (num_steps, num_envs) rollout.

    dones[t] says obs[t] starts a new episode, so step t-1 did not continue into it. Rewards of
    truncated steps already include gamma * V(final obs), so a done always cuts the bootstrap.
    Returns (advantages, returns = advantages + values).
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def bootstrap_truncated(
    rewards: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
    infos: dict[str, Any],
    value_of: Callable[[np.ndarray], np.ndarray],
    gamma: float,
) -> np.ndarray:
    """A time limit is not a failure: where an episode was truncated (and not terminated), add
    gamma * V(final observation), which autoreset moved into infos["final_obs"]. GAE then
    treats every episode end alike."""
    truncated = truncations & ~terminations
    if truncated.any():
        rewards = rewards.copy()
        rewards[truncated] += gamma * value_of(np.stack(infos["final_obs"][truncated]))
    return rewards


def train_ppo(
    recipe: TrainRecipe,
    run: Run,
    resume_from: RunRecord | None = None,
    *,
    init_from: tuple[Path, Artifact] | None = None,
    record_to: str | None = None,
    record_every: int = 1,
    progress: bool = True,
) -> None:
    """Train a PPO agent as the recipe says, recording metrics and checkpoints in `run`.

    With `resume_from`, continue from that run's newest checkpoint; on CPU the result is the
    same, bit for bit, as a run that was never interrupted. With `init_from` (the checkpoint
    `recipe.ppo.init_from` resolved to, and its artifact), start a new run from its policy
    (see `_init_from_policy`). With `record_to`, the training rollouts are also stored as that
    dataset (see flexrl.rl.replay).
    """
    args = recipe.ppo
    num_envs = recipe.env.num_envs
    batch_size = num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    if minibatch_size < 1:
        raise FlexrlError(
            f"ppo.num_minibatches: {args.num_minibatches} is more than the {batch_size} steps of "
            "a rollout (env.num_envs * ppo.num_steps)"
        )
    num_updates = math.ceil(args.total_steps / batch_size)  # at least total_steps are taken
    anneal_updates = math.ceil((args.anneal_steps or args.total_steps) / batch_size)

    seed_everything(recipe.seed, recipe.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    envs = make_vector_env(recipe.env)
    curriculum_steps = recipe.env.command.curriculum_steps if recipe.env.id is None else 0
    if recipe.env.id is None:  # training's own command mix (CommandConfig.train_slow_prob)
        set_every_env(envs, "command_training", True)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    action_low = envs.single_action_space.low
    action_high = envs.single_action_space.high
    recorder = None
    if record_to is not None:
        from flexrl.rl.replay import ReplayRecorder

        recorder = ReplayRecorder(
            run, record_to, num_envs, envs.single_observation_space.shape, record_every
        )

    agent = Agent(obs_dim, act_dim, args.hidden_sizes).to(device)
    # Not fused=True: 11% faster end to end, but a rerun of the 1M-step Humanoid benchmark
    # with it scored 670 +- 63 against 807 +- 120 (3 seeds each; see benchmarks/RESULTS.md).
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    obs_normalizer = ObsNormalizer((obs_dim,), args.clip_obs, enabled=args.norm_obs)
    reward_scaler = RewardScaler(num_envs, args.gamma, args.clip_reward, enabled=args.norm_reward)
    value_normalizer = ValueNormalizer(enabled=args.norm_value)
    mirror_loss = MirrorLoss(obs_dim, action_high, device) if args.mirror_coef > 0 else None

    # Rollout storage, CleanRL's layout: (num_steps, num_envs, ...).
    obs = torch.zeros((args.num_steps, num_envs, obs_dim), device=device)
    actions = torch.zeros((args.num_steps, num_envs, act_dim), device=device)
    logprobs = torch.zeros((args.num_steps, num_envs), device=device)
    rewards = torch.zeros((args.num_steps, num_envs), device=device)
    dones = torch.zeros((args.num_steps, num_envs), device=device)
    values = torch.zeros((args.num_steps, num_envs), device=device)

    # Start: envs seeded seed+i, or everything as the checkpoint left it.
    raw_obs, reset_infos = envs.reset(seed=[recipe.seed + i for i in range(num_envs)])
    if init_from is not None and resume_from is None:  # a resumed run has it in its checkpoint
        _init_from_policy(run, recipe, *init_from, agent, obs_normalizer, value_normalizer, raw_obs)
    if recorder is not None and resume_from is None:
        recorder.reset(raw_obs, reset_infos)
    next_obs = torch.from_numpy(obs_normalizer(raw_obs, update=True)).to(device)
    next_done = torch.zeros(num_envs, device=device)
    episode_return = np.zeros(num_envs)
    episode_length = np.zeros(num_envs, dtype=np.int64)
    recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
    several_tasks = (
        recipe.env.id is None and sum(w > 0 for w in recipe.env.task_weights.values()) > 1
    )
    tracking = CommandTracking(num_envs, per_task=several_tasks)
    global_step = 0
    start_update = 1
    if resume_from is not None:
        state, path = _load_resume_state(run, resume_from)
        try:
            agent.load_state_dict(state["agent"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as e:
            raise FlexrlError(f"--resume: {path} does not fit this recipe's network: {e}") from None
        obs_normalizer.load_state_dict(state["obs_rms"])
        reward_scaler.load_state_dict(state["reward_scaler"])
        if "value_rms" in state:  # checkpoints from before value normalisation have none
            value_normalizer.load_state_dict(state["value_rms"])
        set_vector_env_state(envs, state["envs"])
        next_obs = state["next_obs"].to(device)
        next_done = state["next_done"].to(device)
        episode_return = state["episode"]["return"].numpy().copy()
        episode_length = state["episode"]["length"].numpy().copy()
        recent_returns.extend(state["episode"]["recent_returns"])
        if "tracking" in state["episode"]:
            tracking.load_state_dict(state["episode"]["tracking"])
        global_step = state["global_step"]
        start_update = state["update"] + 1
        ckpt.set_rng_state(state["rng"])

    def value_of(raw_obs: np.ndarray) -> np.ndarray:
        """V(s) of raw observations, normalised with the current statistics (not updating)."""
        with torch.no_grad():
            x = torch.from_numpy(obs_normalizer(raw_obs)).to(device)
            return value_normalizer.denormalize(agent.get_value(x)).flatten().cpu().numpy()

    def snapshot(update: int) -> bytes:
        """Everything needed to continue after `update` (see flexrl.rl.checkpoint)."""
        return ckpt.to_bytes(
            {
                "format": ckpt.FORMAT,
                "recipe": recipe.model_dump(mode="json"),
                "global_step": global_step,
                "update": update,
                "obs_dim": obs_dim,
                "act_dim": act_dim,
                "action_low": torch.from_numpy(action_low.copy()),
                "action_high": torch.from_numpy(action_high.copy()),
                "agent": agent.state_dict(),
                "optimizer": optimizer.state_dict(),
                "obs_rms": obs_normalizer.state_dict(),
                "reward_scaler": reward_scaler.state_dict(),
                "value_rms": value_normalizer.state_dict(),
                "rng": ckpt.get_rng_state(),
                "envs": get_vector_env_state(envs),
                "next_obs": next_obs.cpu(),
                "next_done": next_done.cpu(),
                "episode": {
                    "return": torch.from_numpy(episode_return.copy()),
                    "length": torch.from_numpy(episode_length.copy()),
                    "recent_returns": list(recent_returns),
                    "tracking": tracking.state_dict(),
                },
            }
        )

    from torch.utils.tensorboard import SummaryWriter  # slow import; only training needs it

    writer = SummaryWriter(str(run.dir / "tensorboard"))
    writer.add_text("recipe", f"```yaml\n{recipe_to_yaml(recipe)}```")
    bar = Progress(
        TextColumn("[bold]PPO[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps · {task.fields[sps]:,.0f} steps/s · return {task.fields[ret]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    task = bar.add_task(
        "train", total=num_updates * batch_size, completed=global_step, sps=0.0, ret="-"
    )
    latest = snapshot(start_update - 1)  # an interruption before the first update keeps this
    latest_update = completed = start_update - 1
    snapshot_cost, snapshot_at = 0.0, time.monotonic()
    start_time, start_step = time.monotonic(), global_step
    finished = False
    try:
        bar.start()
        for update in range(start_update, num_updates + 1):
            if args.anneal_lr:
                frac = max(0.0, 1.0 - (update - 1.0) / anneal_updates)
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate
            if curriculum_steps:  # a function of the step count: a resumed run goes on the same
                command_progress = min(1.0, global_step / curriculum_steps)
                set_every_env(envs, "command_progress", command_progress)
            finished_returns: list[float] = []
            finished_lengths: list[int] = []

            for step in range(args.num_steps):
                global_step += num_envs
                obs[step] = next_obs
                dones[step] = next_done

                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                    values[step] = value_normalizer.denormalize(value).flatten()
                actions[step] = action
                logprobs[step] = logprob

                # The env gets the action clipped to its bounds; the buffer keeps the sample,
                # whose log-prob is what the Gaussian gave.
                env_action = np.clip(action.cpu().numpy(), action_low, action_high)
                if not np.isfinite(env_action).all():
                    raise FlexrlError(
                        f"PPO diverged at update {update}: the policy gives NaN actions "
                        "(try a lower ppo.learning_rate)"
                    )
                raw_obs, reward, terminations, truncations, infos = envs.step(env_action)
                done = terminations | truncations
                tracking.step(infos, terminations, truncations)
                if recorder is not None:
                    recorder.step(
                        env_action, reward, terminations, truncations, infos, raw_obs, global_step
                    )

                episode_return += reward
                episode_length += 1
                for i in np.flatnonzero(done):
                    finished_returns.append(float(episode_return[i]))
                    finished_lengths.append(int(episode_length[i]))
                    recent_returns.append(float(episode_return[i]))
                episode_return[done] = 0.0
                episode_length[done] = 0

                scaled_reward = bootstrap_truncated(
                    reward_scaler(reward, done),
                    terminations,
                    truncations,
                    infos,
                    value_of,
                    args.gamma,
                )
                # The normalisers return fresh float32 arrays: wrap them, no copy.
                rewards[step] = torch.from_numpy(scaled_reward)
                next_obs = torch.from_numpy(obs_normalizer(raw_obs, update=True)).to(device)
                next_done = torch.from_numpy(done.astype(np.float32)).to(device)

            with torch.no_grad():
                next_value = value_normalizer.denormalize(agent.get_value(next_obs)).reshape(1, -1)
                advantages, returns = compute_gae(
                    rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda
                )

            # Flatten the batch
            b_obs = obs.reshape((-1, obs_dim))
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape((-1, act_dim))
            b_advantages = advantages.reshape(-1)
            # The critic learns normalised returns; its old outputs in the same units clip it.
            value_normalizer.update(returns)
            b_returns = value_normalizer.normalize(returns.reshape(-1))
            b_values = value_normalizer.normalize(values.reshape(-1))

            # Optimise the policy and value networks
            if mirror_loss is not None:
                mirror_loss.refresh(obs_normalizer)
            b_inds = np.arange(batch_size)
            clipfracs = []
            for _epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                b_inds_t = torch.from_numpy(b_inds).to(device)  # index with a tensor: no copy
                for start in range(0, batch_size, minibatch_size):
                    mb_inds = b_inds_t[start : start + minibatch_size]
                    mb_returns, mb_values = b_returns[mb_inds], b_values[mb_inds]

                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        b_obs[mb_inds], b_actions[mb_inds]
                    )
                    logratio = newlogprob - b_logprobs[mb_inds]
                    ratio = logratio.exp()

                    with torch.no_grad():
                        # http://joschu.net/blog/kl-approx.html
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())

                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (
                            mb_advantages.std() + 1e-8
                        )

                    # Policy loss: the clipped surrogate, negated because optimisers minimise
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(
                        ratio, 1 - args.clip_coef, 1 + args.clip_coef
                    )
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                    # Value loss
                    newvalue = newvalue.view(-1)
                    if args.clip_vloss:
                        v_loss_unclipped = (newvalue - mb_returns) ** 2
                        v_clipped = mb_values + torch.clamp(
                            newvalue - mb_values, -args.clip_coef, args.clip_coef
                        )
                        v_loss_clipped = (v_clipped - mb_returns) ** 2
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()

                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                    if mirror_loss is not None:
                        m_loss = mirror_loss(agent.actor_mean, b_obs[mb_inds])
                        loss = loss + args.mirror_coef * m_loss

                    if not torch.isfinite(loss):  # stop before NaN reaches the weights
                        raise FlexrlError(
                            f"PPO diverged at update {update}: the loss is {loss.item()} "
                            "(try a lower ppo.learning_rate or max_grad_norm); the run failed"
                        )
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            sps = (global_step - start_step) / max(time.monotonic() - start_time, 1e-9)
            metrics: dict[str, float] = {
                "global_step": global_step,
                "learning_rate": optimizer.param_groups[0]["lr"],
                "value_loss": v_loss.item(),
                "policy_loss": pg_loss.item(),
                "entropy": entropy_loss.item(),
                "old_approx_kl": old_approx_kl.item(),
                "approx_kl": approx_kl.item(),
                "clipfrac": float(np.mean(torch.stack(clipfracs).tolist())),
                "explained_variance": float(explained_var),
                "SPS": sps,
            }
            if mirror_loss is not None:
                metrics["mirror_loss"] = m_loss.item()
            if curriculum_steps:
                metrics["command_progress"] = command_progress
            if finished_returns:  # updates in which no episode ended leave these cells empty
                metrics["episodic_return"] = float(np.mean(finished_returns))
                metrics["episodic_length"] = float(np.mean(finished_lengths))
            metrics.update(tracking.metrics())
            run.log_metrics(global_step, metrics)
            for name, value in metrics.items():
                group = _TB_GROUP.get(name.split("/")[0], "losses")  # per task: name/task
                writer.add_scalar(f"{group}/{name}", value, global_step)
            recent = f"{np.mean(recent_returns):.1f}" if recent_returns else "-"
            bar.update(task, completed=global_step, sps=sps, ret=recent)

            completed = update
            checkpoint_due = (
                args.checkpoint_every
                and update % args.checkpoint_every == 0
                and update < num_updates
            )
            # The state an interruption keeps. With many MuJoCo envs it costs ~0.1 s, so it is
            # taken at checkpoints and otherwise only often enough to cost <= 2% of the time.
            if checkpoint_due or time.monotonic() - snapshot_at >= 50 * snapshot_cost:
                began = time.monotonic()
                latest, latest_update = snapshot(update), update
                snapshot_at = time.monotonic()
                snapshot_cost = snapshot_at - began
                if recorder is not None:  # episodes up to this snapshot are what it keeps
                    recorder.end_update()
            if checkpoint_due:
                _save_checkpoint(run, latest, "last")
                if recorder is not None:  # the replay's versions match checkpoints
                    recorder.commit()
            if (
                args.stop_at_return is not None
                and len(recent_returns) == RECENT_EPISODES
                and np.mean(recent_returns) >= args.stop_at_return
            ):
                bar.console.print(
                    f"stopping at step {global_step:,}: the last {RECENT_EPISODES} episodes "
                    f"returned {np.mean(recent_returns):.1f} on average, "
                    f">= ppo.stop_at_return={args.stop_at_return:g}",
                    soft_wrap=True,
                )
                break
        if latest_update != completed:
            latest = snapshot(completed)
            if recorder is not None:
                recorder.end_update()
        _save_checkpoint(run, latest, "final")
        if recorder is not None:
            recorder.commit()
        finished = True
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as RunInterrupted: keep the last boundary
        _save_checkpoint(run, latest, "last")
        if recorder is not None:
            recorder.commit()
        raise
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    finally:
        bar.stop()
        writer.close()
        # Interrupted, env workers may be mid-call: waiting for their answer to close them can
        # hang for ever (the answer was lost with the interrupted call), so they are terminated.
        envs.close(terminate=not finished)


_TB_GROUP = {
    "episodic_return": "charts",
    "episodic_length": "charts",
    "learning_rate": "charts",
    "command_progress": "charts",
    "SPS": "charts",
    "global_step": "charts",
    "episodic_fall_rate": "charts",
    "episodic_forward_speed": "charts",
    "episodic_lin_vel_error": "charts",
    "episodic_yaw_rate_error": "charts",
}


def _save_checkpoint(run: Run, data: bytes, role: str) -> Path:
    """Write `<role>.pt` and record it with its digest."""
    path = run.artifacts_dir / f"{role}.pt"
    ckpt.write_checkpoint(path, data)
    run.add_artifact(path, ArtifactKind.CHECKPOINT, role=role)  # replaces the older entry
    return path


def _init_from_policy(
    run: Run,
    recipe: TrainRecipe,
    path: Path,
    artifact: Artifact,
    agent: Agent,
    obs_normalizer: ObsNormalizer,
    value_normalizer: ValueNormalizer,
    first_obs: np.ndarray,
) -> None:
    """Load a learned policy's weights and normalisers as the start of a new run.

    An observation the source only ever saw constant (a command it was never given another
    value of) takes its mean and variance from this run's first observations (the envs'
    resets, each with its own command), so a new command moves it as much as any other input
    moves; the source's near-zero variance would have sent it to the clip, and a unit variance
    would leave a command range of 0.5 m/s a tenth of the other inputs' spread."""
    state = ckpt.load_checkpoint(path)
    if ckpt.gains_tracking(TrainRecipe.model_validate(state["recipe"]), recipe):
        state = ckpt.widen_for_tracking(state)
    agent.load_state_dict(state["agent"])  # the shapes were checked (ckpt.check_init_source)
    obs_normalizer.load_state_dict(state["obs_rms"])
    rms = obs_normalizer.rms
    constant = rms.var < 1e-6
    first_var = first_obs.var(axis=0)
    rms.mean = np.where(constant, first_obs.mean(axis=0), rms.mean)
    rms.var = np.where(constant, np.where(first_var > 1e-6, first_var, 1.0), rms.var)
    if "value_rms" in state:
        value_normalizer.load_state_dict(state["value_rms"])
    run.add_input(artifact.model_copy(update={"role": "init"}))


def _load_resume_state(run: Run, old: RunRecord) -> tuple[dict[str, Any], Path]:
    """Read the old run's newest checkpoint, record both as inputs of this run, and start its
    metrics with the old run's up to the checkpoint."""
    path, artifact = ckpt.run_checkpoint(run.workspace, old)
    state = ckpt.load_checkpoint(path)
    run.add_input(Artifact(kind=ArtifactKind.RUN, ref=old.id, role="resume"))
    run.add_input(artifact.model_copy(update={"role": "resume"}))
    run.continue_metrics(old, state["global_step"])  # one history up to where this run goes on
    return state, path
