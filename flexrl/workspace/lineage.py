"""Lineage: the graph of runs and the artifacts they read and wrote, walked both ways.

Nodes are runs (`run:<id>`) and artifacts (keyed by content digest, or kind and ref when no
digest is known). A run's inputs point at it, it points at its outputs. A checkpoint written
by `train` and read by `collect` is one node because both record the same digest, so the walk
from a PPO run reaches the dataset it fed, the DT trained on that, and the DT's evaluation.

Dataset versions only append, so a later version holds every shard of an earlier one: a run
trained on `walk@v2` was made (in part) from `walk@v1`'s data. Each recorded version links to
the next recorded version of its dataset that the store confirms holds all its shards
(`walk@v1 -> walk@v2`, the latter labelled "holds all of walk@v1"), so `runs lineage walk@v1`
lists what was made from v2 beneath v2.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexrl.errors import FlexrlError
from flexrl.fileio import sha256_file
from flexrl.workspace.records import Artifact, ArtifactKind, RunRecord
from flexrl.workspace.runs import Workspace

DATASET_VERSION_RE = re.compile(r"^(?P<name>[^@]+)@v(?P<version>\d+)$")


@dataclass
class LineageNode:
    key: str
    kind: str  # "run" or an artifact kind
    label: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class LineageGraph:
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    parents: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_runs(cls, records: list[RunRecord]) -> LineageGraph:
        graph = cls()
        for record in records:
            run_key = graph._add_run(record)
            for artifact in record.inputs:
                graph._add_edge(graph._add_artifact(artifact), run_key)
            for artifact in record.outputs:
                graph._add_edge(run_key, graph._add_artifact(artifact))
        return graph

    def _add_run(self, record: RunRecord) -> str:
        key = f"run:{record.id}"
        self.nodes[key] = LineageNode(
            key,
            "run",
            f"run {record.id} ({record.kind}, {record.status.value})",
            {
                "id": record.id,
                "kind": record.kind,
                "name": record.name,
                "status": record.status.value,
            },
        )
        return key

    def _add_artifact(self, artifact: Artifact) -> str:
        key = artifact.key()
        if key not in self.nodes:
            if artifact.kind == ArtifactKind.RUN:
                label = f"run {artifact.ref} (not in this workspace)"
            else:
                short = f"  {artifact.digest[:19]}" if artifact.digest else ""
                label = f"{artifact.kind.value} {artifact.ref}{short}"
            self.nodes[key] = LineageNode(
                key, artifact.kind.value, label, artifact.model_dump(mode="json")
            )
        return key

    def _add_edge(self, parent: str, child: str) -> None:
        if child not in self.children.setdefault(parent, []):
            self.children[parent].append(child)
        if parent not in self.parents.setdefault(child, []):
            self.parents[child].append(parent)

    def walk(self, key: str, direction: str) -> list[tuple[str, str]]:
        """Edges reachable from `key` upstream (towards sources) or downstream, breadth first."""
        step = self.parents if direction == "upstream" else self.children
        edges, seen, queue = [], {key}, deque([key])
        while queue:
            node = queue.popleft()
            for other in step.get(node, []):
                edges.append((node, other))
                if other not in seen:
                    seen.add(other)
                    queue.append(other)
        return edges


ShardsOf = Callable[[str, str], frozenset[str] | None]


def build_graph(workspace: Workspace, dataset_shards: ShardsOf | None = None) -> LineageGraph:
    """The graph of every run; `dataset_shards(ref, digest)` gives a recorded dataset version's
    shard ids (None when the store no longer holds that version with that digest), by default
    read from the workspace's store."""
    graph = LineageGraph.from_runs(workspace.list_runs())
    link_contained_versions(graph, dataset_shards or _store_shards(workspace.root))
    return graph


def link_contained_versions(graph: LineageGraph, dataset_shards: ShardsOf) -> None:
    """Link each recorded dataset version to the next recorded version of the same dataset
    that holds all its shards (see the module docstring)."""
    versions: dict[str, list[tuple[int, LineageNode]]] = {}
    for node in list(graph.nodes.values()):
        match = DATASET_VERSION_RE.match(node.info.get("ref", ""))
        if node.kind == "dataset" and match and node.info.get("digest"):
            versions.setdefault(match["name"], []).append((int(match["version"]), node))
    for recorded in versions.values():
        recorded.sort(key=lambda vn: vn[0])
        for (_, old), (_, new) in itertools.pairwise(recorded):
            old_shards = dataset_shards(old.info["ref"], old.info["digest"])
            new_shards = dataset_shards(new.info["ref"], new.info["digest"])
            if old_shards is None or new_shards is None or not old_shards <= new_shards:
                continue  # gone from the store, replaced, or not an append: no claim
            graph._add_edge(old.key, new.key)
            new.info["contains"] = old.info["ref"]
            new.label = f"{new.label}  (holds all of {old.info['ref']})"


def _store_shards(root: Path) -> ShardsOf:
    def shards(ref: str, digest: str) -> frozenset[str] | None:
        # Imported here: the store (numpy, zarr) loads only when a graph is built.
        from flexrl.store.catalog import dataset_paths, read_manifest, resolve

        try:
            version = resolve(ref, root)
            if version.digest != digest:
                return None
            manifest, _ = read_manifest(dataset_paths(root, version.address), version.version)
        except FlexrlError:
            return None
        return frozenset(s.id for s in manifest.shards)

    return functools.cache(shards)


def resolve_target(
    graph: LineageGraph,
    workspace: Workspace,
    target: str,
    dataset_digest: Callable[[str], str | None] | None = None,
) -> str:
    """The graph node a user means: a run (id, prefix or name), a dataset reference
    (`name@v3`, `name@tag`, or `name` for its latest version) or a checkpoint/file path.

    `dataset_digest` maps a dataset reference to its version's digest (the store's resolve);
    the workspace does not import the store, so the caller passes it in.
    """
    if dataset_digest is not None:
        digest = dataset_digest(target)
        if digest is not None and digest in graph.nodes:
            return digest
    if "@" not in target:
        path = Path(target)
        if path.is_file():
            key = sha256_file(path)
            if key in graph.nodes:
                return key
            raise FlexrlError(f"{target}: no run in {workspace.root} read or wrote this file")
        try:
            return f"run:{workspace.resolve_run(target).id}"
        except FlexrlError:
            pass
    matches = [
        n for n in graph.nodes.values() if n.kind == "dataset" and _dataset_matches(n, target)
    ]
    if matches:
        return max(matches, key=lambda n: _dataset_version(n.info.get("ref", ""))).key
    raise FlexrlError(f"unknown run or dataset: {target!r} (see `flexrl runs ls`)")


def _dataset_matches(node: LineageNode, target: str) -> bool:
    ref = node.info.get("ref", "")
    return ref == target or ("@" not in target and ref.split("@")[0] == target)


def _dataset_version(ref: str) -> int:
    match = DATASET_VERSION_RE.fullmatch(ref)
    return int(match["version"]) if match else -1
