"""Recipes: YAML files loaded into pydantic models, with `--set key.path=value` overrides.

Every error names the file and the key path (`ppo.learning_rate: input should be a valid
number`) and is raised as a FlexrlError, so the CLI prints one line and exits 2. The fully
resolved model (defaults filled in, overrides applied) is what a run records.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from flexrl.errors import FlexrlError


class StrictModel(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated, and
    no float may be NaN or infinite (an infinite learning rate or clip is never meant)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Seeds reach numpy's legacy RNG (< 2**32), torch (< 2**64) and gymnasium, plus offsets (env i
# gets seed + i, episode k seed + k): below 2**31 every one of them takes it, offsets included.
SEED_MAX = 2**31 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description=f"0 to {SEED_MAX}")]
# torch.set_num_threads(100000) crashes the process; 1024 is more than any machine here has.
TORCH_THREADS_MAX = 1024
TorchThreads = Annotated[
    int,
    Field(ge=1, le=TORCH_THREADS_MAX, description="torch threads on CPU; 1 suits small models"),
]
# Layer widths of an MLP: at least one layer, each 1 to 8192 units.
HiddenSizes = Annotated[list[Annotated[int, Field(ge=1, le=8192)]], Field(min_length=1)]


Task = Literal["walk_forward", "turn_left", "turn_right", "goal"]
# Order fixes the integer task id recorded in info["task_id"] and in the store.
TASKS: tuple[Task, ...] = get_args(Task)
ObservationFrame = Literal["world", "heading"]


Range = tuple[float, float]


def _check_range(value: Range) -> Range:
    if value[0] > value[1]:
        raise ValueError(f"a range must be (low, high) with low <= high, got {list(value)}")
    return value


class CommandConfig(StrictModel):
    """Goal commands [vx, vy, yaw_rate] (m/s, m/s, rad/s; velocities in the heading frame)."""

    walk_speed: float = Field(1.0, description="walk_forward: target forward speed, m/s")
    turn_rate: float = Field(0.5, gt=0, description="turn_left/turn_right: |yaw rate|, rad/s")
    turn_speed: float = Field(
        0.0, description="turn_left/turn_right: forward speed, m/s (0 turns on the spot)"
    )
    # `goal` samples each component uniformly from its range, per episode and every
    # `resample_steps` steps (500 steps = 7.5 s), so one episode sees several commands.
    vx_range: Range = (-0.5, 1.5)
    vy_range: Range = (-0.5, 0.5)
    yaw_rate_range: Range = (-0.5, 0.5)
    resample_steps: int = Field(500, ge=1)
    # `goal`: the share of commands that are [0, 0, 0], standing still (a uniform draw
    # almost never is).
    still_prob: float = Field(0.0, ge=0, le=1)
    # `goal`: commands given in turn instead of drawn, each for `resample_steps` steps, the last
    # to the episode's end (`flexrl eval --command`, `--instruction`)
    schedule: tuple[tuple[float, float, float], ...] = ()
    # `goal`, in training: a command curriculum. Over the first `curriculum_steps` env steps
    # the ranges (and still_prob) grow linearly from the single command `curriculum_start` to
    # the full ranges above, so the policy first learns one gait, then to change it. 0: off.
    curriculum_steps: int = Field(0, ge=0)
    curriculum_start: tuple[float, float, float] = (1.0, 0.0, 0.0)
    # `goal`, in training only: this share of the draws take vx from the slow end of vx_range
    # (its lowest `train_slow_width` m/s), where a walking gait must be held back and where
    # fine-tuned walkers fell most (backwards); eval and collect draw from the ranges as given.
    train_slow_prob: float = Field(0.0, ge=0, le=1)
    train_slow_width: float = Field(0.3, gt=0, description="m/s")

    _ranges_ordered = field_validator("vx_range", "vy_range", "yaw_rate_range")(_check_range)


class RewardConfig(StrictModel):
    """Shaped Humanoid reward: weights (costs as positive weights) and tracking kernel widths.

    tracking = weight * exp(-error**2 / sigma), as legged_gym and MuJoCo Playground; the
    control and contact costs are Humanoid-v5's.
    """

    tracking_lin_vel: float = Field(2.0, ge=0)
    tracking_yaw_rate: float = Field(1.0, ge=0)
    lin_vel_sigma: float = Field(0.25, gt=0, description="(m/s)^2")
    yaw_rate_sigma: float = Field(0.25, gt=0, description="(rad/s)^2")
    healthy: float = Field(1.0, ge=0, description="paid every step the torso is up")
    ctrl: float = Field(0.1, ge=0, description="times sum(ctrl^2)")
    contact: float = Field(5e-7, ge=0, description="times sum(cfrc_ext^2)")
    contact_max: float = Field(10.0, ge=0, description="contact cost is clipped here")
    yaw_rate_cost: float = Field(0.0, ge=0, description="times min((yaw_rate - command)^2, 1)")
    action_rate: float = Field(0.0, ge=0, description="times sum((ctrl - last ctrl)^2)")
    yaw_rate_wobble: float = Field(
        0.0, ge=0, description="times min((yaw_rate - its ~1 s mean)^2, 1); env.observe_tracking"
    )
    # The turning rate averaged over ~1 s against the command: the bias and slow drift that the
    # per-step kernel barely sees under the stride's twist (needs env.observe_tracking).
    tracking_yaw_rate_mean: float = Field(0.0, ge=0, description="env.observe_tracking")
    yaw_rate_mean_sigma: float = Field(0.02, gt=0, description="(rad/s)^2")
    # The same for [vx, vy]: the speed averaged over ~1 s against the commanded velocity.
    tracking_lin_vel_mean: float = Field(0.0, ge=0, description="env.observe_tracking")
    lin_vel_mean_sigma: float = Field(0.05, gt=0, description="(m/s)^2")
    # legged_gym's "orientation" cost: the torso leaning away from vertical, whichever way.
    upright: float = Field(0.0, ge=0, description="times sin^2 of the torso's tilt")


HUMANOID_ONLY_FIELDS = (
    "task",
    "task_weights",
    "command",
    "reward",
    "healthy_z_range",
    "observation_frame",
    "observe_tracking",
    "sim_threads",
)


class EnvConfig(StrictModel):
    # A flexrl Humanoid skill, or any gymnasium id with Box spaces (e.g. InvertedPendulum-v5),
    # which then replaces the task.
    task: Task = "walk_forward"
    id: str | None = None
    # Multi-task runs sample a task per episode with these weights; empty means `task` only.
    task_weights: dict[Task, float] = Field(default_factory=dict)
    num_envs: int = Field(8, ge=1)
    # How training steps its envs. "threads": a flexrl Humanoid's envs stepped together, the
    # physics on `sim_threads` native threads (one per core by default; flexrl.envs.vector).
    # "sync": one after another in this process; "async": each in a worker process of its own
    # (gymnasium's AsyncVectorEnv; worth it only with a core per env). "auto": threads for a
    # Humanoid skill, sync for an `id`. The results are the same, bit for bit.
    vectorization: Literal["auto", "threads", "sync", "async"] = "auto"
    sim_threads: int | None = Field(None, ge=1, le=1024)
    max_episode_steps: int = Field(1000, ge=1)
    command: CommandConfig = Field(default_factory=CommandConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    # The episode ends (a fall) when the torso height leaves this range, in metres.
    healthy_z_range: Range = (1.0, 2.0)
    # "world": Humanoid-v5's observation as it is, in world-aligned axes; a policy learns to
    # act facing the ways it was trained facing (a walker started 45 degrees off falls).
    # "heading": its world-aligned parts seen from the heading frame, the same whichever way the
    # body faces (flexrl.envs.observation): what turning needs.
    observation_frame: ObservationFrame = "world"
    # Also observe the measured [vx, vy, yaw_rate] the reward tracks and their ~1 s running
    # means, 6 values after the goal (flexrl.envs.humanoid): the torso alone hides the whole
    # body's turning rate. A policy without them can start a run with them (ppo.init_from).
    observe_tracking: bool = False

    _z_range_ordered = field_validator("healthy_z_range")(_check_range)

    @model_validator(mode="after")
    def _running_mean_terms_need_the_running_mean(self) -> EnvConfig:
        for term in ("yaw_rate_wobble", "tracking_yaw_rate_mean", "tracking_lin_vel_mean"):
            if getattr(self.reward, term) > 0 and not self.observe_tracking:
                raise ValueError(
                    f"reward.{term} reads the tracked running means, which only "
                    "env.observe_tracking: true keeps; set it, or the weight to 0"
                )
        return self

    @model_serializer(mode="wrap")
    def _only_fields_that_apply(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A gymnasium env (`id`) has none of the Humanoid task, command and reward settings:
        a saved recipe leaves them out rather than list values nothing reads."""
        data = handler(self)
        if self.id is not None:
            for key in HUMANOID_ONLY_FIELDS:
                data.pop(key, None)
        return data

    @field_validator("task_weights")
    @classmethod
    def _weights_are_a_distribution(cls, value: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in value.values()):
            raise ValueError("task weights must be >= 0")
        if value and sum(value.values()) <= 0:
            raise ValueError("task weights must not all be 0")
        return value


