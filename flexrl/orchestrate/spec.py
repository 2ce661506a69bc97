"""Sweep specs: a base recipe and command, a parameter space, seeds, a metric, limits.

The shape follows W&B sweeps (`method`, `metric: {name, goal}`, `parameters` with `values`,
`value` or a `distribution`) and Katib experiments (parallel trials, maximum failed trials):

    name: lr-search
    command: train                       # train | collect | finetune bc | finetune dt | eval
    recipe: quickstart.yaml              # relative to this file
    set: [ppo.total_steps=2048]          # fixed overrides for every trial
    method: grid                         # grid: every combination; random: `count` samples
    parameters:
      ppo.learning_rate: {values: [1.0e-4, 3.0e-4]}
      ppo.clip_coef: {distribution: uniform, min: 0.1, max: 0.3}   # random only
    seeds: [0, 1]
    metric: {name: episodic_return, goal: maximize}
    parallelism: 2
    retries: 1                           # per trial, on failures other than bad input (exit 2)
    max_failed_trials: 2

Specs are validated like recipes: unknown keys and wrong types fail with the key path named.
A parameter is a recipe key path (passed as `--set key=value`) or, as `args.NAME`, a command
option (`--NAME value`), for commands without a recipe (collect, eval).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from flexrl.config import StrictModel, apply_override, validate_recipe
from flexrl.errors import FlexrlError

SWEEP_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$"  # fits in Job and run names
COMMANDS = ("train", "collect", "finetune bc", "finetune dt", "eval")
RECIPE_COMMANDS = ("train", "finetune bc", "finetune dt")
Scalar = bool | int | float | str


class Values(StrictModel):
    """A grid axis (or, for `method: random`, a uniform choice)."""

    values: list[Any] = Field(min_length=1)


class Constant(StrictModel):
    value: Any


class Distribution(StrictModel):
    """A random-search distribution (`method: random`)."""

    distribution: Literal["uniform", "log_uniform", "int_uniform"]
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Distribution:
        if self.min > self.max:
            raise ValueError(f"min must be <= max, got min={self.min}, max={self.max}")
        if self.distribution == "log_uniform" and self.min <= 0:
            raise ValueError("log_uniform needs min > 0")
        return self


Parameter = Values | Constant | Distribution


class Metric(StrictModel):
    name: str = Field(min_length=1, description="a key of the trial run's metrics_last")
    goal: Literal["minimize", "maximize"] = "maximize"


# A Kubernetes resource quantity ("500m", "2", "1.5Gi", "1e3"): checked when the spec is read,
# so a typo is a spec error (exit 2), not a Job the API server rejects after records exist.
_QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")
_SCALE = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}  # fmt: skip


def quantity(text: str) -> float:
    """The value of a Kubernetes quantity ("2Gi" -> 2147483648.0); ValueError if it is none."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity (e.g. '500m' or '2' CPUs, '2Gi' of memory)"
        )
    number, suffix = match.groups()
    if suffix and suffix[0] in "eE":
        return float(number + suffix)
    return float(number) * _SCALE.get(suffix or "", 1.0)


