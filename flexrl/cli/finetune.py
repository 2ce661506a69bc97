"""`flexrl finetune bc|dt`: offline training from a dataset version, recorded as a run."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from flexrl.cli.common import (
    DEFAULT_WORKSPACE,
    ImageOption,
    NamespaceOption,
    StorageSecretOption,
    WorkspaceOption,
    console,
)
from flexrl.config import load_recipe
from flexrl.errors import FlexrlError
from flexrl.workspace import Artifact, ArtifactKind, Run, RunRecord, Workspace

app = typer.Typer(
    help="Train Behaviour Cloning or a Decision Transformer offline on a dataset version.",
    no_args_is_help=True,
)

DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset reference: name, name@v3 or name@tag; the name may be a URI "
        "(s3://bucket/prefix/name@v3). Required, unless --resume names a run (then that run's "
        "dataset).",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Recipe YAML file. Required, unless --resume names a run (then its recipe).",
    ),
]
NameOption = Annotated[
    str | None,
    typer.Option(help="Run name (default: the recipe's name; with --resume, the run's)."),
]
InitOption = Annotated[
    str | None,
    typer.Option(
        "--init-from", help="Start from another finetune run's weights (run id, name or policy.pt)."
    ),
]
ResumeOption = Annotated[
    str | None, typer.Option(help="Continue a finetune run from its last checkpoint.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: key.path=value (repeatable)."),
]
ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show the rich progress bar.")
]
PodsOption = Annotated[
    int | None,
    typer.Option(
        "--pods",
        min=1,
        help="Train on Kubernetes: an Indexed Job of N pods in DDP (train.num_nodes=N) and a "
        "headless Service for their rendezvous. The workspace must be the pods' volume; rank 0 "
        "records the run there. With --dry-run, print the manifests only.",
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="With --pods: print the Service and Job; submit nothing.")
]
DevicesOption = Annotated[
    int | None,
    typer.Option(
        "--devices",
        min=1,
        help="Train in N processes with DDP (CPU: gloo, each process one core; GPUs: NCCL, "
        "one per GPU). train.batch_size is per process: N processes train on the windows one "
        "process would with an N-fold batch. Default: the recipe's train.devices (1).",
    ),
]


@app.command("bc")
def bc(
    dataset: DatasetOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    init_from: InitOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
    devices: DevicesOption = None,
    pods: PodsOption = None,
    image: ImageOption = None,
    namespace: NamespaceOption = "flexrl",
    storage_secret: StorageSecretOption = None,
    dry_run: DryRunOption = False,
    progress: ProgressOption = True,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Behaviour Cloning (optionally top-% BC: data.top_percent) on a dataset version."""
    sets = [*(overrides or []), *([f"train.devices={devices}"] if devices else [])]
    on_pods = Pods(pods, image, namespace, storage_secret, dry_run) if pods or dry_run else None
    _finetune("bc", dataset, config, name, init_from, resume, sets, progress, workspace, on_pods)


