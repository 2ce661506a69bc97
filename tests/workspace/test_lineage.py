"""Lineage walks upstream and downstream across runs joined by artifact digests."""

from __future__ import annotations

import json

import pytest

from flexrl.errors import FlexrlError
from flexrl.workspace import Artifact, ArtifactKind, Workspace, build_graph, resolve_target


@pytest.fixture
def pipeline(workspace):
    """train -> checkpoint -> collect -> walk@v1 -> finetune dt -> checkpoint -> eval, + noise."""
    ws = Workspace(workspace)
    with ws.start_run("train", "ppo") as train:
        ppo_ckpt = train.artifacts_dir / "policy.pt"
        ppo_ckpt.write_bytes(b"ppo weights")
        ckpt = train.add_artifact(ppo_ckpt, ArtifactKind.CHECKPOINT, role="final")
    with ws.start_run("collect", "collect") as collect:
        collect.add_input(ckpt.model_copy(update={"role": "policy"}))
        collect.add_output(Artifact(kind=ArtifactKind.DATASET, ref="walk@v1", digest="sha256:d1"))
    with ws.start_run("collect", "collect-more") as more:
        more.add_input(ckpt)
        more.add_output(Artifact(kind=ArtifactKind.DATASET, ref="walk@v2", digest="sha256:d2"))
    with ws.start_run("finetune-dt", "dt") as dt:
        dt.add_input(Artifact(kind=ArtifactKind.DATASET, ref="walk@v1", digest="sha256:d1"))
        dt_ckpt = dt.artifacts_dir / "dt.pt"
        dt_ckpt.write_bytes(b"dt weights")
        dt.add_artifact(dt_ckpt, ArtifactKind.CHECKPOINT)
    with ws.start_run("eval", "eval-dt") as ev:
        ev.add_input(Artifact(kind=ArtifactKind.RUN, ref=dt.id, role="source"))
        ev.add_input(ws.load_run(dt.id).outputs[0])
    with ws.start_run("train", "unrelated"):
        pass
    return ws, {
        "train": train,
        "collect": collect,
        "more": more,
        "dt": dt,
        "eval": ev,
        "dt_ckpt": dt_ckpt,
    }


def runs_reached(graph, key, direction):
    return {b for _, b in graph.walk(key, direction) if b.startswith("run:")}


def test_walks_from_the_ppo_run_to_the_dt_evaluation_and_back(pipeline):
    ws, runs = pipeline
    graph = build_graph(ws)
    ids = {name: f"run:{run.id}" for name, run in runs.items() if name != "dt_ckpt"}
    down = runs_reached(graph, ids["train"], "downstream")
    assert down == {ids["collect"], ids["more"], ids["dt"], ids["eval"]}
    up = runs_reached(graph, ids["eval"], "upstream")
    assert up == {ids["dt"], ids["collect"], ids["train"]}  # not collect-more: v2 was not used
    assert runs_reached(graph, ids["collect"], "upstream") == {ids["train"]}


def test_targets_resolve_runs_datasets_and_files(pipeline):
    ws, runs = pipeline
    graph = build_graph(ws)
    assert resolve_target(graph, ws, runs["dt"].id) == f"run:{runs['dt'].id}"
    assert resolve_target(graph, ws, "dt") == f"run:{runs['dt'].id}"  # by run name
    assert resolve_target(graph, ws, "walk@v1") == "sha256:d1"
    assert resolve_target(graph, ws, "walk") == "sha256:d2"  # latest recorded version
    key = resolve_target(graph, ws, str(runs["dt_ckpt"]))
    assert graph.nodes[key].kind == "checkpoint"
    with pytest.raises(FlexrlError, match="unknown run or dataset"):
        resolve_target(graph, ws, "nothing@v9")


def test_cli_lineage_json_and_tree(pipeline, cli):
    ws, runs = pipeline
    result = cli("runs", "lineage", "walk@v1", "--json", "--workspace", str(ws.root))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["target"] == "sha256:d1"
    upstream_runs = {data["nodes"][k]["id"] for k in data["upstream"] if k.startswith("run:")}
    downstream_runs = {data["nodes"][k]["id"] for k in data["downstream"] if k.startswith("run:")}
    assert {"from": "sha256:d1", "to": f"run:{runs['dt'].id}"} in data["edges"]
    assert {"from": f"run:{runs['collect'].id}", "to": "sha256:d1"} in data["edges"]
    assert upstream_runs == {runs["collect"].id, runs["train"].id}
    assert downstream_runs == {runs["dt"].id, runs["eval"].id}

    tree = cli("runs", "lineage", runs["train"].id, "--workspace", str(ws.root))
    assert tree.returncode == 0, tree.stderr
    for name in ("collect", "more", "dt", "eval"):
        assert runs[name].id in tree.stdout
    assert "walk@v1" in tree.stdout and "nothing recorded" in tree.stdout  # no upstream for train


