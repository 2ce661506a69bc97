"""Sweeps: a spec expands into trials; each trial is `flexrl sweep run-trial ID --index i`,
run by a local process pool or as one index of a Kubernetes Indexed Job."""

from flexrl.orchestrate.records import (
    SweepRecord,
    SweepStore,
    TrialDef,
    TrialState,
    TrialStateName,
)
from flexrl.orchestrate.spec import LoadedSpec, SweepSpec, Trial, expand, load_spec

__all__ = [
    "LoadedSpec",
    "SweepRecord",
    "SweepSpec",
    "SweepStore",
    "Trial",
    "TrialDef",
    "TrialState",
    "TrialStateName",
    "expand",
    "load_spec",
]
