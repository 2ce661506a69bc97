"""`flexrl collect`: roll a policy out and write its episodes as a new dataset version."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from flexrl.cli.common import (
    DEFAULT_WORKSPACE,
    CommandOption,
    ImageOption,
    InstructionOption,
    InstructionsOption,
    JsonOption,
    NamespaceOption,
    StorageSecretOption,
    WorkspaceOption,
    console,
    parse_command,
    print_json,
    read_instructions,
)
from flexrl.cli.data import policy_label
from flexrl.errors import FlexrlError
from flexrl.store import open_dataset, parse_ref
from flexrl.store.backend import is_uri
from flexrl.workspace import Workspace

if TYPE_CHECKING:
    from flexrl.orchestrate.spec import KubernetesOptions


def collect(
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            "-p",
            help="A run (id, prefix or name; PPO, BC or DT), a checkpoint file, a shipped "
            "policy zoo:NAME, or 'random'.",
        ),
    ],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "-d",
            help="Dataset name, or URI (s3://bucket/prefix/NAME); the collection is a new version.",
        ),
    ],
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Episodes to collect.")],
    task: Annotated[
        str | None,
        typer.Option(help="Collect in this Humanoid task (walk_forward, turn_left, ...)."),
    ] = None,
    env_id: Annotated[
        str | None,
        typer.Option("--env-id", help="Collect in this gymnasium env (e.g. InvertedPendulum-v5)."),
    ] = None,
    command: CommandOption = None,
    instruction: InstructionOption = None,
    instructions: InstructionsOption = None,
    workers: Annotated[
        int, typer.Option(help="Processes collecting in parallel (one version for all).")
    ] = 1,
    num_envs: Annotated[
        int,
        typer.Option(
            "--num-envs",
            help="Envs stepped together in each process, one batched policy call per step "
            "(Humanoid physics on every core).",
        ),
    ] = 8,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Episode k resets with seed SEED + k. Default: a fresh seed from OS entropy "
            "(printed and recorded), so repeated collections add new episodes."
        ),
    ] = None,
    noise: Annotated[
        float,
        typer.Option(help="PPO: Gaussian action noise (std >= 0, in action units) on the mean."),
    ] = 0.0,
    stochastic: Annotated[
        bool, typer.Option("--stochastic", help="PPO: sample actions from the policy's Gaussian.")
    ] = False,
    allow_nonfinite: Annotated[
        bool,
        typer.Option(
            "--allow-nonfinite", help="Store NaN or inf observations, actions and rewards."
        ),
    ] = False,
    float64: Annotated[
        bool,
        typer.Option(
            "--float64",
            help="Store float64 arrays (MuJoCo's observations) as they are; by default they are "
            "stored as float32, half the bytes (a dataset that holds float64 keeps it).",
        ),
    ] = False,
    pods: Annotated[
        int | None,
        typer.Option(
            "--pods",
            min=1,
            help="Submit the collection as a Kubernetes Indexed Job of N pods writing into "
            "DATASET on the workspace volume (ReadWriteMany) or on object storage (a URI: see "
            "--storage-secret); pod i collects EPISODES episodes "
            "from seed SEED + i x EPISODES, so no two pods collect the same one. Recorded as "
            "a sweep: follow it with `flexrl sweep status ID`.",
        ),
    ] = None,
    image: ImageOption = None,
    namespace: NamespaceOption = "flexrl",
    storage_secret: StorageSecretOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --pods: print the Job; submit nothing.")
    ] = False,
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Roll a policy out (PPO, BC, DT, a shipped skill or random) and store its episodes.

    With --instruction/--instructions, episode k is told instruction k mod N: the goal task is
    held at the command it means, and the episode stores the text (for language-conditioned
    learning; docs/LANGUAGE.md).
    """
    if pods is not None or dry_run:
        if pods is None:
            raise FlexrlError("--dry-run prints the Job of --pods N: give --pods")
        if instruction or instructions:
            raise FlexrlError("--pods: --instruction/--instructions are not supported in pods yet")
        args = {"policy": policy, "dataset": dataset, "episodes": episodes, "task": task,
                "env-id": env_id, "command": command, "workers": workers, "num-envs": num_envs,
                "noise": noise, "stochastic": stochastic, "allow-nonfinite": allow_nonfinite,
                "float64": float64}  # fmt: skip
        from flexrl.orchestrate.spec import KubernetesOptions

        options = KubernetesOptions(namespace=namespace, storage_secret=storage_secret)
        _submit_pods(args, pods, seed, image, options, dry_run, workspace)
        return
    # The domain pulls in gymnasium, MuJoCo and torch: import it only when collecting.
    from flexrl.collection import RANDOM, CollectRequest, collect, plan_collection

    told = None
    texts = read_instructions(instruction, instructions)
    if texts:  # before the policy or the dataset is touched: refused text changes nothing
        from flexrl.language.parser import parse_many

        told = [(p.text, p.command) for p in parse_many(texts)]
    ws = Workspace(workspace)
    request = CollectRequest(
        policy=policy,
        dataset=dataset,
        episodes=episodes,
        task=task,
        env_id=env_id,
        command=parse_command(command),
        instructions=told,
        workers=workers,
        seed=seed,
        noise=noise,
        stochastic=stochastic,
        num_envs=num_envs,
        allow_nonfinite=allow_nonfinite,
        float64=float64,
    )
    plan = plan_collection(ws, request)  # bad input fails here: no run, nothing stored
    seed = plan.settings.seed  # drawn when --seed was not given
    run_name = parse_ref(dataset).name  # a URI's last part
    run = ws.start_run("collect", run_name, recipe=plan.settings, seed=seed, inputs=plan.inputs)
    with run:  # an interruption is recorded; run.json's outputs list what was committed
        if not json:
            console.print(f"run [bold]{run.id}[/bold] in {run.dir}  ·  seed {seed}")
        result = collect(plan, run, progress=sys.stderr.isatty())
    if json:
        print_json(result.to_json())
        return
    source = policy if policy == RANDOM else f"{policy} ({policy_label(plan.policy_id)})"
    console.print(
        f"[green]collected[/green] {result.episodes} episodes, {result.steps} steps, "
        f"mean return {result.mean_return:.2f}"
    )
    # Appending is the point of versions, but it must never go unnoticed: say what was added
    # to what, and whether the version now mixes policies.
    start = result.previous.ref if result.previous else f"{dataset} (new)"
    console.print(f"{start} → [bold]{result.ref}[/bold], +{result.episodes} episodes from {source}")
    if result.previous is not None and result.ref is not None:
        counts = Counter(open_dataset(result.ref, ws.root).index.policies)
        if len(counts) > 1:
            mix = ", ".join(f"{n} from {policy_label(p)}" for p, n in counts.items())
            console.print(
                f"[yellow]note[/yellow]: {result.ref} mixes {len(counts)} policies ({mix}); "
                f"`flexrl data info {result.ref}` breaks it down"
            )
    where = dataset if is_uri(dataset) else ws.root / "datasets" / dataset
    console.print(f"dataset {where}  ·  run {run.id}")