@app.command("dt")
def dt(
    dataset: DatasetOption = None,
    config: ConfigOption = None,
    name: NameOption = None,
    init_from: InitOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
    devices: DevicesOption = None,
    pods: PodsOption = None,
    image: ImageOption = None,
    namespace: NamespaceOption = "flexrl",
    storage_secret: StorageSecretOption = None,
    dry_run: DryRunOption = False,
    progress: ProgressOption = True,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """A goal-conditioned Decision Transformer (GPT-2 backbone) on a dataset version."""
    sets = [*(overrides or []), *([f"train.devices={devices}"] if devices else [])]
    on_pods = Pods(pods, image, namespace, storage_secret, dry_run) if pods or dry_run else None
    _finetune("dt", dataset, config, name, init_from, resume, sets, progress, workspace, on_pods)


def _output(record: RunRecord, role: str) -> Artifact | None:
    found = [a for a in record.outputs if a.kind == ArtifactKind.CHECKPOINT and a.role == role]
    return found[-1] if found else None


@dataclass
class Pods:
    """`--pods N` and its options: train on Kubernetes instead of here."""

    count: int | None
    image: str | None
    namespace: str
    storage_secret: str | None
    dry_run: bool


def _finetune(
    kind: str,
    dataset: str | None,
    config: Path | None,
    name: str | None,
    init_from: str | None,
    resume: str | None,
    overrides: list[str],
    progress: bool,
    workspace: Path,
    on_pods: Pods | None = None,
) -> None:
    from flexrl.offline.training import recipe_model
    from flexrl.store import resolve

    ws = Workspace(workspace)
    # Everything that can be wrong with the input is checked before a run is recorded.
    resumed = ws.resolve_run(resume) if resume else None
    last_ckpt: Path | None = None
    if resumed is not None:
        if resumed.kind != f"finetune-{kind}":
            raise FlexrlError(
                f"--resume: run {resumed.id} is a {resumed.kind} run, not finetune-{kind}"
            )
        last = _output(resumed, "last")
        if last is None:
            raise FlexrlError(f"--resume: run {resumed.id} has no last checkpoint")
        last_ckpt = ws.artifact_path(resumed, last)  # present and unchanged since recorded
        resume_step = _checkpoint_step(last_ckpt)
        name = name or resumed.name  # `eval NAME` then finds the run that continued
        if config is None:
            config = ws.run_dir(resumed.id) / "recipe.yaml"
        if dataset is None:
            refs = [a.ref for a in resumed.inputs if a.kind == ArtifactKind.DATASET]
            dataset = refs[0] if refs else None
    if config is None:
        raise FlexrlError("--config is required (a recipe YAML, e.g. recipes/finetune_dt.yaml)")
    if dataset is None:
        raise FlexrlError("--dataset is required (a dataset reference, e.g. walk@v1)")
    recipe = load_recipe(config, recipe_model(kind), overrides)  # type: ignore[arg-type]
    version = resolve(dataset, workspace)
    inputs = [
        Artifact(
            kind=ArtifactKind.DATASET, ref=version.ref, digest=version.digest, role="train-data"
        )
    ]
    if resumed is not None and last_ckpt is not None:
        inputs.append(Artifact(kind=ArtifactKind.RUN, ref=resumed.id, role="resume"))
        last = _output(resumed, "last")
        assert last is not None
        inputs.append(last.model_copy(update={"role": "resume"}))

    init_policy = None
    if init_from is not None:
        from flexrl.offline.checkpoint import load_policy_checkpoint, run_policy_file

        path = Path(init_from)
        if path.is_file():
            init_path = path
            from flexrl.fileio import sha256_file

            init_artifact = Artifact(
                kind=ArtifactKind.CHECKPOINT, ref=str(path.resolve()), digest=sha256_file(path)
            )
        else:
            init_run = ws.resolve_run(init_from)
            init_path, init_artifact = run_policy_file(ws, init_run)
            inputs.append(Artifact(kind=ArtifactKind.RUN, ref=init_run.id, role="init"))
        init_policy = load_policy_checkpoint(init_path)
        inputs.append(init_artifact.model_copy(update={"role": "init"}))

    from flexrl.collection import dataset_env
    from flexrl.offline.training import FitSettings, build, fit, init_weights_from

    env = recipe.env.model_dump(mode="json") if recipe.env is not None else None
    if env is None:
        env = dataset_env(workspace, version.ref)
    if recipe.data.condition == "instruction":  # before the run: bad data records nothing
        from flexrl.offline.datamodule import check_instructions
        from flexrl.store import open_dataset

        check_instructions(open_dataset(version.ref, workspace))
    if on_pods is not None:
        _submit_pods(kind, recipe, version.ref, name or recipe.name, init_from, resume, on_pods,
                     ws)  # fmt: skip
        return
    # Across machines only rank 0 records the run in the workspace; the others train beside it
    # with a scratch record (their metrics and checkpoints are rank 0's anyway).
    rank = int(os.environ.get("NODE_RANK", "0")) if recipe.train.num_nodes > 1 else 0
    run_ws = ws if rank == 0 else Workspace(tempfile.mkdtemp(prefix=f"flexrl-rank{rank}-"))
    with run_ws.start_run(
        f"finetune-{kind}", name or recipe.name, recipe=recipe, seed=recipe.seed, inputs=inputs
    ) as run:
        console.print(f"run [bold]{run.id}[/bold] in {run.dir}")
        if resumed is not None:
            run.continue_metrics(resumed, resume_step)  # one history up to where this goes on
        module, data = build(kind, recipe, version.ref, workspace)  # type: ignore[arg-type]
        if init_policy is not None:
            init_weights_from(module, init_policy)
        console.print(
            f"{version.ref}: {len(data.train_episodes)} train / {len(data.val_episodes)} "
            f"validation episodes"
        )
        settings = FitSettings(run.dir, resume_from=last_ckpt, env=env, progress=progress)
        try:
            result = fit(settings, module, data, log_metrics=run.log_metrics)
        finally:
            _record_checkpoints(run)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.metrics.items()))
        console.print(f"step {result.global_step}: {summary}")
    console.print(f"[green]completed[/green] {run.id}")


