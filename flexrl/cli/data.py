"""`flexrl data ls | info | log | tag | verify | gc | export | import | relabel | report`: the
store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from flexrl.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    print_fields,
    print_json,
)
from flexrl.errors import FlexrlError
from flexrl.store import catalog, maintenance
from flexrl.store.format import Lineage, check_dataset, parse_ref
from flexrl.store.reader import Dataset, DatasetStats, open_dataset
from flexrl.workspace import Artifact, ArtifactKind, Workspace
from flexrl.workspace.provenance import code_version

app = typer.Typer(
    help="Versioned trajectory datasets: list, inspect, tag, verify, clean up, export, import.",
    no_args_is_help=True,
)


def dataset_artifact(version: catalog.ResolvedVersion, role: str | None = None) -> Artifact:
    """A dataset version as lineage records it: `name@vN` and its manifest digest."""
    return Artifact(kind=ArtifactKind.DATASET, ref=version.ref, digest=version.digest, role=role)


RefArgument = Annotated[
    str,
    typer.Argument(
        help="Dataset reference: NAME (latest version), NAME@v3 or NAME@TAG; NAME may be a URI "
        "(s3://bucket/prefix/NAME, gs://, az://, file://)."
    ),
]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def policy_label(policy: str | None) -> str:
    """A producing policy as episodes record it: 'random', a short checkpoint digest, or '-'."""
    if policy is None:
        return "-"  # not recorded (imported data, or written without one)
    return policy if policy == "random" else policy[:19]


def _lineage_text(lineage: dict) -> str:
    parts = [f"{k}={v}" for k, v in lineage.items() if v]
    return ", ".join(parts) or "-"


@app.command("ls")
def ls(
    location: Annotated[
        str | None,
        typer.Argument(
            help="An object store prefix to list instead of the workspace "
            "(s3://bucket/prefix; credentials from AWS_* variables)."
        ),
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """List datasets with their latest version, episodes, steps and size on disk."""
    rows = []
    for name in catalog.list_datasets(workspace, location):
        paths = catalog.dataset_paths(workspace, name)
        versions = paths.list_versions()
        row: dict = {"name": name, "versions": len(versions), "latest": None}
        if versions:
            try:
                manifest, digest = catalog.read_manifest(paths, versions[-1])
                row.update(
                    latest=f"{name}@v{manifest.version}",
                    digest=digest,
                    episodes=manifest.episodes,
                    steps=manifest.steps,
                    bytes=manifest.nbytes,
                    created_at=manifest.created_at,
                    tags=sorted(catalog.list_tags(paths)),
                )
            except FlexrlError as e:
                row["error"] = str(e)
        rows.append(row)
    if json:
        print_json(rows)
        return
    if not rows:
        console.print(f"no datasets in {location or workspace}")
        return
    table = Table(box=None, header_style="bold")
    for column in ("name", "latest", "episodes", "steps", "size", "tags", "updated (UTC)"):
        table.add_column(
            column, justify="right" if column in ("episodes", "steps", "size") else "left"
        )
    for r in rows:
        if r.get("error"):
            table.add_row(r["name"], f"[red]{r['error']}[/]", "", "", "", "", "")
        elif r["latest"] is None:
            table.add_row(r["name"], "[dim]no versions[/]", "", "", "", "", "")
        else:
            table.add_row(
                r["name"],
                r["latest"],
                str(r["episodes"]),
                str(r["steps"]),
                _size(r["bytes"]),
                ", ".join(r["tags"]),
                r["created_at"][:19].replace("T", " "),
            )
    console.print(table)


@app.command("info")
def info(
    ref: RefArgument, json: JsonOption = False, workspace: WorkspaceOption = DEFAULT_WORKSPACE
) -> None:
    """Episodes, steps, size on disk, return statistics, per-task and per-policy breakdowns,
    shards, lineage."""
    ds = open_dataset(ref, workspace)
    stats = ds.stats()
    manifest = ds.manifest
    if json:
        print_json(
            {
                "ref": ds.ref,
                "digest": ds.digest,
                "created_at": manifest.created_at,
                "schema": manifest.schema.to_json(),
                "stats": stats.to_json(),
                "lineage": manifest.lineage.to_json(),
                "shards": [
                    {k: v for k, v in s.to_json().items() if k not in ("files", "arrays")}
                    for s in manifest.shards
                ],
            }
        )
        return
    _print_info(ds, stats)


def _print_info(ds: Dataset, stats: DatasetStats) -> None:
    manifest = ds.manifest
    schema = manifest.schema
    r, n = stats.returns, stats.lengths
    rows = [
        (
            "version",
            f"{ds.ref}  {ds.digest[:19]}  ({manifest.created_at[:19].replace('T', ' ')} UTC)",
        ),
        (
            "episodes",
            f"{stats.episodes} ({stats.terminated} terminated, "
            f"{stats.episodes - stats.terminated} truncated or cut)",
        ),
        (
            "steps",
            f"{stats.steps}  (length mean {n.mean:.1f}, min {n.min:.0f}, "
            f"median {n.p50:.0f}, max {n.max:.0f})",
        ),
        ("size on disk", f"{_size(stats.nbytes)} in {len(manifest.shards)} shards"),
        (
            "returns",
            f"mean {r.mean:.3f} ± {r.std:.3f}, min {r.min:.3f}, median {r.p50:.3f}, "
            f"max {r.max:.3f}",
        ),
        ("observations", schema.observations.describe()),
        ("actions", schema.actions.describe()),
        ("rewards", schema.rewards.describe()),
    ]
    if schema.goals:
        rows.append(("goals", schema.goals.describe()))
    if schema.infos:
        rows.append(("infos", ", ".join(f"{k} {v.describe()}" for k, v in schema.infos)))
    rows.append(("lineage", _lineage_text(manifest.lineage.to_json())))
    print_fields(rows)
    tasks = Table(title="per task", box=None, header_style="bold", title_justify="left")
    for column in ("task", "episodes", "steps", "return mean", "return std"):
        tasks.add_column(column, justify="left" if column == "task" else "right")
    for t in stats.per_task:
        tasks.add_row(
            t.task or "-",
            str(t.episodes),
            str(t.steps),
            f"{t.returns.mean:.3f}",
            f"{t.returns.std:.3f}",
        )
    console.print(tasks)
    policies = Table(title="per policy", box=None, header_style="bold", title_justify="left")
    for column in ("policy", "episodes", "steps", "return mean", "return std"):
        policies.add_column(column, justify="left" if column == "policy" else "right")
    for p in stats.per_policy:
        policies.add_row(
            policy_label(p.policy),
            str(p.episodes),
            str(p.steps),
            f"{p.returns.mean:.3f}",
            f"{p.returns.std:.3f}",
        )
    console.print(policies)
    shards = Table(title="shards", box=None, header_style="bold", title_justify="left")
    for column in ("shard", "episodes", "steps", "size", "lineage"):
        shards.add_column(
            column, justify="right" if column in ("episodes", "steps", "size") else "left"
        )
    for s in manifest.shards:
        shards.add_row(
            s.id, str(s.episodes), str(s.steps), _size(s.nbytes), _lineage_text(s.lineage.to_json())
        )
    console.print(shards)


@app.command("log")
def log(
    name: Annotated[str, typer.Argument(help="Dataset name or URI (s3://bucket/prefix/NAME).")],
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Every version of a dataset, oldest first: what each commit added and who made it."""
    paths = catalog.dataset_paths(workspace, check_dataset(name))
    if not paths.exists():
        raise FlexrlError(f"unknown dataset {name!r} (see `flexrl data ls`)")
    tags_by_version: dict[int, list[str]] = {}
    for tag, version in catalog.list_tags(paths).items():
        tags_by_version.setdefault(version, []).append(tag)
    rows = []
    for version in paths.list_versions():
        try:
            m, digest = catalog.read_manifest_file(paths, version)  # each file once: O(versions)
        except FlexrlError as e:
            rows.append({"version": version, "error": str(e)})
            continue
        added = [s for s in m.own if s.id in set(m.added)]
        rows.append(
            {
                "version": version,
                "ref": f"{name}@v{version}",
                "digest": digest,
                "created_at": m.created_at,
                "episodes": m.episodes,
                "steps": m.steps,
                "added_episodes": sum(s.episodes for s in added),
                "added_shards": len(added),
                "lineage": m.lineage.to_json(),
                "message": m.message,
                "tags": sorted(tags_by_version.get(version, [])),
            }
        )
    if json:
        print_json(rows)
        return
    table = Table(box=None, header_style="bold")
    for column in (
        "version",
        "created (UTC)",
        "+episodes",
        "episodes",
        "steps",
        "digest",
        "tags",
        "lineage",
    ):
        table.add_column(
            column, justify="right" if "episodes" in column or column == "steps" else "left"
        )
    for r in rows:
        if "error" in r:
            table.add_row(f"v{r['version']}", f"[red]{r['error']}[/]", "", "", "", "", "", "")
            continue
        table.add_row(
            f"v{r['version']}",
            r["created_at"][:19].replace("T", " "),
            f"+{r['added_episodes']}",
            str(r["episodes"]),
            str(r["steps"]),
            r["digest"][:19],
            ", ".join(r["tags"]),
            _lineage_text(r["lineage"]),
        )
    console.print(table)