def _submit_pods(
    args: dict, pods: int, seed: int | None, image: str | None, options: KubernetesOptions,
    dry_run: bool, workspace: Path,
) -> None:  # fmt: skip
    """`collect --pods N`: a sweep of N collect trials, one pod each, into one dataset."""
    import secrets

    from flexrl.cli.sweep import Backend, submit_loaded
    from flexrl.collection.plan import DRAWN_SEED_BOUND, MAX_SEED
    from flexrl.orchestrate.records import trial_command
    from flexrl.orchestrate.spec import (
        LoadedSpec,
        Resources,
        collect_job_spec,
        expand,
    )
    from flexrl.store.format import check_dataset

    check_dataset(args["dataset"])
    seed = secrets.randbelow(DRAWN_SEED_BOUND) if seed is None else seed
    if not 0 <= seed <= MAX_SEED - pods * args["episodes"]:
        raise FlexrlError(
            f"--seed must be between 0 and {MAX_SEED - pods * args['episodes']} (pod i's "
            "episode k resets with SEED + i x EPISODES + k, which must fit 32 bits)"
        )
    kept = {k: v for k, v in args.items() if v is not None and v is not False}
    spec = collect_job_spec(kept, pods, seed, options, Resources())
    raw = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    loaded = LoadedSpec(spec, Path("collect.yaml").resolve(), raw, None, None, expand(spec))
    if dry_run:  # what each index runs (its trial record holds it), then the Job
        for trial in loaded.trials:
            argv = " ".join(trial_command(loaded, trial, ""))
            sys.stderr.write(f"pod {trial.index}: flexrl {argv}\n")
    submit_loaded(loaded, Backend.K8S, dry_run, image, None, workspace)
