"""Experiment tracking: runs, their provenance and metrics, and the lineage between them."""

from flexrl.workspace.lineage import LineageGraph, build_graph, resolve_target
from flexrl.workspace.records import Artifact, ArtifactKind, RunRecord, RunStatus
from flexrl.workspace.runs import Run, RunInterrupted, Workspace

__all__ = [
    "Artifact",
    "ArtifactKind",
    "LineageGraph",
    "Run",
    "RunInterrupted",
    "RunRecord",
    "RunStatus",
    "Workspace",
    "build_graph",
    "resolve_target",
]