class PPOConfig(StrictModel):
    """PPO hyperparameters, named as in CleanRL's ppo_continuous_action.py."""

    total_steps: int = Field(2_000_000, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    anneal_lr: bool = True
    # The linear annealing reaches zero at this many steps (None: at total_steps). Longer than
    # total_steps, a short run follows a longer run's schedule and stops with the rate still
    # up: the first N steps of that run, not a run squeezed into N.
    anneal_steps: int | None = Field(None, ge=1)
    num_steps: int = Field(256, ge=1, description="rollout length per environment")
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    num_minibatches: int = Field(32, ge=1)
    update_epochs: int = Field(10, ge=1)
    norm_adv: bool = True
    clip_coef: float = Field(0.2, gt=0)
    clip_vloss: bool = True
    ent_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = None
    # End training early once the mean return of the latest 20 training episodes (the return
    # the progress bar shows) reaches this; total_steps stays the budget. None: never.
    stop_at_return: float | None = None
    hidden_sizes: HiddenSizes = Field(default_factory=lambda: [256, 256])
    # Running normalisation (CleanRL's NormalizeObservation / NormalizeReward wrappers), kept in
    # the learner so its statistics are saved in checkpoints. Rewards are divided by the running
    # std of the discounted return; both are clipped to +-clip_*.
    norm_obs: bool = True
    clip_obs: float = Field(10.0, gt=0)
    norm_reward: bool = True
    clip_reward: float = Field(10.0, gt=0)
    # The critic predicts returns normalised by their running mean and std (flexrl.rl.
    # normalization.ValueNormalizer), as sample-factory's normalize_returns.
    norm_value: bool = False
    # A checkpoint every this many updates (0: only at the end and on interruption).
    checkpoint_every: int = Field(50, ge=0)
    # Start from this policy's weights and observation statistics (a run, a checkpoint file or
    # zoo:NAME; same network) instead of from scratch: a new skill fine-tuned from a learned one.
    # The optimiser, step count and learning-rate schedule start afresh.
    init_from: str | None = None
    # Weight of the mirror-symmetry loss (flexrl.rl.symmetry): the policy's mean action in the
    # left-right mirrored state, mirrored back, should be its action in the state itself, so
    # turning right is turning left mirrored. Humanoid skills only; 0: off.
    mirror_coef: float = Field(0.0, ge=0)


class TrainRecipe(StrictModel):
    """`flexrl train --config RECIPE`: online PPO on a Humanoid skill."""

    name: str = "ppo"
    seed: Seed = 0
    torch_threads: TorchThreads = 1
    env: EnvConfig = Field(default_factory=EnvConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)

    @model_validator(mode="after")
    def _mirror_needs_the_humanoid(self) -> TrainRecipe:
        if self.ppo.mirror_coef > 0 and self.env.id is not None:
            raise ValueError(
                f"ppo.mirror_coef mirrors the Humanoid skills' body and commands; {self.env.id} "
                "has no mirror known to flexrl: set it to 0"
            )
        return self


M = TypeVar("M", bound=BaseModel)


def load_recipe(path: str | Path, model: type[M], overrides: list[str] | tuple[str, ...] = ()) -> M:
    """Read a YAML recipe, apply `key.path=value` overrides, validate into `model`."""
    path = Path(path)
    if not path.is_file():
        raise FlexrlError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise FlexrlError(
            f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "save the recipe as UTF-8"
        ) from None
    except OSError as e:
        raise FlexrlError(f"cannot read recipe {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise FlexrlError(f"{path}: invalid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FlexrlError(f"{path}: a recipe must be a mapping of keys, not {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate_recipe(raw, model, source=str(path))


def validate_recipe(raw: dict[str, Any], model: type[M], source: str = "recipe") -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise FlexrlError(f"{source}: {describe_validation_error(e, model)}") from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` to a raw recipe dict; the value is read as YAML (3, true, [1, 2])."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise FlexrlError(
            f"--set {override!r}: expected key.path=value, e.g. ppo.learning_rate=1e-4"
        )
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise FlexrlError(f"--set {key}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def recipe_to_yaml(recipe: BaseModel) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def describe_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """One line: each problem as `key.path: message`, joined by '; '."""
    problems = []
    for err in error.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(part) for part in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            known = _field_names_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
            elif known:
                msg += f" (expected one of: {', '.join(known)})"
        else:
            msg = err["msg"][:1].lower() + err["msg"][1:]
            # A rule across fields (a model validator) names them itself: its input is the
            # whole mapping, too long to repeat.
            across_fields = err["type"] == "value_error" and isinstance(err.get("input"), dict)
            if err["type"] != "missing" and not across_fields:
                msg += f" (got {_short_repr(err.get('input'))})"
        problems.append(f"{path}: {msg}")
    return "; ".join(problems)


def _field_names_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model at `loc`, or [] where it is not a model."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# == Offline fine-tuning recipes (issue 5: `flexrl finetune bc|dt`) ===========================
# Owned by flexrl/offline. BC and DT get their own train sections (not one model with
# default_factory defaults) so that a partial `train:` block in YAML keeps the method's defaults.


class OfflineDataConfig(StrictModel):
    """How a finetune run reads its dataset (flexrl.offline.datamodule)."""

    val_fraction: float = Field(0.1, ge=0, lt=1, description="episodes held out for val_loss")
    # Train only on the best top_percent% of episodes by return (top-% BC; 100 = all).
    top_percent: float = Field(100.0, gt=0, le=100)
    weighting: Literal["length", "episode"] = "length"
    # What the policy is told: each step's goal `command` [vx, vy, yaw_rate], or the episode's
    # `instruction` as a MiniLM embedding (384 values; flexrl/language/, docs/LANGUAGE.md)
    condition: Literal["command", "instruction"] = "command"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    cache_bytes: int = Field(1 << 30, ge=1024, description="sampler chunk-cache budget")


class OfflineTrainConfig(StrictModel):
    max_steps: int = Field(10_000, ge=1, description="optimizer steps in all")
    steps_per_epoch: int = Field(1_000, ge=1, description="validation + checkpoint after each")
    val_batches: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warmup")
    grad_clip: float | None = Field(0.25, gt=0)
    log_every_n_steps: int = Field(50, ge=1)
    accelerator: str = Field("auto", description="Lightning accelerator: auto uses CUDA if present")
    devices: int = Field(
        1,
        ge=1,
        description="processes training together with DDP (gloo on CPU, NCCL on GPUs); "
        "batch_size is per process",
    )
    num_nodes: int = Field(
        1, ge=1, description="machines (pods) training together, each with `devices` processes"
    )
    torch_threads: TorchThreads = 1


class BCTrainConfig(OfflineTrainConfig):
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    grad_clip: float | None = Field(None, gt=0)


class DTTrainConfig(OfflineTrainConfig):
    """The original Decision Transformer's gym settings."""

    warmup_steps: int = Field(10_000, ge=0)


class BCConfig(StrictModel):
    hidden_sizes: HiddenSizes = Field(default_factory=lambda: [256, 256])
    dropout: float = Field(0.0, ge=0, lt=1)


class DTConfig(StrictModel):
    """Decision Transformer; the GPT2Config is built from these fields (random init)."""

    context_len: int = Field(20, ge=1, description="K: steps per window")
    hidden_size: int = Field(128, ge=1, description="GPT2Config.n_embd")
    n_layer: int = Field(3, ge=1)
    n_head: int = Field(1, ge=1)
    n_inner: int | None = Field(None, ge=1, description="MLP width; None = 4 * hidden_size")
    activation_function: str = "relu"
    dropout: float = Field(0.1, ge=0, lt=1, description="resid, embd and attn dropout")
    max_ep_len: int = Field(1000, ge=1, description="timestep embeddings (longer are clamped)")
    rtg_scale: float = Field(1000.0, gt=0, description="returns-to-go are divided by this")
    # Return the policy is conditioned on when it acts; None = the best return in the dataset.
    target_return: float | None = None


class FinetuneBCRecipe(StrictModel):
    """`flexrl finetune bc`: behaviour cloning from a dataset version."""

    name: str = "bc"
    seed: Seed = 0
    data: OfflineDataConfig = Field(default_factory=OfflineDataConfig)
    train: BCTrainConfig = Field(default_factory=BCTrainConfig)
    bc: BCConfig = Field(default_factory=BCConfig)
    # The env the policy is evaluated in; None = the env of the run that collected the dataset.
    env: EnvConfig | None = None


class FinetuneDTRecipe(StrictModel):
    """`flexrl finetune dt`: a goal-conditioned Decision Transformer from a dataset version."""

    name: str = "dt"
    seed: Seed = 0
    data: OfflineDataConfig = Field(default_factory=OfflineDataConfig)
    train: DTTrainConfig = Field(default_factory=DTTrainConfig)
    dt: DTConfig = Field(default_factory=DTConfig)
    env: EnvConfig | None = None