class Resources(StrictModel):
    """Per trial: Kubernetes requests/limits (the local backend ignores them)."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = Field(0, ge=0, description="nvidia.com/gpu")
    # The pod's local disk (its writable layer and the /tmp emptyDir): over its limit the kubelet
    # evicts the pod, instead of a trial filling the node's disk.
    ephemeral_storage: str = "8Gi"
    tmp: str = Field("4Gi", description="sizeLimit of the /tmp emptyDir (caches, scratch)")

    @field_validator("cpu", "memory", "ephemeral_storage", "tmp")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if quantity(value) <= 0:
            raise ValueError(f"{value!r} must be more than zero")
        return value

    @model_validator(mode="after")
    def _tmp_fits(self) -> Resources:
        if quantity(self.tmp) > quantity(self.ephemeral_storage):
            raise ValueError(
                f"tmp ({self.tmp}) must fit in ephemeral_storage ({self.ephemeral_storage})"
            )
        return self


_DIGEST = r"^sha256:[0-9a-f]{64}$"


class KubernetesOptions(StrictModel):
    namespace: str = "flexrl"
    image: str = "flexrl:latest"
    # The image's content digest, "sha256:..." (what `docker push` prints, or the part after "@"
    # of `docker inspect --format '{{index .RepoDigests 0}}'`): when given, trials run
    # `image@digest`, which a retag or push cannot change under a sweep.
    image_digest: Annotated[str, Field(pattern=_DIGEST)] | None = None
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    # Each trial pod's wall-clock limit: a hung trial is killed and counts as a failed try.
    active_deadline_seconds: int = Field(24 * 3600, ge=1)
    workspace_claim: str = "flexrl-workspace"
    # Where the claim is mounted in the pod; run-trial gets it as --workspace.
    workspace_mount: str = "/workspace"
    ttl_seconds_after_finished: int = Field(86400, ge=0)
    run_as_user: int = Field(1000, ge=1, description="non-root uid the trial runs as")
    # A Secret whose keys (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    # AWS_REGION) become the pods' environment: for datasets on object storage (s3://...).
    storage_secret: str | None = None


class SweepSpec(StrictModel):
    name: Annotated[str, Field(pattern=SWEEP_NAME_PATTERN)]
    command: Literal["train", "collect", "finetune bc", "finetune dt", "eval"] = "train"
    recipe: str | None = None
    set: list[str] = Field(default_factory=list)
    args: dict[str, Scalar] = Field(default_factory=dict)
    method: Literal["grid", "random"] = "grid"
    count: int | None = Field(None, ge=1, description="random: number of samples")
    random_seed: int = 0
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    metric: Metric
    parallelism: int = Field(1, ge=1)
    retries: int = Field(0, ge=0, le=10)
    max_failed_trials: int | None = Field(None, ge=0)
    resources: Resources = Field(default_factory=Resources)
    kubernetes: KubernetesOptions = Field(default_factory=KubernetesOptions)

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, value: dict[str, Parameter]) -> dict[str, Parameter]:
        for key in value:
            if not key or any(not part for part in key.split(".")) or "=" in key:
                raise ValueError(f"parameter {key!r}: expected a key path like ppo.learning_rate")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.command in RECIPE_COMMANDS and self.recipe is None:
            raise ValueError(f"command {self.command!r} needs a base `recipe`")
        if self.command not in RECIPE_COMMANDS:
            if self.recipe is not None or self.set:
                raise ValueError(f"command {self.command!r} takes no recipe: use `args`")
            bad = [k for k in self.parameters if not k.startswith("args.")]
            if bad:
                raise ValueError(f"command {self.command!r} takes only args.* parameters: {bad}")
        if self.method == "grid":
            if self.count is not None:
                raise ValueError("`count` is for method: random (a grid has every combination)")
            random_ones = [k for k, p in self.parameters.items() if isinstance(p, Distribution)]
            if random_ones:
                raise ValueError(f"distributions need method: random ({', '.join(random_ones)})")
        elif self.count is None:
            raise ValueError("method: random needs `count`")
        if self.command == "collect":
            self._collect_seeds_apart()
        return self

    def _collect_seeds_apart(self) -> None:
        """Collect trials into one dataset must not repeat episodes: episode k of a trial
        resets with SEED + k, so seeds must lie at least the episode count apart."""
        counts = [self.args.get("episodes")]
        axis = self.parameters.get("args.episodes")
        if isinstance(axis, Values):
            counts = list(axis.values)
        elif isinstance(axis, Constant):
            counts = [axis.value]
        elif axis is not None:
            counts = [axis.max]  # type: ignore[union-attr]
        known = [int(c) for c in counts if c is not None]
        episodes = max(known) if known else 1
        seeds = sorted(self.seeds)
        for a, b in itertools.pairwise(seeds):
            if b - a < episodes:
                raise ValueError(
                    f"seeds {a} and {b} would collect the same episodes (a collect trial's "
                    f"episode k resets with SEED + k): space seeds at least {episodes} apart, "
                    f"e.g. {[seeds[0] + i * episodes for i in range(len(seeds))]}"
                )


def collect_job_spec(
    collect_args: dict[str, Scalar],
    pods: int,
    seed: int,
    kubernetes: KubernetesOptions,
    resources: Resources,
) -> SweepSpec:
    """`flexrl collect --pods N` as a sweep of N collect trials (one Indexed Job, one pod per
    index) into one dataset: trial i collects `episodes` episodes from seed SEED + i x
    episodes, so no two pods collect the same episode."""
    episodes = int(collect_args["episodes"])
    dataset = str(collect_args["dataset"])
    name = re.sub(r"[^a-z0-9-]+", "-", f"collect-{dataset}")[:24].strip("-")
    return SweepSpec(
        name=name,
        command="collect",
        args=collect_args,
        seeds=[seed + i * episodes for i in range(pods)],
        metric=Metric(name="episodes", goal="maximize"),
        parallelism=pods,
        resources=resources,
        kubernetes=kubernetes,
    )


@dataclass
class Trial:
    """One resolved point of the sweep: parameters and seed, nothing left to chance."""

    index: int
    params: dict[str, Any]
    seed: int
    config: int  # which parameter combination (trials differing only in seed share it)


@dataclass
class LoadedSpec:
    spec: SweepSpec
    path: Path
    raw_text: str
    recipe_path: Path | None
    recipe_text: str | None
    trials: list[Trial] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return spec_hash(self.spec, self.recipe_text)


def spec_hash(spec: SweepSpec, recipe_text: str | None) -> str:
    """Of the validated spec and the base recipe's bytes: either changing changes the trials."""
    payload = json.dumps(
        {"spec": spec.model_dump(mode="json"), "recipe": recipe_text}, sort_keys=True
    )
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def load_spec(path: str | Path) -> LoadedSpec:
    """Read, validate and expand a spec; every trial's recipe is validated here, before any run."""
    path = Path(path)
    if not path.is_file():
        raise FlexrlError(f"sweep spec not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise FlexrlError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise FlexrlError(f"{path}: a sweep spec must be a mapping of keys")
    spec = validate_recipe(raw, SweepSpec, source=str(path))
    recipe_path = recipe_text = None
    if spec.recipe is not None:
        recipe_path = (path.parent / spec.recipe).resolve()
        if not recipe_path.is_file():
            raise FlexrlError(f"{path}: recipe: not found: {recipe_path}")
        recipe_text = recipe_path.read_text(encoding="utf-8")
    loaded = LoadedSpec(spec, path.resolve(), text, recipe_path, recipe_text)
    loaded.trials = expand(spec)
    if recipe_text is not None:
        for trial in loaded.trials:
            resolve_recipe(spec, recipe_text, trial, source=f"{path}: trial {trial.index}")
    return loaded


def expand(spec: SweepSpec) -> list[Trial]:
    """Parameter combinations (grid) or samples (random, seeded by random_seed) x seeds."""
    names = list(spec.parameters)
    configs: list[dict[str, Any]]
    if spec.method == "grid":
        axes = [_grid_axis(spec.parameters[n]) for n in names]
        configs = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
    else:
        rng = random.Random(spec.random_seed)
        assert spec.count is not None
        configs = [{n: _sample(spec.parameters[n], rng) for n in names} for _ in range(spec.count)]
    trials = []
    for c, params in enumerate(configs):
        for seed in spec.seeds:
            trials.append(Trial(index=len(trials), params=params, seed=seed, config=c))
    return trials


def _grid_axis(p: Parameter) -> list[Any]:
    return p.values if isinstance(p, Values) else [p.value]  # type: ignore[union-attr]


def _sample(p: Parameter, rng: random.Random) -> Any:
    if isinstance(p, Values):
        return rng.choice(p.values)
    if isinstance(p, Constant):
        return p.value
    if p.distribution == "uniform":
        return rng.uniform(p.min, p.max)
    if p.distribution == "log_uniform":
        return math.exp(rng.uniform(math.log(p.min), math.log(p.max)))
    return rng.randint(math.ceil(p.min), math.floor(p.max))


def recipe_overrides(spec: SweepSpec, trial: Trial) -> list[str]:
    """`--set` overrides of a trial: the fixed ones, then its parameters (as YAML values)."""
    overrides = list(spec.set)
    for key, value in trial.params.items():
        if not key.startswith("args."):
            overrides.append(f"{key}={json.dumps(value)}")  # JSON is YAML: types survive
    return overrides


def command_args(spec: SweepSpec, trial: Trial) -> dict[str, Any]:
    """Command options of a trial: fixed `args` updated by `args.*` parameters."""
    args: dict[str, Any] = dict(spec.args)
    for key, value in trial.params.items():
        if key.startswith("args."):
            args[key.removeprefix("args.")] = value
    return args


def resolve_recipe(spec: SweepSpec, recipe_text: str, trial: Trial, source: str) -> dict:
    """The trial's recipe as a dict, validated against the command's recipe model."""
    raw = yaml.safe_load(recipe_text) or {}
    if not isinstance(raw, dict):
        raise FlexrlError(f"{source}: the base recipe must be a mapping of keys")
    for override in recipe_overrides(spec, trial):
        apply_override(raw, override)
    raw["seed"] = trial.seed  # every recipe model has a seed; one seed per trial
    model = recipe_model(spec.command)
    if model is None:
        return raw
    return validate_recipe(raw, model, source=source).model_dump(mode="json")


def recipe_model(command: str) -> Any:
    """The pydantic model a command's recipe is validated with (None: the command takes none)."""
    from flexrl import config

    return {
        "train": config.TrainRecipe,
        "finetune bc": config.FinetuneBCRecipe,
        "finetune dt": config.FinetuneDTRecipe,
    }.get(command)