def test_dataset_references_resolve_through_the_store(workspace, cli):
    """`name` (latest) and `name@tag` reach the run that wrote the version, via its digest."""
    import numpy as np

    from flexrl.store import ShardWriter, make_episode, resolve, set_tag

    ws = Workspace(workspace)
    rng = np.random.default_rng(0)
    for version in (1, 2):
        with ws.start_run("collect", f"collect-{version}") as run:
            with ShardWriter("walk", workspace, durable=False) as writer:
                writer.add(
                    make_episode(
                        observations=rng.normal(size=(6, 3)).astype(np.float32),
                        actions=rng.normal(size=(5, 2)).astype(np.float32),
                        rewards=np.ones(5, np.float32),
                        terminations=np.arange(5) == 4,
                        truncations=np.zeros(5, bool),
                    )
                )
            pinned = resolve(f"walk@v{version}", workspace)
            run.add_output(
                Artifact(kind=ArtifactKind.DATASET, ref=pinned.ref, digest=pinned.digest)
            )
    set_tag("walk@v1", "first", workspace)

    # v2 holds v1's shards, so v1's producer is upstream of v2 too (after v2's own).
    for target, producers in (("walk", ["collect-2", "collect-1"]), ("walk@first", ["collect-1"])):
        result = cli("runs", "lineage", target, "--json", "--workspace", str(workspace))
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["target"] == resolve(target, workspace).digest
        runs = [data["nodes"][k]["name"] for k in data["upstream"] if k.startswith("run:")]
        assert runs == producers


def _commit_version(ws: Workspace, name: str, rng) -> Artifact:
    """A real one-episode version of dataset `name`, recorded as a collect run's output."""
    import numpy as np

    from flexrl.store import ShardWriter, make_episode, resolve

    with ws.start_run("collect", f"collect-{name}") as run:
        with ShardWriter(name, ws.root, durable=False) as writer:
            writer.add(
                make_episode(
                    observations=rng.normal(size=(6, 3)).astype(np.float32),
                    actions=rng.normal(size=(5, 2)).astype(np.float32),
                    rewards=np.ones(5, np.float32),
                    terminations=np.arange(5) == 4,
                    truncations=np.zeros(5, bool),
                )
            )
        version = resolve(name, ws.root)
        return run.add_output(
            Artifact(kind=ArtifactKind.DATASET, ref=version.ref, digest=version.digest)
        )


def test_runs_made_from_a_later_version_are_made_from_the_earlier_one(workspace, cli):
    import shutil

    import numpy as np

    ws = Workspace(workspace)
    rng = np.random.default_rng(0)
    v1, v2 = _commit_version(ws, "walk", rng), _commit_version(ws, "walk", rng)
    with ws.start_run("finetune-bc", "bc-on-v2") as on_v2:
        on_v2.add_input(v2.model_copy(update={"role": "data"}))
    with ws.start_run("finetune-bc", "bc-on-v1") as on_v1:
        on_v1.add_input(v1.model_copy(update={"role": "data"}))
    # A dataset deleted and made again under the same name: its v1 shares nothing with the
    # old one, so a run on the new v2 was not made from the old v1.
    old = _commit_version(ws, "other", rng)
    shutil.rmtree(workspace / "datasets" / "other")
    _commit_version(ws, "other", rng)
    new_v2 = _commit_version(ws, "other", rng)
    with ws.start_run("finetune-bc", "bc-on-new") as on_new:
        on_new.add_input(new_v2.model_copy(update={"role": "data"}))

    def lineage(target: str) -> dict:
        result = cli("runs", "lineage", target, "--json", "--workspace", str(workspace))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    data = lineage("walk@v1")
    downstream = {data["nodes"][k]["name"] for k in data["downstream"] if k.startswith("run:")}
    assert downstream == {"bc-on-v1", "bc-on-v2"}
    assert {"from": v1.digest, "to": v2.digest} in data["edges"]
    assert data["nodes"][v2.digest]["contains"] == "walk@v1"  # the runs below it: via v2
    # Upstream of v2: its own producer, and v1's (v2 holds v1's shards).
    data = lineage("walk@v2")
    upstream = [data["nodes"][k]["name"] for k in data["upstream"] if k.startswith("run:")]
    assert upstream == ["collect-walk", "collect-walk"] and len(set(data["upstream"])) == 3
    tree = cli("runs", "lineage", "walk@v1", "--workspace", str(workspace)).stdout
    assert "walk@v2" in tree and "holds all of walk@v1" in tree and on_v2.id in tree

    graph = build_graph(ws)
    assert graph.children.get(old.digest, []) == []  # replaced: no claim on the new versions
    assert on_new.id not in {b for _, b in graph.walk(old.digest, "downstream")}