@app.command("tag")
def tag(
    ref: RefArgument,
    tag_name: Annotated[
        str, typer.Argument(metavar="TAG", help="Tag name (like a dataset name; not v<N>).")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Move the tag if it points elsewhere.")
    ] = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Name a version: afterwards NAME@TAG reads that version."""
    target = catalog.set_tag(ref, tag_name, workspace, force=force)
    console.print(f"{target.address}@{tag_name} -> {target.ref}  {target.digest[:19]}")


@app.command("verify")
def verify(
    ref: RefArgument, json: JsonOption = False, workspace: WorkspaceOption = DEFAULT_WORKSPACE
) -> None:
    """Recompute every content digest of a version; name any corrupted shard and array.

    Exits 1 when something is corrupted.
    """
    with Progress(
        TextColumn("verify {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=json,
    ) as bar:
        task = bar.add_task(ref, total=None)
        report = maintenance.verify(
            ref,
            workspace,
            progress=lambda n: bar.advance(task, n),
            total=lambda n: bar.update(task, total=n),
        )
    if json:
        print_json(report.to_json())
    elif report.ok:
        console.print(
            f"[green]ok[/] {report.ref}: {report.shards} shards, {report.files} files, "
            f"{_size(report.nbytes)} match their digests"
        )
    else:
        for problem in report.problems:
            console.print(f"[red]corrupt[/] {report.ref}: {problem}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("gc")
def gc(
    name: Annotated[str, typer.Argument(help="Dataset name or URI (s3://bucket/prefix/NAME).")],
    apply: Annotated[
        bool, typer.Option("--apply", help="Delete the orphans (default: only list them).")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(
            help="Seconds a writer's lease may lag behind this clock after its expiry (clock "
            "skew between hosts), and the age at which an unleased shard from another host "
            "counts as abandoned."
        ),
    ] = maintenance.DEFAULT_GRACE_S,
    json: JsonOption = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """List shards no version references (left by crashed writers); delete them with --apply.

    Shards named by a live writer's lease (on any host) are never deleted.
    """
    orphans = maintenance.gc(check_dataset(name), workspace, apply=apply, grace_s=grace)
    if json:
        print_json([o.to_json() for o in orphans])
        return
    if not orphans:
        console.print(f"{name}: no orphaned shards")
        return
    table = Table(box=None, header_style="bold")
    for column in ("path", "kind", "size", "age", "status"):
        table.add_column(column)
    for o in orphans:
        status = "[green]deleted[/]" if o.deleted else o.status
        table.add_row(str(o.path), o.kind, _size(o.nbytes), f"{o.age_s:.0f}s", status)
    console.print(table)
    deletable = [o for o in orphans if o.status == "deletable"]
    total = _size(sum(o.nbytes for o in deletable))
    if apply:
        console.print(f"deleted {sum(o.deleted for o in orphans)} orphans ({total})")
    elif deletable:
        console.print(
            f"{len(deletable)} orphans ({total}) can go: rerun with --apply to delete them"
        )


@app.command("export")
def export(
    ref: RefArgument,
    format_: Annotated[
        str, typer.Option("--format", help="Target format (only: minari).")
    ] = "minari",
    out: Annotated[
        Path | None,
        typer.Option(help="Minari datasets root to write into (the dataset is OUT/<id>/)."),
    ] = None,
    dataset_id: Annotated[
        str | None,
        typer.Option(
            help="Minari dataset id (default NAME-vN); without --out it goes to "
            "Minari's own datasets directory ($MINARI_DATASETS_PATH or ~/.minari)."
        ),
    ] = None,
    backend: Annotated[str, typer.Option(help="Minari storage backend: hdf5 or arrow.")] = "hdf5",
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Export a version as a Minari dataset that `minari.load_dataset` loads."""
    if format_ != "minari":
        raise FlexrlError(f"unknown export format {format_!r}: only 'minari' is supported")
    if out is None and dataset_id is None:
        raise FlexrlError("give --out DIR or --dataset-id ID to say where the export goes")
    from flexrl.collection import dataset_env
    from flexrl.store.minari_io import export_minari

    source = catalog.resolve(ref, workspace)  # bad references fail before minari is imported
    env = dataset_env(workspace, source.ref)
    with Workspace(workspace).start_run("export", f"export-{source.name}") as run:
        run.add_input(dataset_artifact(source, role="source"))
        with console.status(f"exporting {source.ref} to Minari ({backend})"):
            exported_id, path = export_minari(
                source.ref, workspace, out=out, dataset_id=dataset_id, data_format=backend, env=env
            )
        run.add_output(
            Artifact(kind=ArtifactKind.FILE, ref=str(Path(path).resolve()), role="minari")
        )
    console.print(f"exported {source.ref} as Minari dataset {exported_id!r} at {path}")
    if env is None:
        console.print(
            f"note: no flexrl run here says which env {source.ref} came from (imported or "
            "written through the API): the export has no env spec, so recover_environment() "
            "cannot rebuild it, and its float spaces are unbounded"
        )


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A Minari dataset directory (holding data/).")],
    name: Annotated[str, typer.Option("--name", help="Name of the new flexrl dataset.")],
    info: Annotated[
        list[str] | None,
        typer.Option(
            "--info", help="Import only this info key (repeatable; default: all numeric)."
        ),
    ] = None,
    allow_nonfinite: Annotated[
        bool,
        typer.Option(
            "--allow-nonfinite", help="Store NaN or inf observations, actions and rewards."
        ),
    ] = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Import a dataset Minari wrote (HDF5 or Arrow backend) as a new flexrl dataset."""
    check_dataset(name)
    from flexrl.store.minari_io import import_minari

    if not path.exists():
        raise FlexrlError(f"{path}: no such Minari dataset directory")
    source = path.resolve()
    with Workspace(workspace).start_run("import", f"import-{parse_ref(name).name}") as run:
        run.add_input(Artifact(kind=ArtifactKind.FILE, ref=str(source), role="minari"))
        lineage = Lineage(producer_run=run.id, code_version=code_version()[0].git_commit)
        with console.status(f"importing {path} as {name}"):
            manifest = import_minari(
                path,
                name,
                workspace,
                info_keys=info,
                lineage=lineage,
                allow_nonfinite=allow_nonfinite,
            )
        run.add_output(dataset_artifact(catalog.resolve(f"{name}@v{manifest.version}", workspace)))
    console.print(
        f"imported {manifest.episodes} episodes, {manifest.steps} steps "
        f"as {name}@v{manifest.version}"
    )


@app.command("relabel")
def relabel(
    ref: RefArgument,
    name: Annotated[str, typer.Option("--name", help="The dataset to write (a new version).")],
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Copy a version into dataset NAME with each episode's instruction said from its goal
    commands (hindsight: "walk forward at 0.62 m/s, then stop"), for language-conditioned
    learning on data collected without instructions."""
    check_dataset(name)
    from flexrl.language.relabel import check_relabel
    from flexrl.language.relabel import relabel as relabel_dataset

    source = catalog.resolve(ref, workspace)  # bad input fails before any run is recorded
    dataset = open_dataset(source.ref, workspace)
    check_relabel(dataset, name)
    with Workspace(workspace).start_run("relabel", f"relabel-{parse_ref(name).name}") as run:
        run.add_input(dataset_artifact(source, role="source"))
        lineage = Lineage(producer_run=run.id, code_version=code_version()[0].git_commit)
        with console.status(f"relabelling {source.ref} into {name}"):
            manifest = relabel_dataset(dataset, name, workspace, lineage)
        run.add_output(dataset_artifact(catalog.resolve(f"{name}@v{manifest.version}", workspace)))
    console.print(
        f"{source.ref} -> {name}@v{manifest.version}: {manifest.episodes} episodes, each told "
        "what its commands asked"
    )


@app.command("report")
def report(
    ref: RefArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    previous: Annotated[
        str | None,
        typer.Option(help="Version to compare with (default: the version before REF's)."),
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Write one self-contained HTML report of a version: returns, lengths, tasks, coverage,
    command tracking, actions per joint, and what changed since the previous version."""
    from flexrl.analysis import dataset_report_html  # matplotlib only when a report is asked for

    source = catalog.resolve(ref, workspace)  # a bad reference fails before any run is recorded
    if previous is None and source.version > 1:  # default: what the latest commit added
        previous = f"{source.name}@v{source.version - 1}"
    baseline = catalog.resolve(previous, workspace) if previous else None
    if out.is_dir():
        raise FlexrlError(f"{out} is a directory: give --out a file name such as report.html")
    if not out.parent.is_dir():
        raise FlexrlError(f"{out.parent}: no such directory for --out")
    with Workspace(workspace).start_run("report", f"report-{source.name}") as run:
        run.add_input(dataset_artifact(source, role="source"))
        if baseline is not None:
            run.add_input(dataset_artifact(baseline, role="previous"))
        with console.status(f"analysing {source.ref}"):
            page = dataset_report_html(
                source.ref, workspace, previous=baseline.ref if baseline else None
            )
        # Written beside the target, then renamed: an interrupted report leaves no torn file.
        tmp = out.with_name(f".{out.name}.{run.id}.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)
        run.add_artifact(out, ArtifactKind.FILE, role="report")
    console.print(f"wrote {out} ({_size(out.stat().st_size)}) for {source.ref} · run {run.id}")