def _checkpoint_step(path: Path) -> int:
    """The optimizer step a Lightning checkpoint was taken at; it must load (weights only)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception as e:  # torch's unpickling errors span many lines; the CLI shows one
        first = str(e).splitlines()[0] if str(e) else ""
        raise FlexrlError(
            f"--resume: {path} is not a readable checkpoint ({type(e).__name__}: {first})"
        ) from None


def _record_checkpoints(run: Run) -> None:
    """Lineage of whatever checkpoints exist now; policy.pt last, as evaluation picks it."""
    from flexrl.offline.checkpoint import POLICY_FILE, POLICY_ROLE
    from flexrl.offline.training import CHECKPOINT_DIR, LAST

    ckpt_dir = run.dir / "artifacts" / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        run.add_artifact(
            path, ArtifactKind.CHECKPOINT, role="last" if path.name == LAST else "best"
        )
    if (ckpt_dir / POLICY_FILE).is_file():
        run.add_artifact(ckpt_dir / POLICY_FILE, ArtifactKind.CHECKPOINT, role=POLICY_ROLE)


def _submit_pods(
    kind: str,
    recipe: Any,
    dataset: str,
    name: str,
    init_from: str | None,
    resume: str | None,
    pods: Pods,
    ws: Workspace,
) -> None:
    """Write the recipe into the workspace (the pods' volume), then the Service and the Job."""
    import secrets
    import sys

    import yaml

    from flexrl.fileio import atomic_write_text
    from flexrl.orchestrate import ddp
    from flexrl.orchestrate.kube import KubeClient
    from flexrl.orchestrate.spec import KubernetesOptions, Resources

    if pods.count is None:
        raise FlexrlError("--dry-run prints the manifests of --pods N: give --pods")
    if recipe.train.devices > 1 and recipe.train.accelerator == "cpu":
        raise FlexrlError("--pods: on CPU each pod is one process (train.devices=1)")
    options = KubernetesOptions(namespace=pods.namespace, storage_secret=pods.storage_secret)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())[:30].strip("-")
    job = f"ft-{slug}-{secrets.token_hex(3)}"
    recipe_file = f"jobs/{job}/recipe.yaml"
    mount = options.workspace_mount
    recipe.train.num_nodes = pods.count
    command = ["flexrl", "finetune", kind, "--config", f"{mount}/{recipe_file}", "--dataset",
               dataset, "--name", name, "--no-progress", "--workspace", mount]  # fmt: skip
    command += ["--init-from", init_from] if init_from else []
    command += ["--resume", resume] if resume else []
    manifests = ddp.build_ddp(
        job, command, pods.count, recipe.train.devices, options, Resources(), pods.image
    )
    if pods.dry_run:
        sys.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False))
        return
    client = KubeClient()  # before writing anything: no cluster, nothing recorded
    version = client.server_version()
    atomic_write_text(
        ws.root / recipe_file, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
    )
    service, job_manifest = manifests
    client.create_service(service)
    client.create_job(job_manifest)
    console.print(
        f"Job {pods.namespace}/{job}: {pods.count} pods in DDP on Kubernetes {version}; rank 0 "
        f"records run {name!r} (`flexrl runs show {name}`), `kubectl logs -n {pods.namespace} "
        f"job/{job}` follows it"
    )
